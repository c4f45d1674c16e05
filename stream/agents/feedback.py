"""The feedback join's glue: impressions open windows, events fill them, a sweep closes them.

Thin over ``stream.feedback``. The query agent opens an impression for each answer and the event
agent applies each batch's events, both inside the event's own context, so the ``feedback`` table
writes land on the user's partition. Windows of users who go quiet are closed by the sweep timer
under the context of the latest message seen on their partition.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from stream import feedback as join
from stream.agents.topics import impressions_topic, training_examples_topic
from stream.app import app, settings
from stream.context import event_context
from stream.recommend import Answer
from stream.records import Event, TrainingExample
from stream.runtime import metrics
from stream.tables import feedback
from stream.tables import open_impressions as payloads
from stream.topics import key_partition

log = logging.getLogger(__name__)
WINDOW = join.Window(settings.feedback_window_s, settings.feedback_grace_s, settings.feedback_max_open)
RESCAN_EVERY = 12  # sweeps between full scans of the table (windows left open across a restart)


class Clock:
    """The join's watermark and what the sweep needs: due users per partition and a live message
    of each partition to write under."""

    def __init__(self) -> None:
        self.event_time = 0.0
        self.due: dict[int, dict[str, float]] = {}
        self.anchors: dict[int, Any] = {}
        self.sweeps = 0

    def seen(self, event: Any, ts: float) -> None:
        self.event_time = max(self.event_time, ts)
        self.anchors[event.message.partition] = event

    def watermark(self) -> float:
        # A quiet stream must still close its windows: wall-clock time less the allowed lateness
        # stands in when no newer event arrives (event timestamps are wall-clock send times).
        return max(self.event_time, time.time() - settings.feedback_grace_s)

    def index(self, partition: int, user_id: str, state: join.State | None) -> None:
        when = join.next_close(state, WINDOW)
        users = self.due.setdefault(partition, {})
        if when is None:
            users.pop(user_id, None)
        else:
            users[user_id] = when


clock = Clock()


def open_impressions(answers: Sequence[Answer], events: dict[str, Any]) -> None:
    """Log each answer's impression and open its feedback window (``events``: request_id -> message)."""
    if not settings.impressions_enabled:
        return
    for answer in answers:
        imp = answer.impression
        event = events.get(imp.request_id)
        if event is None:
            continue
        impressions_topic.send_soon(key=imp.user_id.encode(), value=imp.to_json())
        clock.seen(event, imp.ts)
        with event_context(event):
            state, evicted = join.open_impression(feedback.get(imp.user_id), imp, WINDOW)
            # Accepted (open, or evicted at once as the oldest of a full state): its payload is
            # needed when it closes. Ignored (already closed): nothing to write.
            if any(o["request_id"] == imp.request_id for o in (*state["open"], *evicted)):
                payloads[imp.request_id] = join.payload(imp)
            feedback[imp.user_id] = state
            _emit(evicted)
        clock.index(event.message.partition, imp.user_id, state)


def apply_outcomes(user_events: Iterable[tuple[Any, Event]]) -> None:
    """Apply a batch's valid events to their users' open impressions (users without any: skipped)."""
    if not settings.impressions_enabled:
        return
    by_user: dict[str, list[tuple[Any, Event]]] = {}
    for event, record in user_events:
        clock.seen(event, record.ts)
        by_user.setdefault(record.user_id, []).append((event, record))
    for user_id, pairs in by_user.items():
        last = pairs[-1][0]
        with event_context(last):
            state = feedback.get(user_id)
            if not state or not state.get("open"):
                continue
            for _, record in pairs:
                state, result = join.apply_outcome(state, record, WINDOW)
                metrics.feedback_outcomes.labels(result=result).inc()
            feedback[user_id] = state


def forget_user(user_id: str) -> None:
    """Erasure: the user's open impressions go with the rest of their state (no examples written)."""
    for users in clock.due.values():
        users.pop(user_id, None)
    state = feedback.get(user_id)
    if state is not None:
        for entry in state.get("open", []):
            if payloads.get(entry["request_id"]) is not None:
                payloads.pop(entry["request_id"], None)
        feedback.pop(user_id, None)


@app.timer(interval=settings.feedback_sweep_s)
async def close_feedback_windows() -> None:
    if not settings.impressions_enabled:
        return
    try:
        assigned = {tp.partition for tp in app.consumer.assignment()}
    except Exception:  # the consumer is not started yet: nothing is ours to close
        return
    clock.sweeps += 1
    if clock.sweeps % RESCAN_EVERY == 1:
        _rescan()
    sweep(clock.watermark(), assigned)


def sweep(watermark: float, assigned: set[int]) -> int:
    """Close every window the watermark has passed on the ``assigned`` partitions; returns how many."""
    count = 0
    for partition, users in list(clock.due.items()):
        anchor = clock.anchors.get(partition)
        if partition not in assigned or anchor is None:
            continue
        for user_id in [u for u, when in users.items() if when <= watermark]:
            with event_context(anchor):
                state, closed = join.close_due(feedback.get(user_id), watermark, WINDOW)
                if state["open"]:
                    feedback[user_id] = state
                elif feedback.get(user_id) is not None:
                    feedback.pop(user_id, None)
                _emit(closed)
            clock.index(partition, user_id, state if state["open"] else None)
            count += len(closed)
    return count


def _rescan() -> None:
    """Index every open window in the local table: after a restart, the index starts empty."""
    partitions = settings.topic_partitions
    for user_id, state in list(feedback.items()):
        if state and state.get("open"):
            clock.index(key_partition(user_id.encode(), partitions), user_id, state)


def _emit(closed: Iterable[join.State]) -> None:
    """Write the examples of closed entries and drop their payloads (inside the user's context)."""
    for entry in closed:
        rid = entry["request_id"]
        stored = payloads.get(rid)
        whole = join.payload_of(entry, stored)
        if whole is None:
            log.warning("impression %s closed without its payload: no training examples", rid)
            continue
        if stored is not None:
            payloads.pop(rid, None)
        rows: list[TrainingExample] = join.examples(entry, whole)
        for row in rows:
            metrics.training_examples.labels(label=str(row.label)).inc()
            training_examples_topic.send_soon(key=row.key.encode(), value=row.to_json())
        if not rows:
            continue
        summary = join.summarise(rows)
        metrics.feedback_closed.labels(variant=summary.variant).inc()
        metrics.feedback_clicked.labels(variant=summary.variant).inc(int(summary.clicked))
        metrics.feedback_converted.labels(variant=summary.variant).inc(int(summary.converted))
        metrics.feedback_reciprocal_rank.labels(variant=summary.variant).inc(summary.reciprocal_rank)
