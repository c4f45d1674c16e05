"""Triton faults with a worker running: stopped or paused, every query is still answered within its
deadline by the fallback; once Triton is back, ranking resumes without restarting the worker."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from stream.records import Query
from stream.settings import Settings
from tests.support.stack import read_json_topic, wait_for
from workers.replay import plan, publish_items, publish_stream
from workers.stack import triton
from workers.supervisor import WorkerProcess, metric_value

# The worker's deadline plus the time to batch, gather candidates and produce on a loaded 2-core box.
SLACK_MS = 400.0


def _queries(prefix: str, users: list[str], n: int) -> list[Query]:
    return [
        Query(request_id=f"{prefix}-{i}", user_id=users[i % len(users)], text="comedy", ts=time.time(), k=10)
        for i in range(n)
    ]


def _answers(settings: Settings, prefix: str) -> list[dict]:
    return [r for r in read_json_topic(settings, "recommendations") if r["request_id"].startswith(prefix)]


def _ask(settings: Settings, prefix: str, users: list[str], n: int) -> list[dict]:
    queries = _queries(prefix, users, n)
    for query in queries:  # paced: one at a time, as users would
        asyncio.run(publish_stream(settings, [query.model_copy(update={"ts": time.time()})]))
        time.sleep(0.05)
    wait_for(
        lambda: len(_answers(settings, prefix)) >= n, timeout_s=90, interval_s=1, what=f"{prefix} answers"
    )
    answers = _answers(settings, prefix)
    assert sorted(a["request_id"] for a in answers) == sorted(q.request_id for q in queries)
    return answers


def test_fallback_when_triton_stops_or_pauses_and_ranking_resumes(
    private_triton: Settings,
    env: dict[str, str],
    isolated: Settings,
    tmp_path: Path,
    worker_factory: list[WorkerProcess],
) -> None:
    deadline_ms = 1000.0  # generous: other suites may load the 2 cores; the bound below still holds it
    env.update(
        {
            "STREAMREC_TRITON_GRPC_PORT": str(private_triton.triton_grpc_port),
            "STREAMREC_TRITON_HTTP_PORT": str(private_triton.triton_http_port),
            "STREAMREC_TRITON_METRICS_PORT": str(private_triton.triton_metrics_port),
            "STREAMREC_RANKER_DEADLINE_MS": str(deadline_ms),
            "STREAMREC_BREAKER_OPEN_S": "2",
        }
    )
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    worker_factory.append(worker)
    worker.wait_ready()
    replay = plan(400, 0, seed=4)
    asyncio.run(publish_items(isolated, replay.items))
    worker.wait_ready(timeout_s=300, catalog_items=len(replay.items), vectors=True, primed=True)
    asyncio.run(publish_stream(isolated, replay.stream))
    users = sorted({m.user_id for m in replay.stream})[:5]

    healthy = _ask(isolated, "up", users, 10)
    causes = [line for line in worker.metrics().splitlines() if line.startswith("streamrec_fallbacks_total")]
    assert not any(a["fallback"] for a in healthy), f"Triton up: the ranker answers; fallbacks: {causes}"
    assert {a["model"]["name"] for a in healthy} == {"ranker"}

    # Paused (SIGSTOP): calls hang, so only the deadline saves the request.
    pid = triton.process(private_triton).pid()
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        paused = _ask(isolated, "paused", users, 10)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert all(a["fallback"] for a in paused)
    assert all(len(a["items"]) == 10 for a in paused)
    assert max(a["latency_ms"] for a in paused) < deadline_ms + SLACK_MS

    wait_for(
        lambda: not any(a["fallback"] for a in _ask(isolated, f"resume{time.time_ns()}", users, 3)),
        timeout_s=60,
        interval_s=2,
        what="ranking resumes after SIGCONT",
    )

    # Stopped: connection refused; the breaker opens and the fallback answers at once.
    triton.stop(private_triton)
    stopped = _ask(isolated, "down", users, 10)
    assert all(a["fallback"] for a in stopped)
    assert max(a["latency_ms"] for a in stopped) < deadline_ms + SLACK_MS
    assert metric_value(worker.metrics(), "streamrec_fallbacks_total") >= 20

    triton.start(private_triton)
    wait_for(
        lambda: not any(a["fallback"] for a in _ask(isolated, f"back{time.time_ns()}", users, 3)),
        timeout_s=60,
        interval_s=2,
        what="ranking resumes after restart",
    )
    assert worker.alive(), "the worker was never restarted"
