"""The naive baseline a team would write first, for bench/e2e.py to measure streamrec against.

A plain aiokafka consumer that awaits each message: events update in-memory state (the same pure
functions as streamrec, so the answers are comparable), each query awaits one encoder call and one
Triton ranker request for its candidate set (no batching, no concurrency), and awaits the send of
its recommendation. Started as a process with the streamrec environment variables of a namespace;
prints "ready" once the catalog is embedded.

    .venv/bin/python bench/naive_baseline.py
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import numpy as np
from aiokafka import AIOKafkaConsumer

from stream.catalog import CatalogIndex
from stream.itemstats import ItemStats, activities_for, apply_activity
from stream.metrics import Metrics
from stream.profile import Profile, record_query, update_profile
from stream.recommend import Recommender, Snapshot
from stream.records import Event, InvalidMessage, Item, Query, parse
from stream.settings import get_settings
from workers.kafka_clients import client_kwargs, producer
from workers.ranker_client import RankerClient
from workers.supervisor import supervisor_gone
from workers.worker import tune_gc


async def main() -> None:
    settings = get_settings()
    metrics = Metrics.create()
    catalog = CatalogIndex()
    stats: dict[str, ItemStats] = {}
    profiles: dict[str, Profile] = {}
    snapshot = Snapshot()
    client = RankerClient(settings, metrics)
    await client.start()
    recommender = Recommender(settings, catalog, stats.get, snapshot, client, metrics)
    consumer = AIOKafkaConsumer(
        settings.topic("items"),
        settings.topic("events"),
        settings.topic("queries"),
        **client_kwargs(settings),
        group_id=f"{settings.app_id}-naive",
        auto_offset_reset="earliest",
    )
    prod = producer(settings)
    await consumer.start()
    await prod.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    announced = False
    try:
        while not stop.is_set() and not supervisor_gone(settings.exit_with_parent_pid):
            try:
                msg = await asyncio.wait_for(consumer.getone(), timeout=0.5)
            except TimeoutError:
                if not announced and len(catalog):
                    await _embed_catalog(client, catalog)
                    _announce_ready(settings.gc_gen0_threshold)
                    announced = True
                continue
            topic = msg.topic.removeprefix(settings.topic_prefix)
            try:
                if topic == "items":
                    catalog.upsert(parse(Item, msg.value, msg.key, "item_id"))
                elif topic == "events":
                    event = parse(Event, msg.value, msg.key, "user_id")
                    before = profiles.get(event.user_id) or Profile(event.user_id)
                    profiles[event.user_id] = update_profile(before, event, catalog.get(event.item_id))
                    for act in activities_for(before, event.event_id, event.item_id, event.ts):
                        current = stats.get(act.item_id) or ItemStats(act.item_id)
                        stats[act.item_id] = apply_activity(current, act, settings.trending_window_s)
                        snapshot.popularity[act.item_id] = stats[act.item_id].total
                else:
                    query = parse(Query, msg.value, msg.key, "user_id")
                    profile = record_query(
                        profiles.get(query.user_id) or Profile(query.user_id), query.text, query.ts
                    )
                    profiles[query.user_id] = profile
                    (rec,) = await recommender.recommend([(query, profile)])
                    await prod.send_and_wait(
                        settings.topic("recommendations"), key=msg.key, value=rec.to_json()
                    )
            except InvalidMessage:
                continue
    finally:
        await consumer.stop()
        await prod.stop()
        await client.close()


def _announce_ready(gc_gen0_threshold: int) -> None:
    # The worker's process settings (workers.worker), so that bench/e2e.py compares the designs and
    # not the garbage collector's defaults.
    tune_gc(gc_gen0_threshold)
    print("ready", flush=True)


async def _embed_catalog(client: RankerClient, catalog: CatalogIndex) -> None:
    from stream.text import item_text

    ids = list(catalog.items)
    for start in range(0, len(ids), 64):
        chunk = ids[start : start + 64]
        vectors = await client.embed([item_text(catalog.items[i]) for i in chunk], time.monotonic() + 60)
        for item_id, vector in zip(chunk, vectors, strict=True):
            catalog.set_vector(item_id, np.asarray(vector))


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
