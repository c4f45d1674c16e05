"""The moving parts every chaos scenario shares: a fixed MovieLens slice replayed in the background,
and worker processes on an isolated namespace."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from stream.records import Event, Item, Query
from stream.settings import Settings
from workers.movielens import load_interactions, load_items
from workers.replay import ReplayPlan, plan, publish_items, publish_stream
from workers.supervisor import WorkerProcess, free_port

# The short suite runs in CI (about 4 min on 2 cores); STREAMREC_CHAOS_FULL=1 replays longer slices.
FULL = os.environ.get("STREAMREC_CHAOS_FULL", "") not in ("", "0")


@dataclass(frozen=True)
class Scale:
    events: int
    queries: int
    rate: float  # messages/s the replay is paced at


SHORT_SCALE = Scale(events=2_000, queries=100, rate=400)
FULL_SCALE = Scale(events=12_000, queries=600, rate=800)


class BackgroundReplay:
    """``publish_stream`` of a plan's stream on its own thread, counting what it has handed over."""

    def __init__(self, settings: Settings, replay: ReplayPlan, rate: float) -> None:
        self.settings = settings
        self.replay = replay
        self.rate = rate
        self.sent = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _count(self, _msg: Event | Query) -> None:
        self.sent += 1

    def _run(self) -> None:
        try:
            asyncio.run(
                publish_stream(self.settings, self.replay.stream, max_rate=self.rate, on_sent=self._count)
            )
        except BaseException as exc:  # surfaced by join(): a failed replay must fail the test
            self.error = exc

    def start(self) -> BackgroundReplay:
        self._thread.start()
        return self

    def wait_sent(self, fraction: float, timeout_s: float = 60.0) -> None:
        """Block until ``fraction`` of the stream is handed to the producer: faults land mid-replay
        at the same point whatever the machine's speed."""
        target = int(len(self.replay.stream) * fraction)
        deadline = time.monotonic() + timeout_s
        while self.sent < target:
            if self.error is not None or time.monotonic() > deadline:
                raise RuntimeError(f"replay stalled at {self.sent}/{target}: {self.error!r}")
            time.sleep(0.05)

    def join(self, timeout_s: float = 120.0) -> None:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError(f"replay still sending after {timeout_s}s ({self.sent} sent)")
        if self.error is not None:
            raise self.error

    @property
    def query_ids(self) -> set[str]:
        return {m.request_id for m in self.replay.stream if isinstance(m, Query)}

    @property
    def users(self) -> list[str]:
        return sorted({m.user_id for m in self.replay.stream})

    @property
    def items(self) -> dict[str, Item]:
        return {i.item_id: i for i in self.replay.items}


def slice_plan(events: int, queries: int, seed: int) -> ReplayPlan:
    """The first ``events`` ratings with ``queries`` queries, and only the items they touch: the
    catalog's embeddings are computed by Triton on 2 shared cores, so a smaller one starts faster."""
    rows = load_interactions(seed=seed)[:events]
    touched = {r.item_id for r in rows}
    catalog = {k: v for k, v in load_items().items() if k in touched}
    return plan(events, queries, seed=seed, interactions=rows, catalog=catalog)


def publish_catalog(settings: Settings, replay: ReplayPlan) -> None:
    asyncio.run(publish_items(settings, replay.items))


def start_worker(
    env: dict[str, str], log_dir: Path, factory: list[WorkerProcess], name: str = "worker-0"
) -> WorkerProcess:
    """A worker on its own web port, stopped by the ``worker_factory`` fixture at teardown."""
    worker = WorkerProcess(
        {**env, "STREAMREC_WEB_PORT": str(free_port())}, log_dir / f"{name}.log", name=name
    )
    factory.append(worker.start())
    return worker
