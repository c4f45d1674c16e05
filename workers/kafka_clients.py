"""aiokafka clients configured from the settings: one place for bootstrap, security and topics."""

from __future__ import annotations

import contextlib
import ssl
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from stream.settings import Settings
from stream.topics import TOPIC_SPECS


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
        if wanted:
            # Another worker may have created them first.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted)
        return [t.name for t in wanted]
    finally:
        await admin.close()
