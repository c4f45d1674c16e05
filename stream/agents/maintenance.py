"""Periodic refresh of the derived caches (catalog index, popularity/trending) from global tables."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import Any

import numpy as np
from faust.exceptions import ConsumerNotStarted

from stream import looplag
from stream.app import app, settings
from stream.features import N_FEATURES
from stream.itemstats import BUCKET_S
from stream.runtime import catalog, item_view, metrics, ranker_client, recommender, registry, snapshot, warmup
from stream.tables import profiles
from stream.text import item_text
from stream.topics import TOPIC_SPECS
from workers.ranker_client import RankerUnavailable, RankRequest
from workers.supervisor import supervisor_gone


@app.timer(interval=2.0)
async def refresh_snapshot() -> None:
    """Trending counts over the hopping window ending at the latest event time seen."""
    stats = item_view.stats
    latest = max((int(b) for raw in stats.values() for b in raw.get("buckets", {})), default=0)
    first = latest - int(settings.trending_window_s // BUCKET_S) + 1
    snapshot.trending = {
        item_id: n
        for item_id, raw in stats.items()
        if (n := sum(c for b, c in raw.get("buckets", {}).items() if int(b) >= first)) > 0
    }
    snapshot.watermark = (latest + 1) * BUCKET_S
    metrics.table_size.labels(table="items").set(len(catalog))
    metrics.table_size.labels(table="item_stats").set(len(stats))
    metrics.table_size.labels(table="profiles").set(sum(1 for _ in profiles))


log = logging.getLogger(__name__)
# Small chunks with a pause between them: a 64-item chunk held the single ranker instance for a few
# hundred ms, and live queries queued behind it missed their deadline (fallbacks right after a
# publish, which re-primes every routed version). 16 items is ~0.1 s of encoder work.
PRIME_CHUNK = 16
PRIME_PAUSE_S = 0.05


@app.task
async def measure_loop_lag() -> None:
    await looplag.probe(metrics.loop_lag.observe)


@app.timer(interval=2.0)
async def stop_when_orphaned() -> None:
    """Stop (gracefully, as on SIGTERM) once the supervising process named in the settings is gone."""
    if supervisor_gone(settings.exit_with_parent_pid):
        log.warning("supervisor %d is gone: stopping", settings.exit_with_parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)


@app.timer(interval=5.0)
async def prime_ranker_cache() -> None:
    """Send each catalog item's text through the ranker once, so its item-embedding cache is warm.

    Again after each recovery of the ranker (a restarted Triton has a cold cache) and each change
    in the model registry (a publish reloads every served version, caches cold), for every version
    the A/B arms route to: without this, the first queries pay ~50 item embeddings each and miss
    the deadline.
    """
    if not settings.prime_ranker_cache:
        return
    warmup.follow(ranker_client.recoveries, registry.generation)
    pending = [i for i in catalog.items if i not in warmup.primed_items and catalog.has_vector(i)]
    started = time.monotonic()
    for start in range(0, len(pending), PRIME_CHUNK):
        chunk = pending[start : start + PRIME_CHUNK]
        texts = [item_text(catalog.items[i]) for i in chunk if i in catalog.items]
        request = RankRequest("", texts, np.zeros((len(texts), N_FEATURES), dtype=np.float32))
        try:
            await recommender.prime(request, time.monotonic() + settings.embed_deadline_s)
        except RankerUnavailable as exc:
            log.info("ranker cache priming paused: %s", exc)
            return
        warmup.primed_items.update(chunk)
        await asyncio.sleep(PRIME_PAUSE_S)  # live queries get the ranker between chunks
    if pending:
        log.info("ranker item cache primed with %d items in %.1fs", len(pending), time.monotonic() - started)


# Only streamrec's own topics get a lag series (the table changelogs are not committed by the group):
# at most len(TOPIC_SPECS) x partitions label sets per worker.
_LAG_TOPICS = frozenset(spec.name for spec in TOPIC_SPECS)
_lag_labels: set[tuple[str, str]] = set()


def partition_lags(consumer: Any, prefix: str) -> dict[tuple[str, str], int]:
    """(topic without ``prefix``, partition) -> highwater minus the group's committed offset.

    Reads only the consumer's in-memory state (no broker round trip). A partition whose highwater is
    not known yet (no fetch since assignment) is skipped; one with no commit yet counts from offset 0.
    """
    lags: dict[tuple[str, str], int] = {}
    committed_offsets = consumer._committed_offset  # faust keeps the last commit per partition here
    for tp in consumer.assignment():
        name = tp.topic.removeprefix(prefix)
        if not tp.topic.startswith(prefix) or name not in _LAG_TOPICS:
            continue
        try:
            highwater = consumer.highwater(tp)
        except AssertionError:  # revoked between assignment() and here
            continue
        if highwater is None:
            continue
        committed = committed_offsets.get(tp)
        lags[(name, str(tp.partition))] = max(0, int(highwater) - int(committed or 0))
    return lags


@app.timer(interval=5.0)
async def report_consumer_lag() -> None:
    try:
        lags = partition_lags(app.consumer, settings.topic_prefix)
    except ConsumerNotStarted:
        return
    for labels, lag in lags.items():
        metrics.consumer_lag.labels(*labels).set(lag)
    for labels in _lag_labels - lags.keys():  # partitions this worker no longer owns
        metrics.consumer_lag.remove(*labels)
    _lag_labels.clear()
    _lag_labels.update(lags)
