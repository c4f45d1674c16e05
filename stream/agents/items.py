"""The catalog: items → the global ``items`` table; their embeddings computed once per change via Triton."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from stream.agents.topics import dead_letter, item_activity_topic, items_topic
from stream.app import app, exit_for_restart, settings
from stream.context import event_context
from stream.itemstats import ItemStats, MalformedActivity, Row, apply_rows, decode_message
from stream.records import InvalidMessage, Item, parse
from stream.runtime import metrics, ranker_client
from stream.tables import item_stats, item_vectors, items
from stream.text import item_text
from stream.topics import key_partition
from stream.writebehind import WriteBehind
from workers.ranker_client import RankerUnavailable

log = logging.getLogger(__name__)
EMBED_RETRY_MAX_S = 30.0


@app.agent(items_topic)
async def ingest_items(stream: Any) -> None:
    async for batch in stream.take_events(64, within=0.5):
        changed: list[tuple[Any, Item]] = []
        for event in batch:
            key = event.message.key
            if event.message.value is None:  # a tombstone removes the item
                if not key:  # it names no item: dropping it silently would hide a producer's bug
                    dead_letter(event, "a tombstone (null value) without the item's key")
                    continue
                item_id = key.decode("utf-8", errors="replace")
                with event_context(event):
                    items.pop(item_id, None)
                    item_vectors.pop(item_id, None)
                continue
            try:
                item = parse(Item, event.message.value, key, key_field="item_id")
            except InvalidMessage as exc:
                dead_letter(event, exc.reason)
                continue
            with event_context(event):
                items[item.item_id] = item.model_dump(mode="json")
            changed.append((event, item))
        if changed:
            await _embed(changed)


async def _embed(changed: list[tuple[Any, Item]]) -> None:
    """Embed changed items, retrying with backoff until Triton answers: an item is never left unembedded."""
    delay = 0.5
    while True:
        deadline = time.monotonic() + settings.embed_deadline_s
        try:
            vectors = await ranker_client.embed([item_text(item) for _, item in changed], deadline)
            break
        except RankerUnavailable as exc:
            log.warning("embedding %d items failed (%s); retrying in %.1fs", len(changed), exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, EMBED_RETRY_MAX_S)
    for (event, item), vector in zip(changed, vectors, strict=True):
        with event_context(event):
            item_vectors[item.item_id] = {
                "updated_at": item.updated_at,
                "vector": [round(float(v), 6) for v in vector],
            }


def _write_stats(event: Any, item_id: str, stats: ItemStats) -> None:
    with event_context(event):
        item_stats[item_id] = stats.to_dict()
    metrics.item_stats_writes.inc()


# Folded statistics, written a while after their first change: a hot item once per delay instead
# of once per batch; the offset commits wait for them (stream/writebehind.py).
pending_stats: WriteBehind[ItemStats] = WriteBehind(_write_stats, settings.item_stats_write_delay_s)
app.write_behind.append(pending_stats)
metrics.item_stats_pending.set_function(lambda: len(pending_stats))


def write_due_stats(now: float) -> None:
    pending_stats.write_due(now, settings.item_stats_writes_per_batch, settings.item_stats_pending_max)


# mode's handler type (mypy_extensions' VarArg) is met by no function, its own handlers included.
@app.on_partitions_revoked.connect  # type: ignore[arg-type]
async def forget_revoked_stats(sender: Any, *args: Any, **kwargs: Any) -> None:
    """Pending statistics of revoked partitions (the signal's argument): no commit covered what
    changed them, so the partitions' next owner folds it again."""
    (revoked,) = args
    pending_stats.drop(revoked)


@app.timer(interval=max(settings.item_stats_write_delay_s / 2, 0.1))
async def write_idle_stats() -> None:
    """Statistics left pending when no batch comes: written all the same, and the commits go on
    (not while a rebalance hands partitions over: those revoked are dropped at its end)."""
    if app.rebalancing:
        return
    try:
        write_due_stats(time.monotonic())
    except Exception as exc:
        exit_for_restart(f"writing item statistics failed: {exc!r}")


@app.agent(item_activity_topic)
async def apply_item_activity(stream: Any) -> None:
    """Folds activities into per-item statistics, written a while later (``pending_stats``)."""
    async for batch in stream.take_events(2000, within=0.5):
        applied = 0
        now = time.monotonic()
        for event in batch:
            for item_id, rows in _activities(event).items():
                applied += len(rows)
                current = pending_stats.get(item_id)
                if current is None:
                    with event_context(event):
                        stored: Any = item_stats.get(item_id)
                    current = ItemStats.from_dict(stored) if stored else ItemStats(item_id)
                # A redelivery changes nothing but is written too: after a crash the local store can
                # be ahead of the changelog, and only a write sends the value again.
                updated = apply_rows(current, rows, settings.trending_window_s, event.message.offset)
                pending_stats.put(item_id, event, updated, now)
        if applied:
            metrics.item_activity_rows.labels(stage="applied").inc(applied)
        write_due_stats(time.monotonic())


def _activities(event: Any) -> dict[str, list[Row]]:
    try:
        data = orjson.loads(event.message.value or b"[]")
        rows = decode_message(event.message.key, data)
    except orjson.JSONDecodeError:
        dead_letter(event, "item-activity message is not valid JSON")
        return {}
    except MalformedActivity as exc:
        # Before, a malformed message raised out of the agent and stopped it: now it is set aside.
        dead_letter(event, str(exc))
        return {}
    if isinstance(data, dict):
        # A packed message names its items: one in another partition would get a second writer.
        partitions = item_activity_topic.partitions
        stray = [i for i in rows if key_partition(i.encode(), partitions) != event.message.partition]
        if stray:
            dead_letter(
                event,
                f"item-activity message on partition {event.message.partition} packs {stray[0]!r} of another",
            )
            return {}
    return rows
