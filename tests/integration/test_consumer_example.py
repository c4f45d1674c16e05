"""examples/consumer.py against the real broker: after a small replay it prints every recommendation
(request id, user, model) and its ranked items, read from the isolated namespace's topic."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

from stream.records import Query
from stream.settings import ROOT, Settings
from tests.support.stack import read_json_topic, wait_for
from workers.replay import plan, publish_items, publish_stream
from workers.supervisor import WorkerProcess

ITEM_LINE = re.compile(r"^\s+(\d+)\. +(\S+)  [+-]\d+\.\d{3}  (.+)$")


def _consumer(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / "consumer.py"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def _parse(stdout: str) -> dict[str, list[tuple[int, str, str]]]:
    """request id -> [(rank, item id, reason)] from the consumer's output."""
    printed: dict[str, list[tuple[int, str, str]]] = {}
    current: list[tuple[int, str, str]] = []
    for line in stdout.splitlines():
        if item := ITEM_LINE.match(line):
            current.append((int(item.group(1)), item.group(2), item.group(3)))
        elif line and not line[0].isspace() and " user=" in line:
            current = printed.setdefault(line.split()[0], [])
    return printed


def test_consumer_example_prints_the_recommendations(
    env: dict[str, str], isolated: Settings, tmp_path: Path, worker_factory: list[WorkerProcess]
) -> None:
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    worker_factory.append(worker)
    worker.wait_ready()
    replay = plan(300, 12, seed=23)
    asyncio.run(publish_items(isolated, replay.items))
    worker.wait_ready(catalog_items=len(replay.items))
    asyncio.run(publish_stream(isolated, replay.stream))
    queries = [m for m in replay.stream if isinstance(m, Query)]
    wait_for(
        lambda: len(read_json_topic(isolated, "recommendations")) >= len(queries),
        timeout_s=90,
        interval_s=2,
        what="all queries answered",
    )
    recs = {r["request_id"]: r for r in read_json_topic(isolated, "recommendations")}
    assert sorted(recs) == sorted(q.request_id for q in queries)

    result = _consumer(env, "--from-beginning", "--max", str(len(queries) + 5), "--timeout", "5")
    printed = _parse(result.stdout)
    assert result.stdout.rstrip().splitlines()[-1] == f"{len(queries)} recommendations"
    assert sorted(printed) == sorted(recs)
    for request_id, rec in recs.items():
        header = next(line for line in result.stdout.splitlines() if line.startswith(f"{request_id} "))
        assert f"user={rec['user_id']}" in header
        assert f"model={rec['model']['name']}/{rec['model']['version']}" in header
        assert ("(fallback)" in header) == rec["fallback"]
        assert printed[request_id] == [(i["rank"], i["item_id"], i["reason"]) for i in rec["items"]]

    # --max bounds what it reads; without --from-beginning it waits for new ones only.
    first_two = _consumer(env, "--from-beginning", "--max", "2", "--timeout", "5")
    assert len(_parse(first_two.stdout)) == 2
    assert first_two.stdout.rstrip().splitlines()[-1] == "2 recommendations"
    latest = _consumer(env, "--max", "5", "--timeout", "3")
    assert latest.stdout.strip() == "0 recommendations"
