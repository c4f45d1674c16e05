"""``streamrec demo``: the whole pipeline on MovieLens-100K, watched live, ending in a report.

It brings up the local stack, starts the workers in a fresh namespace (topics, consumer group and
state of their own, so a second run needs no clean-up), replays the catalog, events and queries,
shows recent recommendations as they arrive, and writes ``reports/demo-<timestamp>/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from stream.records import Query
from stream.settings import ROOT, Settings
from workers.kafka_clients import client_kwargs
from workers.replay import ReplayPlan, plan, publish_items, publish_stream
from workers.report import DemoRun, write_report
from workers.stack import control
from workers.supervisor import WorkerProcess, free_port, metric_value, settings_for

DEMO_PREFIX = "demo"
OFFLINE_EVAL = ROOT / "models" / "eval.json"


@dataclass(frozen=True)
class DemoOptions:
    events: int = 3000
    queries: int | None = None  # default: one query per 10 events
    speed: float = 0.0
    max_rate: float = 150.0  # ~14 queries/s among ~136 events/s: 2 cores still rank them all (README)
    workers: int = 1
    keep: bool = False
    loop: bool = True  # simulated clicks, a retrain, a hot swap and an A/B readout (workers/demo_loop.py)
    seed: int = 0
    out_root: Path = ROOT / "reports"


def _namespace_env(base: Settings, stamp: str, run_dir: Path, loop: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()}
    if loop:
        from workers.demo_loop import LOOP_ENV

        env.update(LOOP_ENV)
    env.update(
        {
            "STREAMREC_TOPIC_PREFIX": f"{DEMO_PREFIX}{stamp}-",
            "STREAMREC_APP_ID": f"streamrec-{DEMO_PREFIX}{stamp}",
            "STREAMREC_RUN_DIR": str(run_dir),
            "STREAMREC_KAFKA_PORT": str(base.kafka_port),
            "STREAMREC_TRITON_GRPC_PORT": str(base.triton_grpc_port),
            "STREAMREC_TRITON_HTTP_PORT": str(base.triton_http_port),
            "STREAMREC_TRITON_METRICS_PORT": str(base.triton_metrics_port),
        }
    )
    return env


async def _drop_old_namespaces(settings: Settings) -> int:
    """Delete the topics of earlier demo runs (their names all start with the demo prefixes)."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        old = [
            t
            for t in await admin.list_topics()
            if t.startswith(DEMO_PREFIX) or t.startswith(f"streamrec-{DEMO_PREFIX}")
        ]
        if old:
            await admin.delete_topics(old)
        return len(old)
    finally:
        await admin.close()


