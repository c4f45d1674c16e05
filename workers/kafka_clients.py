"""aiokafka clients configured from the settings: one place for bootstrap, security and topics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Collection
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from stream.settings import Settings
from stream.topics import TABLES, TOPIC_SPECS, changelog_topic

log = logging.getLogger(__name__)


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection arguments every aiokafka client takes (bootstrap, SASL/SSL)."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    if "SSL" in settings.kafka_security_protocol:
        kwargs["ssl_context"] = ssl.create_default_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
        )
    if settings.kafka_security_protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        kwargs["sasl_plain_password"] = (
            settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
        )
    return kwargs


def producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """An idempotent producer with acks=all: retries never duplicate or reorder within a partition."""
    return AIOKafkaProducer(
        **client_kwargs(settings),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        **overrides,
    )


async def _until_served(
    admin: AIOKafkaAdminClient, partitions: dict[str, int], timeout_s: float = 30.0
) -> None:
    """Wait until the broker's metadata shows every new topic with all its partitions led. A worker
    whose first metadata misses a just-created topic ignores it and may own no partition at all
    (seen on a freshly started broker)."""
    deadline = time.monotonic() + timeout_s
    missing = dict(partitions)
    while missing:
        for topic in await admin.describe_topics(list(missing)):
            led = [p for p in topic["partitions"] if p["error_code"] == 0 and p["leader"] >= 0]
            if topic["error_code"] == 0 and len(led) == missing.get(topic["topic"], -1):
                missing.pop(topic["topic"], None)
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics not ready on the broker after {timeout_s:.0f}s: {sorted(missing)}")
        await asyncio.sleep(0.2)


async def ensure_topics(settings: Settings) -> list[str]:
    """Create streamrec's topics with explicit partition counts; returns the names created now."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=settings.topic(spec.name),
                num_partitions=spec.partitions or settings.topic_partitions,
                replication_factor=1,
                topic_configs=spec.config,
            )
            for spec in TOPIC_SPECS
            if settings.topic(spec.name) not in existing
        ]
        wanted += [
            NewTopic(
                name=changelog_topic(settings, table),
                num_partitions=settings.topic_partitions,
                replication_factor=1,
                topic_configs={"cleanup.policy": "compact"},
            )
            for table in TABLES
            if changelog_topic(settings, table) not in existing
        ]
        if wanted:
            # Another worker may have created them first.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted)
            await _until_served(admin, {t.name: t.num_partitions for t in wanted})
    finally:
        await admin.close()
    created = {t.name for t in wanted}
    if any(tp.topic in created for tp in input_partitions(settings)):
        await anchor_group_offsets(settings, created)
    return [t.name for t in wanted]


def input_partitions(settings: Settings, topics: Collection[str] | None = None) -> list[TopicPartition]:
    """Every partition of the topics the workers' group consumes (of those among ``topics``)."""
    return [
        TopicPartition(settings.topic(spec.name), p)
        for spec in TOPIC_SPECS
        if spec.consumed and (topics is None or settings.topic(spec.name) in topics)
        for p in range(spec.partitions or settings.topic_partitions)
    ]


async def anchor_group_offsets(
    settings: Settings, topics: Collection[str] | None = None
) -> list[TopicPartition]:
    """Commit offset 0 for the workers' group on every input partition (of ``topics``: those just
    created, in ``ensure_topics``) it has no offset for yet; returns those partitions. A partition with no committed offset is placed by aiokafka, and after
    a takeover of one whose dead owner had not committed yet the survivor began it at its end (every
    query sent to it since the kill unanswered, docs/reliability.md). The broker takes such a commit
    only while the group has no members; otherwise the members' own commits stand and nothing is
    changed. aiokafka does not seek back to a committed 0 either; ``stream.commits`` does."""
    tps = input_partitions(settings, topics)
    consumer = AIOKafkaConsumer(**client_kwargs(settings), group_id=settings.app_id, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        unset = [tp for tp in tps if await consumer.committed(tp) is None]
        if unset:
            try:
                await consumer.commit({tp: 0 for tp in unset})
            except KafkaError as exc:  # the group is live: its members commit for themselves
                log.info("group %s not anchored (%r): it has members", settings.app_id, exc)
                return []
        return unset
    finally:
        await consumer.stop()
