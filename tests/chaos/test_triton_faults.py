"""Triton faults under a running replay, on a Triton of the test's own: kill -9 and restart, then
SIGSTOP for longer than the deadline and SIGCONT. Every query is answered (by the fallback while
Triton is away, within the deadline) and ranking resumes within 5 s of Triton's return, without
restarting the worker."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from stream.settings import Settings
from tests.chaos.accounting import Accounting, Prober, account, answers, one_user_per_partition
from tests.chaos.scenario import BackgroundReplay, Scale, publish_catalog, slice_plan, start_worker
from workers.replay import ReplayPlan
from workers.stack import triton
from workers.supervisor import WorkerProcess, metric_value

DEADLINE_MS = 1000.0  # generous: other suites may load the 2 cores; the latency bound below still holds it
# The deadline plus batching, candidate gathering and producing on a loaded 2-core box. Measured
# over the deadline: up to 221 ms in 7 local runs (old and new code alike), 647 ms once in a
# fresh-clone CI run. Well under PAUSE_S: an answer that waited out the pause would take 4 s.
SLACK_MS = 1000.0
PAUSE_S = 4.0  # SIGSTOP for four deadlines: calls in flight time out, the breaker opens
RANKING_RESUMES_S = 5.0


def _ranked(answer: dict[str, Any]) -> bool:
    return not answer["fallback"]


def _segment(replay: ReplayPlan, part: int) -> ReplayPlan:
    half = len(replay.stream) // 2
    return ReplayPlan(items=replay.items, stream=replay.stream[:half] if part == 0 else replay.stream[half:])


def test_triton_kill_9_and_sigstop(
    private_triton: Settings,
    env: dict[str, str],
    isolated: Settings,
    tmp_path: Path,
    worker_factory: list[WorkerProcess],
    scale: Scale,
) -> None:
    env.update(
        {
            "STREAMREC_TRITON_GRPC_PORT": str(private_triton.triton_grpc_port),
            "STREAMREC_TRITON_HTTP_PORT": str(private_triton.triton_http_port),
            "STREAMREC_TRITON_METRICS_PORT": str(private_triton.triton_metrics_port),
            "STREAMREC_RANKER_DEADLINE_MS": str(DEADLINE_MS),
            "STREAMREC_BREAKER_OPEN_S": "2",
        }
    )
    worker = start_worker(env, tmp_path, worker_factory)
    full = slice_plan(scale.events, scale.queries, seed=4)
    publish_catalog(isolated, full)
    worker.wait_ready(timeout_s=240, catalog_items=len(full.items), vectors=True, primed=True)
    probe_users = one_user_per_partition({m.user_id for m in full.stream}, isolated.topic_partitions)
    items = {i.item_id: i for i in full.items}

    # kill -9: connections refused until the restarted server is ready.
    replay = BackgroundReplay(isolated, _segment(full, 0), scale.rate).start()
    replay.wait_sent(0.3)
    os.killpg(_pid(private_triton), signal.SIGKILL)
    triton.stop(private_triton)  # reaps the pid file of the dead server
    replay.join()
    triton.start(private_triton)
    back = time.time()
    prober = Prober(isolated, probe_users, "probe-kill").start()
    recovery_s = prober.wait_recovered(back, timeout_s=60, accept=_ranked)
    probes = prober.stop()
    killed = account(
        "Triton kill -9, restarted",
        isolated,
        replay.query_ids | {q.request_id for q in probes},
        items,
        recovery_s,
        "Triton ready → every partition ranked by Triton again",
    )
    _assert_no_loss(killed)

    # SIGSTOP: calls hang, so only the deadline saves a request.
    replay = BackgroundReplay(isolated, _segment(full, 1), scale.rate).start()
    replay.wait_sent(0.3)
    pid = _pid(private_triton)
    paused_at = time.time()
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(PAUSE_S)
    finally:
        os.kill(pid, signal.SIGCONT)
    resumed = time.time()
    prober = Prober(isolated, probe_users, "probe-stop").start()
    recovery_s = prober.wait_recovered(resumed, timeout_s=60, accept=_ranked)
    probes = prober.stop()
    replay.join()
    during = [
        a
        for a in answers(isolated)
        if a["request_id"] in replay.query_ids and paused_at + 0.5 < a["produced_at"] < resumed
    ]
    paused = account(
        f"Triton SIGSTOP {PAUSE_S:.0f} s (deadline {DEADLINE_MS / 1000:.0f} s), SIGCONT",
        isolated,
        replay.query_ids | {q.request_id for q in probes},
        items,
        recovery_s,
        "SIGCONT → every partition ranked by Triton again",
        answered_while_paused=len(during),
        max_latency_ms_while_paused=max((a["latency_ms"] for a in during), default=None),
    )
    _assert_no_loss(paused)
    assert during, "queries were answered while Triton was paused"
    assert all(a["fallback"] for a in during), "a paused Triton cannot have ranked them"
    assert max(a["latency_ms"] for a in during) < DEADLINE_MS + SLACK_MS, paused
    assert metric_value(worker.metrics(), "streamrec_fallbacks_total") >= len(during)
    assert worker.alive(), "the worker was never restarted"
    assert worker.started[:1] == worker.started


def _pid(settings: Settings) -> int:
    pid = triton.process(settings).pid()
    assert pid is not None, "Triton is running"
    return pid


def _assert_no_loss(result: Accounting) -> None:
    # docs/guarantees.md: without a worker crash, exactly one recommendation per request.
    assert result.missing == 0, result.to_json()
    assert result.duplicates == 0, result.to_json()
    assert result.divergent == 0, result.to_json()
    assert result.divergent_items == 0, result.to_json()
    assert result.fallback > 0, f"the fault was felt: {result}"
    assert result.recovery_s is not None and result.recovery_s < RANKING_RESUMES_S, result.to_json()
