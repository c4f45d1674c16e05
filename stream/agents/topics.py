"""The Faust topic objects (raw bytes in and out) and the dead-letter path shared by all agents."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from stream.app import app, settings
from stream.metrics import reason_label
from stream.records import (
    MAX_DEAD_LETTER_KEY,
    MAX_DEAD_LETTER_RAW,
    Contract,
    DeadLetter,
    InvalidMessage,
    parse,
)
from stream.runtime import metrics
from stream.topics import TOPIC_SPECS

log = logging.getLogger(__name__)


def _topic(name: str) -> Any:
    spec = next(s for s in TOPIC_SPECS if s.name == name)
    return app.topic(
        settings.topic(name),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=spec.partitions or settings.topic_partitions,
        config=spec.config,
    )


items_topic = _topic("items")
events_topic = _topic("events")
queries_topic = _topic("queries")
recommendations_topic = _topic("recommendations")
dead_letters_topic = _topic("dead-letters")
erasure_topic = _topic("user-erasure")
erasure_confirmations_topic = _topic("user-erasure-confirmations")
item_activity_topic = _topic("item-activity")
impressions_topic = _topic("impressions")
training_examples_topic = _topic("training-examples")


M = TypeVar("M", bound=Contract)


def valid(events: Iterable[Any], model: type[M], key_field: str) -> Iterator[tuple[Any, M]]:
    """(event, record) for each message that satisfies ``model``; the others go to dead-letters."""
    for event in events:
        try:
            yield event, parse(model, event.message.value, event.message.key, key_field=key_field)
        except InvalidMessage as exc:
            dead_letter(event, exc.reason)


def dead_letter(event: Any, reason: str) -> None:
    """Send the raw message with its origin and ``reason`` to ``dead-letters``; never raises."""
    msg = event.message
    topic = str(msg.topic).removeprefix(settings.topic_prefix)
    raw = msg.value or b""
    # Bounded, so that the dead letter of a near-1 MiB message is not itself too large to send (a
    # send error there crashed the whole worker).
    key = msg.key[:MAX_DEAD_LETTER_KEY] if isinstance(msg.key, bytes) else None
    record = DeadLetter(
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        key=key.decode("utf-8", errors="replace") if key is not None else None,
        reason=reason,
        raw=base64.b64encode(raw[:MAX_DEAD_LETTER_RAW]).decode("ascii"),
        received_at=time.time(),
        raw_size=len(raw),
        raw_truncated=len(raw) > MAX_DEAD_LETTER_RAW,
    )
    metrics.invalid.labels(topic=topic).inc()
    metrics.dead_letters.labels(topic=topic, reason=reason_label(reason)).inc()
    log.warning("dead-lettered %s[%s]@%s: %s", msg.topic, msg.partition, msg.offset, reason)
    dead_letters_topic.send_soon(key=key, value=record.to_json())
