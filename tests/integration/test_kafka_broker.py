"""The real broker: 1,000 keyed messages through an idempotent producer (acks=all), none lost, order kept per key."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from pathlib import Path
from unittest import mock

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from stream.settings import Settings, load_settings
from workers.kafka_clients import client_kwargs, producer
from workers.stack import kafka


async def _roundtrip(settings: Settings, n: int, keys: int) -> dict[str, list[int]]:
    topic = settings.topic("roundtrip")
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])
    finally:
        await admin.close()
    prod = producer(settings)
    await prod.start()
    try:
        futures = [
            await prod.send(topic, key=f"user-{i % keys}".encode(), value=str(i).encode()) for i in range(n)
        ]
        await prod.flush()
        acked = await asyncio.gather(*futures)
        assert all(meta.offset >= 0 for meta in acked)
    finally:
        await prod.stop()
    consumer = AIOKafkaConsumer(
        topic,
        **client_kwargs(settings),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    received: dict[str, list[int]] = defaultdict(list)
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while sum(map(len, received.values())) < n and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            for messages in batch.values():
                for msg in messages:
                    received[msg.key.decode()].append(int(msg.value))
    finally:
        await consumer.stop()
    return received


def test_thousand_keyed_messages_none_lost_order_kept_per_key(isolated: Settings) -> None:
    received = asyncio.run(_roundtrip(isolated, n=1000, keys=37))
    values = sorted(v for vs in received.values() for v in vs)
    assert values == list(range(1000)), "every message arrives exactly once"
    assert len(received) == 37
    for key, vs in received.items():
        expected = [i for i in range(1000) if f"user-{i % 37}" == key]
        assert vs == expected, f"order kept for {key}"


def test_storage_formats_with_a_cluster_id_that_starts_with_a_dash(tmp_path: Path) -> None:
    # One random id in 64 starts with "-"; passed as "-t <id>" it was read as an option (seen in CI).
    settings = load_settings()
    data = tmp_path / "data"
    config = tmp_path / "server.properties"
    config.write_text(kafka.server_properties(settings, data))
    dash_first = uuid.UUID(bytes=bytes([0xFB]) + bytes(15))  # url-safe base64 "-wAAA..."
    with mock.patch.object(kafka.uuid, "uuid4", return_value=dash_first):
        kafka._format_storage(settings, config, data)
    assert "cluster.id=-wAAAAAAAAAAAAAAAAAAAA" in (data / "meta.properties").read_text()
