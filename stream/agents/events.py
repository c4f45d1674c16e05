"""Ingestion: behaviour events → user profiles (table) and item activity (to the item-keyed topic)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, cast

import orjson

from stream.agents.feedback import apply_outcomes
from stream.agents.topics import events_topic, item_activity_topic, queries_topic, valid
from stream.app import app, settings
from stream.batching import Stream
from stream.commits import InFlightSafeConsumer
from stream.context import event_context
from stream.itemstats import activity_rows, pack_by_partition
from stream.profile import Profile, update_profile
from stream.records import Event, Query
from stream.runtime import catalog, metrics
from stream.tables import erasures, profiles

log = logging.getLogger(__name__)

REFRESH_TYPES = frozenset({"click", "purchase"})
_last_refresh: dict[str, float] = {}  # debounce only: losing it on a rebalance costs one extra refresh


def load_profile(user_id: str) -> Profile:
    raw: Any = profiles.get(user_id)
    if raw:
        return Profile.from_dict(raw)
    marker: Any = erasures.get(user_id)
    if marker:
        return Profile.from_dict({"user_id": user_id, **marker})
    return Profile(user_id=user_id)


@app.agent(events_topic)
async def ingest_events(stream: Any) -> None:
    async for taken in stream.take_events(settings.ingest_batch_max, within=settings.ingest_batch_within_s):
        batch = in_offset_order(stream, taken)
        metrics.ingest_batch.observe(len(taken))
        activities: dict[str, list[list[Any]]] = defaultdict(list)
        # Fold each user's events in order, then write each touched profile once per batch.
        touched: dict[str, tuple[Any, Profile]] = {}
        outcomes: list[tuple[Any, Event]] = []
        sent = 0
        for event, record in valid(batch, Event, key_field="user_id"):
            outcomes.append((event, record))
            with event_context(event):
                before = (
                    touched[record.user_id][1] if record.user_id in touched else load_profile(record.user_id)
                )
            after = update_profile(before, record, catalog.get(record.item_id), offset=event.message.offset)
            if after.counts == before.counts:
                # A redelivered event rewrites its profile too: after a crash the local store can be
                # ahead of the changelog (written, never sent), and only a write sends it again. A
                # profile made from an erasure marker (no counts) is not written: the tombstone stays.
                if after is not before or before.counts:
                    touched[record.user_id] = (event, after)
                continue
            touched[record.user_id] = (event, after)
            metrics.events.labels(type=record.type).inc()
            rows = activity_rows(before, record.event_id, record.item_id, record.ts)
            sent += len(rows)
            for item_id, row in rows:
                activities[item_id].append(row)
            if settings.refresh_on_event and record.type in REFRESH_TYPES:
                _maybe_refresh(record)
        for user_id, (event, profile) in touched.items():
            with event_context(event):
                profiles[user_id] = profile.to_dict()
        apply_outcomes(outcomes)
        for partition, packed in pack_by_partition(activities, item_activity_topic.partitions):
            item_activity_topic.send_soon(value=orjson.dumps(packed), partition=partition)
        if sent:
            metrics.item_activity_rows.labels(stage="sent").inc(sent)


def in_offset_order(stream: Stream, batch: Sequence[Any]) -> list[Any]:
    """The events of ``batch`` that keep each partition applied in offset order; the others are held
    (left unacked) until the earlier event Faust passed over unprocessed is fetched again. Its
    recovery and rebalances skip a message now and then; fetched again after the same user's later
    events, the profile's offset check would skip it for good (docs/guarantees.md)."""
    consumer = cast(InFlightSafeConsumer, app.consumer)
    admitted: list[Any] = []
    held: dict[Any, list[int]] = defaultdict(list)
    for event in batch:
        if consumer.in_order(event.message):
            admitted.append(event)
        else:
            stream.hold(event)
            held[event.message.tp].append(event.message.offset)
    for tp, offsets in held.items():
        metrics.held_events.inc(len(offsets))
        log.warning(
            "%s[%s]: %d events from @%d held: an earlier one was passed over unprocessed",
            tp.topic,
            tp.partition,
            len(offsets),
            offsets[0],
        )
    return admitted


def forget_user(user_id: str) -> None:
    """Drop what this module keeps in memory about a user (erasure)."""
    _last_refresh.pop(user_id, None)


def _maybe_refresh(event: Event) -> None:
    """Ask for fresh recommendations after a click/purchase, at most once per debounce period."""
    last = _last_refresh.get(event.user_id, 0.0)
    if event.ts - last < settings.refresh_debounce_s:
        return
    _last_refresh[event.user_id] = event.ts
    query = Query(request_id=f"refresh-{event.event_id}", user_id=event.user_id, text="", ts=event.ts)
    queries_topic.send_soon(key=event.user_id.encode(), value=query.to_json())
