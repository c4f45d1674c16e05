"""Erasure against the real broker: a tombstone, and a restart that does not bring the user back.

The crash scenarios (kill -9, takeover, Triton, broker, full disk) live in ``tests/chaos/``."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

from stream.records import ErasureRequest, Query
from stream.settings import Settings
from tests.support.stack import read_json_topic, wait_for
from tests.support.state import changelog_state
from workers.kafka_clients import producer
from workers.replay import plan, publish_items, publish_stream
from workers.supervisor import WorkerProcess


def test_erasure_removes_state_and_survives_restart(
    env: dict[str, str], isolated: Settings, tmp_path: Path, worker_factory: list[WorkerProcess]
) -> None:
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    worker_factory.append(worker)
    worker.wait_ready()
    replay = plan(600, 0, seed=2)
    asyncio.run(publish_items(isolated, replay.items))
    worker.wait_ready(catalog_items=len(replay.items))
    asyncio.run(publish_stream(isolated, replay.stream))
    victim = replay.stream[0].user_id
    wait_for(lambda: changelog_state(isolated, "profiles").get(victim), timeout_s=60, what="victim profile")

    async def erase() -> None:
        prod = producer(isolated)
        await prod.start()
        try:
            request = ErasureRequest(user_id=victim, request_id="erase-1")
            await prod.send(isolated.topic("user-erasure"), key=victim.encode(), value=request.to_json())
            await prod.flush()
        finally:
            await prod.stop()

    asyncio.run(erase())
    wait_for(
        lambda: read_json_topic(isolated, "user-erasure-confirmations"), timeout_s=60, what="confirmation"
    )
    (confirmation,) = read_json_topic(isolated, "user-erasure-confirmations")
    assert confirmation["user_id"] == victim and confirmation["request_id"] == "erase-1"
    state = changelog_state(isolated, "profiles")
    assert victim in state and state[victim] is None, "a tombstone is the latest changelog entry"

    worker.kill9()
    shutil.rmtree(isolated.run_dir / "workers" / "worker-0", ignore_errors=True)
    worker.start()
    worker.wait_ready(timeout_s=120, catalog_items=len(replay.items))
    query = Query(request_id="after-erase", user_id=victim, text="", ts=time.time(), k=10)
    asyncio.run(publish_stream(isolated, [query]))
    wait_for(lambda: read_json_topic(isolated, "recommendations"), timeout_s=60, what="answer")
    (rec,) = read_json_topic(isolated, "recommendations")
    assert not any(i["reason"].startswith("because you watched") for i in rec["items"]), "history forgotten"
    assert changelog_state(isolated, "profiles").get(victim) is None
