"""Faust runs aiokafka's consumer on a thread of its own, with its own event loop: what changes the
consumer (streamrec's seeks, ``stream.commits``) must run there. Under asyncio's debug mode a call
from the app's loop raises, so a worker run in that mode shows any that does not."""

from __future__ import annotations

from pathlib import Path

from workers.supervisor import WorkerProcess

CROSS_THREAD = "Non-thread-safe operation"


def test_a_worker_seeks_its_new_partitions_on_the_consumer_thread(
    env: dict[str, str], tmp_path: Path, worker_factory: list[WorkerProcess]
) -> None:
    # A new namespace: every input partition is anchored at offset 0, so the first assignment's
    # recovery seeks each of them to its earliest offset (stream.commits.seek_to_committed). Done
    # from the app's loop, that seek crashed the recovery here and the worker never became ready.
    worker = WorkerProcess({**env, "PYTHONASYNCIODEBUG": "1"}, tmp_path / "worker.log").start()
    worker_factory.append(worker)
    worker.wait_ready(timeout_s=120)
    state = worker.ready() or {}
    assert state.get("assigned_partitions", 0) > 0, state
    assert CROSS_THREAD not in worker.log_path.read_text(errors="replace"), worker.tail(60)