class Watcher:
    """Consumes ``recommendations`` (and counts ``dead-letters``) while the replay runs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.received: list[dict[str, Any]] = []
        self.recent: deque[dict[str, Any]] = deque(maxlen=6)
        self.dead_letters = 0

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            self.settings.topic("recommendations"),
            self.settings.topic("dead-letters"),
            **client_kwargs(self.settings),
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200)
                now = time.time()
                for tp, messages in batch.items():
                    for msg in messages:
                        if tp.topic == self.settings.topic("dead-letters"):
                            self.dead_letters += 1
                            continue
                        rec = json.loads(msg.value)
                        rec["received_at"] = now
                        self.received.append(rec)
                        self.recent.appendleft(rec)
        finally:
            await consumer.stop()


def _live_table(watcher: Watcher, titles: dict[str, str]) -> Table:
    table = Table(title="latest recommendations", expand=True)
    table.add_column("user", width=6)
    table.add_column("query", width=18)
    table.add_column("top 3 (reason)")
    table.add_column("model", width=16)
    table.add_column("ms", justify="right", width=6)
    for rec in list(watcher.recent):
        top = "; ".join(f"{titles.get(i['item_id'], i['item_id'])} ({i['reason']})" for i in rec["items"][:3])
        model = f"{rec['model']['name']}/{rec['model']['version']}"
        style = "yellow" if rec["fallback"] else ""
        table.add_row(
            rec["user_id"], rec.get("query", ""), top, model, f"{rec['latency_ms']:.0f}", style=style
        )
    return table


async def _replay_live(
    settings: Settings, replay: ReplayPlan, opts: DemoOptions, console: Console
) -> tuple[Watcher, list[tuple[float, str]], float]:
    watcher = Watcher(settings)
    stop = asyncio.Event()
    watch_task = asyncio.create_task(watcher.run(stop))
    titles = {i.item_id: i.title for i in replay.items}
    texts = {m.request_id: m.text for m in replay.stream if isinstance(m, Query)}
    sent: list[tuple[float, str]] = []
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    send_task = progress.add_task("replaying events + queries", total=len(replay.stream))
    answer_task = progress.add_task("recommendations received", total=sum(1 for _ in texts))
    started = time.time()

    def on_progress(n: int, _total: int) -> None:
        progress.update(send_task, completed=n)

    def record_sent(msg: Any) -> None:
        sent.append((time.time(), "query" if isinstance(msg, Query) else "event"))

    with Live(console=console, refresh_per_second=4) as live:
        publisher = asyncio.create_task(
            publish_stream(
                settings, replay.stream, opts.speed, opts.max_rate, on_progress, on_sent=record_sent
            )
        )
        answered_ids: set[str] = set()
        deadline: float | None = None
        while True:
            for rec in watcher.received[len(answered_ids) :]:
                rec.setdefault("query", texts.get(rec["request_id"], ""))
            answered_ids = {r["request_id"] for r in watcher.received}
            for rec in watcher.recent:
                rec.setdefault("query", texts.get(rec["request_id"], ""))
            progress.update(answer_task, completed=len(answered_ids & texts.keys()))
            live.update(Group(progress, _live_table(watcher, titles)))
            if publisher.done():
                publisher.result()
                deadline = deadline or time.monotonic() + 60.0
                if texts.keys() <= answered_ids or time.monotonic() > deadline:
                    break
            await asyncio.sleep(0.25)
    stop.set()
    await watch_task
    return watcher, sent, started


def run_demo(base: Settings, opts: DemoOptions, console: Console) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = opts.out_root / f"demo-{stamp}"
    run_dir = base.run_dir / f"demo-{stamp}"
    workers: list[WorkerProcess] = []
    started_stack = False
    loop: Any = None
    try:
        with console.status("bringing up Kafka and Triton"):
            started_stack = not control.status(base).all_up
            timings = control.up(base)
        console.print(f"stack ready (kafka {timings['kafka']:.1f}s, triton {timings['triton']:.1f}s)")
        dropped = asyncio.run(_drop_old_namespaces(base))
        if dropped:
            console.print(f"removed {dropped} topics of earlier demo runs")
        env = _namespace_env(base, stamp, run_dir, opts.loop)
        settings = settings_for(env)
        replay = plan(
            opts.events or None, opts.queries if opts.queries is not None else opts.events // 10, opts.seed
        )
        with console.status(f"starting {opts.workers} worker(s)"):
            for n in range(opts.workers):
                worker_env = {**env, "STREAMREC_WEB_PORT": str(free_port())}
                workers.append(
                    WorkerProcess(worker_env, run_dir / f"worker-{n}.log", name=f"worker-{n}").start()
                )
            for worker in workers:
                worker.wait_ready(timeout_s=120)
        console.print(f"{len(workers)} worker(s) ready; logs in {run_dir}")
        with console.status(
            f"publishing the catalog ({len(replay.items)} items) and embedding it via Triton"
        ):
            asyncio.run(publish_items(settings, replay.items))
            for worker in workers:
                worker.wait_ready(timeout_s=300, catalog_items=len(replay.items))
        with console.status("warming the ranker's item cache (every catalog item through Triton once)"):
            # Queries replayed before it is warm pay ~50 item embeddings each: fallbacks, not the ranker.
            for worker in workers:
                worker.wait_ready(timeout_s=300, catalog_items=len(replay.items), primed=True)
        if opts.loop:
            from workers.demo_loop import Loop

            loop = Loop.create(settings, sum(1 for m in replay.stream if not isinstance(m, Query)), opts.seed)
            loop.start()
        watcher, sent, started = _replay_phases(settings, replay, opts, console, loop, workers)
        run = DemoRun(
            started_at=started,
            finished_at=time.time(),
            options={
                "events": opts.events,
                "queries": sum(1 for m in replay.stream if isinstance(m, Query)),
                "speed": opts.speed,
                "max_rate": opts.max_rate,
                "workers": opts.workers,
            },
            sent=sent,
            recommendations=watcher.received,
            dead_letters=watcher.dead_letters,
            worker_metrics=[w.metrics() for w in workers],
            catalog={i.item_id: {"title": i.title, "categories": list(i.categories)} for i in replay.items},
            histories=_histories(replay),
            offline_metrics=_offline_metrics(),
            loop=None,
        )
        if loop is not None:
            run.loop = loop.readout(run.catalog)
        write_report(run, out_dir)
        applied = sum(metric_value(w.metrics(), "streamrec_events_total") for w in workers)
        console.print(
            f"events applied by workers: {applied:.0f}; recommendations: {len(watcher.received)}; "
            f"dead letters: {watcher.dead_letters}"
        )
    finally:
        if loop is not None:
            loop.stop()
            with contextlib.suppress(Exception):
                loop.cleanup()
        for worker in workers:
            worker.stop()
        if not opts.keep and started_stack:
            with contextlib.suppress(Exception):
                control.down(base)
    return out_dir


def _replay_phases(
    settings: Settings,
    replay: ReplayPlan,
    opts: DemoOptions,
    console: Console,
    loop: Any,
    workers: Sequence[WorkerProcess],
) -> tuple[Watcher, list[tuple[float, str]], float]:
    """The replay; with the learning loop, in two halves around a retrain and a hot swap."""
    if loop is None:
        return asyncio.run(_replay_live(settings, replay, opts, console))
    half = len(replay.stream) // 2
    first, sent, started = asyncio.run(
        _replay_live(settings, ReplayPlan(replay.items, replay.stream[:half]), opts, console)
    )
    with console.status("closing the feedback windows of phase 1 (A/A: both arms on version 1)"):
        loop.close_windows()
    with console.status("retraining the ranker from the stream and publishing a new version"):
        retrain = loop.retrain_and_swap()
    console.print(
        f"retrain: {retrain.get('decision')} ({retrain.get('reason', '')}); version {retrain.get('version') or '-'}"
    )
    if loop.published:
        with console.status(
            f"waiting for the workers to route to version {loop.published} and warm its cache"
        ):
            # A publish reloads every served version (caches cold): phase 2 would compare fallbacks.
            for worker in workers:
                worker.wait_ready(timeout_s=300, primed=True, versions=[loop.published])
    second = ReplayPlan(replay.items, replay.stream[half:])
    watcher, sent2, _ = asyncio.run(_replay_live(settings, second, opts, console))
    # The second watcher reads the topic from the start: phase 1's answers keep the arrival times
    # the first watcher saw (a message is its (request_id, produced_at)).
    seen = {(r["request_id"], r["produced_at"]) for r in first.received}
    watcher.received = first.received + [
        r for r in watcher.received if (r["request_id"], r["produced_at"]) not in seen
    ]
    with console.status("closing the feedback windows of phase 2"):
        loop.close_windows()
    return watcher, sent + sent2, started


def _histories(replay: ReplayPlan) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for msg in replay.stream:
        if not isinstance(msg, Query):
            out.setdefault(msg.user_id, []).append(msg.item_id)
    return out


def _offline_metrics() -> dict[str, dict[str, float]] | None:
    try:
        data = json.loads(OFFLINE_EVAL.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return {k: v for k, v in data.items() if isinstance(v, dict)}
