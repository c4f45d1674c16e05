"""Soak: steady open-loop load through the whole stack for N minutes, watching memory and descriptors.

One streamrec worker and a private Triton server (free ports, own run dir, so its memory is its own)
on the shared Kafka broker. Events and queries are sent at fixed rates whatever the answers do;
every few seconds the resident memory (RSS) and open file descriptors of the worker's and of
Triton's process trees (Triton's python-backend stubs are child processes) are sampled from /proc.
After a warm-up, memory must stay flat (drift < 5%), descriptors must not grow, and every query
must be answered.

    .venv/bin/python bench/soak.py [--minutes 30] [--events-per-s 200] [--queries-per-s 10]

Prints a table, then a JSON line as the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stream.records import Event, Item, Query  # noqa: E402
from stream.settings import Settings, load_settings  # noqa: E402
from workers.kafka_clients import client_kwargs, ensure_topics, producer  # noqa: E402
from workers.movielens import load_interactions, load_items  # noqa: E402
from workers.replay import publish_items, query_text  # noqa: E402
from workers.stack import kafka, triton  # noqa: E402
from workers.supervisor import WorkerProcess, free_port, metric_value, settings_for  # noqa: E402

EVENT_TYPES = ("view", "view", "click", "add_to_cart", "purchase")
DRAIN_S = 60.0


@dataclass
class Sample:
    t_s: float
    events_sent: int
    queries_sent: int
    answered: int
    worker_rss_mb: float
    worker_fds: int
    triton_rss_mb: float
    triton_fds: int
    worker_alive: bool


@dataclass
class SoakResult:
    minutes: float
    warmup_s: float
    event_rate: float
    query_rate: float
    samples: list[Sample] = field(default_factory=list)
    events: int = 0
    events_applied: int = 0
    queries: int = 0
    answered: int = 0
    duplicates: int = 0
    fallbacks: int = 0
    worker_alive: bool = True

    @property
    def steady(self) -> list[Sample]:
        """The samples after the warm-up window."""
        return [s for s in self.samples if s.t_s >= self.warmup_s]

    def summary(self) -> dict[str, Any]:
        steady = self.steady
        return {
            "minutes": self.minutes,
            "warmup_s": self.warmup_s,
            "events_per_s": self.event_rate,
            "queries_per_s": self.query_rate,
            "events": self.events,
            "events_applied": self.events_applied,
            "queries": self.queries,
            "answered": self.answered,
            "unanswered": self.queries - self.answered,
            "duplicates": self.duplicates,
            "fallback_share": round(self.fallbacks / max(self.answered, 1), 4),
            "samples": len(self.samples),
            "steady_samples": len(steady),
            "worker_rss_drift_pct": round(drift_pct([s.worker_rss_mb for s in steady]), 2),
            "triton_rss_drift_pct": round(drift_pct([s.triton_rss_mb for s in steady]), 2),
            "worker_rss_slope_mb_per_min": round(slope_per_min(steady, "worker_rss_mb"), 3),
            "triton_rss_slope_mb_per_min": round(slope_per_min(steady, "triton_rss_mb"), 3),
            "worker_rss_mb": [round(min(s.worker_rss_mb for s in steady), 1), _max(steady, "worker_rss_mb")],
            "triton_rss_mb": [round(min(s.triton_rss_mb for s in steady), 1), _max(steady, "triton_rss_mb")],
            "worker_fd_growth": fd_growth([s.worker_fds for s in steady]),
            "triton_fd_growth": fd_growth([s.triton_fds for s in steady]),
            "worker_fds": [min(s.worker_fds for s in steady), max(s.worker_fds for s in steady)],
            "triton_fds": [min(s.triton_fds for s in steady), max(s.triton_fds for s in steady)],
            "worker_alive": self.worker_alive,
        }


def _max(samples: list[Sample], key: str) -> float:
    return round(max(float(getattr(s, key)) for s in samples), 1)


def _edge(values: list[float]) -> int:
    """How many samples at each end of the window stand for its start and its end (a tenth, at least 3)."""
    return max(3, len(values) // 10)


def drift_pct(values: list[float]) -> float:
    """Median of the window's last tenth against the median of its first tenth, in percent.

    Medians of a tenth, not single samples: one garbage-collection or allocator spike at either end
    must not read as a trend.
    """
    if len(values) < 6:
        raise ValueError(f"{len(values)} samples after warm-up are too few to measure drift")
    n = _edge(values)
    first, last = statistics.median(values[:n]), statistics.median(values[-n:])
    return (last - first) / first * 100.0


def fd_growth(values: list[int]) -> int:
    """The highest count at the end of the window minus the highest at its start.

    Maxima, not medians: a leak adds descriptors that stay, while connections opened and closed
    between two samples come and go at both ends alike.
    """
    n = _edge([float(v) for v in values])
    return max(values[-n:]) - max(values[:n])


def slope_per_min(samples: list[Sample], key: str) -> float:
    """Least-squares trend of ``key`` in units per minute (informative: drift is what is judged)."""
    if len(samples) < 2:
        return 0.0
    xs = [s.t_s / 60.0 for s in samples]
    ys = [float(getattr(s, key)) for s in samples]
    return float(statistics.linear_regression(xs, ys).slope)


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            after = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(after[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_usage(pid: int) -> tuple[float, int]:
    """(RSS MB, open file descriptors) summed over a process tree; processes that just exited count 0.

    RocksDB's table files (``*.sst``) are left out of the count: RocksDB keeps one open per live file,
    and their number follows flushes and compactions, bounded by compaction, not by the load."""
    rss_kb, fds = 0, 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss_kb += int(line.split()[1])
            for fd in os.listdir(f"/proc/{p}/fd"):
                with contextlib.suppress(OSError):
                    if not os.readlink(f"/proc/{p}/fd/{fd}").endswith(".sst"):
                        fds += 1
        except (FileNotFoundError, ProcessLookupError):
            continue
    return rss_kb / 1024.0, fds


def _namespace(base: Settings, triton_settings: Settings, run_dir: Path) -> dict[str, str]:
    tag = uuid.uuid4().hex[:6]
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")},
        "STREAMREC_TOPIC_PREFIX": f"soak{tag}-",
        "STREAMREC_APP_ID": f"streamrec-soak{tag}",
        "STREAMREC_RUN_DIR": str(run_dir),
        "STREAMREC_WEB_PORT": str(free_port()),
        "STREAMREC_KAFKA_HOST": base.kafka_host,
        "STREAMREC_KAFKA_PORT": str(base.kafka_port),
        "STREAMREC_TRITON_GRPC_PORT": str(triton_settings.triton_grpc_port),
        "STREAMREC_TRITON_HTTP_PORT": str(triton_settings.triton_http_port),
        "STREAMREC_TRITON_METRICS_PORT": str(triton_settings.triton_metrics_port),
        "STREAMREC_LOG_LEVEL": "warning",
    }


class Load:
    """Open-loop events and queries at fixed rates, and a consumer counting answers per request_id."""

    def __init__(
        self, settings: Settings, catalog: dict[str, Item], event_rate: float, query_rate: float
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.items = list(catalog.values())
        self.rows = load_interactions(seed=11)
        self.users = sorted({r.user_id for r in self.rows})
        self.event_rate = event_rate
        self.query_rate = query_rate
        self.rng = random.Random(11)
        self.tag = uuid.uuid4().hex[:6]
        self.events_sent = 0
        self.queries_sent = 0
        self.requests: set[str] = set()
        self.answers: Counter[str] = Counter()
        self.fallbacks = 0
        self.sending_done = False
        self.all_answered = asyncio.Event()

    @property
    def answered(self) -> int:
        return sum(1 for r in self.answers if r in self.requests)

    def _event(self) -> Event:
        row = self.rows[self.events_sent % len(self.rows)]
        return Event(
            event_id=f"s{self.tag}-{self.events_sent}",
            user_id=row.user_id,
            item_id=row.item_id,
            type=self.rng.choice(EVENT_TYPES),  # type: ignore[arg-type]
            ts=time.time(),
        )

    def _query(self) -> Query:
        n = self.queries_sent
        text = query_text(self.items[self.rng.randrange(len(self.items))], self.rng) if n % 2 else ""
        return Query(
            request_id=f"s{self.tag}-q{n}", user_id=self.rng.choice(self.users), text=text, ts=time.time()
        )

    async def send(self, seconds: float) -> None:
        """Every 20 ms, send what is due by then: the rates hold whatever the worker does."""
        prod = producer(self.settings)
        await prod.start()
        try:
            start = time.monotonic()
            while (elapsed := time.monotonic() - start) < seconds:
                while self.events_sent < int(elapsed * self.event_rate):
                    event = self._event()
                    self.events_sent += 1
                    await prod.send(
                        self.settings.topic("events"), key=event.user_id.encode(), value=event.to_json()
                    )
                while self.queries_sent < int(elapsed * self.query_rate):
                    query = self._query()
                    self.queries_sent += 1
                    self.requests.add(query.request_id)
                    await prod.send(
                        self.settings.topic("queries"), key=query.user_id.encode(), value=query.to_json()
                    )
                await asyncio.sleep(0.02)
            await prod.flush()
        finally:
            await prod.stop()

    async def receive(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                for msg in messages:
                    rec = json.loads(msg.value)
                    self.answers[rec["request_id"]] += 1
                    self.fallbacks += bool(rec.get("fallback"))
            if self.sending_done and self.answered >= len(self.requests):
                self.all_answered.set()


async def _run_load(
    settings: Settings,
    load: Load,
    worker: WorkerProcess,
    triton_pid: int,
    result: SoakResult,
    sample_s: float,
    progress: bool,
) -> None:
    consumer = AIOKafkaConsumer(
        settings.topic("recommendations"),
        **client_kwargs(settings),
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    stop = asyncio.Event()
    receiver = asyncio.create_task(load.receive(consumer, stop))
    assert worker.proc is not None
    worker_pid = worker.proc.pid
    start = time.monotonic()

    async def sample_forever() -> None:
        while True:
            w_rss, w_fds = tree_usage(worker_pid)
            t_rss, t_fds = tree_usage(triton_pid)
            sample = Sample(
                t_s=round(time.monotonic() - start, 1),
                events_sent=load.events_sent,
                queries_sent=load.queries_sent,
                answered=load.answered,
                worker_rss_mb=round(w_rss, 1),
                worker_fds=w_fds,
                triton_rss_mb=round(t_rss, 1),
                triton_fds=t_fds,
                worker_alive=worker.alive(),
            )
            result.samples.append(sample)
            if progress and len(result.samples) % max(1, int(60 / sample_s)) == 1:
                print(_row(sample), file=sys.stderr, flush=True)
            await asyncio.sleep(sample_s)

    sampler = asyncio.create_task(sample_forever())
    try:
        await load.send(result.minutes * 60.0)
        sampler.cancel()
        load.sending_done = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(load.all_answered.wait(), DRAIN_S)
    finally:
        sampler.cancel()
        stop.set()
        await receiver
        await consumer.stop()


def _row(s: Sample) -> str:
    return (
        f"| {s.t_s:7.0f} | {s.events_sent:8d} | {s.queries_sent:6d} | {s.answered:6d} "
        f"| {s.worker_rss_mb:8.1f} | {s.worker_fds:5d} | {s.triton_rss_mb:8.1f} | {s.triton_fds:5d} |"
    )


HEADER = (
    "|     t s |   events |  queries | answered | worker MB | w fds | triton MB | t fds |\n"
    "|---|---|---|---|---|---|---|---|"
)


def soak(
    minutes: float = 30.0,
    event_rate: float = 200.0,
    query_rate: float = 10.0,
    sample_s: float = 5.0,
    warmup_s: float | None = None,
    base: Settings | None = None,
    run_dir: Path | None = None,
    progress: bool = False,
    worker_env: dict[str, str] | None = None,
) -> SoakResult:
    """Run the soak and return its samples and counts; the caller judges them against the goals.

    The warm-up (default: a sixth of the run, at most 5 minutes) covers what fills once and then
    stays: RocksDB memtables and block cache, the ranker's item cache, allocator arenas, Triton's
    first batches.
    """
    base = base or load_settings()
    warmup = warmup_s if warmup_s is not None else min(300.0, minutes * 60.0 / 6)
    run_dir = run_dir or base.run_dir / f"soak-{uuid.uuid4().hex[:6]}"
    kafka.start(base)  # the shared broker: a no-op when it is up; it is never stopped here
    triton_settings = base.model_copy(
        update={
            "triton_http_port": free_port(),
            "triton_grpc_port": free_port(),
            "triton_metrics_port": free_port(),
            "run_dir": run_dir / "triton",
        }
    )
    result = SoakResult(minutes=minutes, warmup_s=warmup, event_rate=event_rate, query_rate=query_rate)
    triton.start(triton_settings)
    worker: WorkerProcess | None = None
    try:
        triton_pid = triton.process(triton_settings).pid()
        assert triton_pid is not None
        env = {**_namespace(base, triton_settings, run_dir / "worker"), **(worker_env or {})}
        settings = settings_for(env)
        asyncio.run(ensure_topics(settings))
        worker = WorkerProcess(env, run_dir / "worker.log").start()
        worker.wait_ready(timeout_s=180)
        catalog = load_items()
        asyncio.run(publish_items(settings, list(catalog.values())))
        worker.wait_ready(timeout_s=600, catalog_items=len(catalog), vectors=True, primed=True)
        load = Load(settings, catalog, event_rate, query_rate)
        asyncio.run(_run_load(settings, load, worker, triton_pid, result, sample_s, progress))
        result.events, result.queries = load.events_sent, load.queries_sent
        result.answered = load.answered
        result.duplicates = sum(c - 1 for r, c in load.answers.items() if r in load.requests and c > 1)
        result.fallbacks = load.fallbacks
        result.worker_alive = worker.alive() and all(s.worker_alive for s in result.samples)
        # The last events sent may still be in the worker's batch when the last answer arrives.
        drain_until = time.monotonic() + DRAIN_S
        while time.monotonic() < drain_until:
            result.events_applied = int(metric_value(worker.metrics(), "streamrec_events_total"))
            if result.events_applied >= result.events:
                break
            time.sleep(0.5)
    finally:
        if worker is not None:
            worker.stop()
        triton.stop(triton_settings)
    return result


def report(result: SoakResult) -> str:
    """The table (one row a minute, plus the last sample), then the JSON summary as the last line."""
    step = max(1, len(result.samples) // max(1, int(result.minutes)))
    rows = result.samples[::step]
    if result.samples and rows[-1] is not result.samples[-1]:
        rows.append(result.samples[-1])
    return "\n".join([HEADER, *(_row(s) for s in rows), json.dumps(result.summary())])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--events-per-s", type=float, default=200.0)
    parser.add_argument("--queries-per-s", type=float, default=10.0)
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--warmup-s", type=float, default=None, help="default: a sixth of the run, ≤ 300 s")
    parser.add_argument("--samples-json", type=Path, default=None, help="also write every sample here")
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="e.g. STREAMREC_STORE_URL=memory://",
    )
    args = parser.parse_args()
    print(
        f"soak: {args.minutes:g} min, {args.events_per_s:g} events/s + {args.queries_per_s:g} queries/s",
        file=sys.stderr,
    )
    result = soak(
        args.minutes,
        args.events_per_s,
        args.queries_per_s,
        args.sample_s,
        args.warmup_s,
        progress=True,
        worker_env=dict(kv.split("=", 1) for kv in args.worker_env),
    )
    if args.samples_json is not None:
        args.samples_json.write_text(json.dumps([asdict(s) for s in result.samples]))
    print(report(result))


if __name__ == "__main__":
    main()
