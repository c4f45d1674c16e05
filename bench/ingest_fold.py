"""The pure per-event ingestion path, without Kafka or Faust: what bounds a worker's events/s.

Runs what the two ingestion agents run on MovieLens events, batch by batch: parse, the profile fold
and the item-activity rows (``stream.agents.events``), then decoding those rows and folding them into
item statistics (``stream.agents.items``), with the table values (de)serialised as the agents do.

    .venv/bin/python bench/ingest_fold.py [--events 20000]

Prints microseconds per event for each part, the item-activity bytes per event, and the cost of
reading and writing one profile (what a live event or query pays per user).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stream.itemstats import ItemStats, activity_rows, apply_rows, decode_message, pack_by_partition
from stream.profile import Profile, update_profile
from stream.records import Event, parse
from stream.settings import load_settings
from workers.replay import plan
from workers.worker import tune_gc

EVENTS_BATCH = 1000  # settings.ingest_batch_max
ITEMS_BATCH = 2000  # apply_item_activity's take_events
WINDOW_S = 6 * 3600.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    n = parser.parse_args().events
    replay = plan(n, 0, seed=2)
    catalog = {i.item_id: i for i in replay.items}
    raw = [(m.user_id.encode(), m.to_json()) for m in replay.stream]
    timings: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        out = fn()
        timings[name] = time.perf_counter() - started
        return out

    settings = load_settings()
    tune_gc(settings.gc_gen0_threshold)  # the worker's collector settings
    records: list[Event] = timed("parse", lambda: [parse(Event, v, k, key_field="user_id") for k, v in raw])
    profiles: dict[str, dict[str, Any]] = {}
    messages: list[tuple[bytes, bytes]] = []

    def events_side() -> None:
        for start in range(0, len(records), EVENTS_BATCH):
            touched: dict[str, Profile] = {}
            rows: dict[str, list[list[Any]]] = defaultdict(list)
            for offset, record in enumerate(records[start : start + EVENTS_BATCH], start=start):
                before = touched.get(record.user_id)
                if before is None:
                    stored = profiles.get(record.user_id)
                    before = Profile.from_dict(stored) if stored else Profile(record.user_id)
                touched[record.user_id] = update_profile(before, record, catalog.get(record.item_id), offset)
                for item_id, row in activity_rows(before, record.event_id, record.item_id, record.ts):
                    rows[item_id].append(row)
            for user_id, profile in touched.items():
                profiles[user_id] = profile.to_dict()
            messages.extend(
                (b"", orjson.dumps(m)) for _, m in pack_by_partition(rows, settings.topic_partitions)
            )

    stats: dict[str, dict[str, Any]] = {}

    def items_side() -> None:
        for start in range(0, len(messages), ITEMS_BATCH):
            touched: dict[str, ItemStats] = {}
            for offset, (key, value) in enumerate(messages[start : start + ITEMS_BATCH], start=start):
                for item_id, item_rows in decode_message(key, orjson.loads(value)).items():
                    current = touched.get(item_id)
                    if current is None:
                        stored = stats.get(item_id)
                        current = ItemStats.from_dict(stored) if stored else ItemStats(item_id)
                    touched[item_id] = apply_rows(current, item_rows, WINDOW_S, offset)
            for item_id, item_stats in touched.items():
                stats[item_id] = item_stats.to_dict()

    timed("events agent fold", events_side)
    timed("item-activity fold", items_side)
    for name, seconds in timings.items():
        print(f"{name:20} {seconds * 1e6 / n:7.1f} us/event")
    print(f"{'total':20} {sum(timings.values()) * 1e6 / n:7.1f} us/event")
    # A live event (or query) reads and writes its user's whole profile: per profile, not per event.
    # The best of 5 passes: one pass over ~200 profiles is short enough for a collection to double it.
    stored = list(profiles.values())
    loaded = [Profile.from_dict(d) for d in stored]
    passes: dict[str, Callable[[], Any]] = {
        "profile read": lambda: [Profile.from_dict(d) for d in stored],
        "profile write": lambda: [p.to_dict() for p in loaded],
    }
    for name, fn in passes.items():
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - started)
        print(f"{name:20} {best * 1e6 / len(stored):7.1f} us/profile ({len(stored)} profiles, best of 5)")
    print(f"item-activity: {len(messages)} messages, {sum(len(v) for _, v in messages) / n:.0f} bytes/event")


if __name__ == "__main__":
    main()
