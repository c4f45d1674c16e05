"""Helpers for integration tests: the real stack, isolated topic namespaces, worker processes, topic reads."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from stream.settings import Settings
from workers.kafka_clients import client_kwargs
from workers.supervisor import free_port


def isolated_env(tmp: Path, **extra: str) -> dict[str, str]:
    """Environment for a worker/replay with its own topics, consumer group, state dir and web port."""
    tag = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_") or k in _KEEP}
    env.update(
        {
            "STREAMREC_TOPIC_PREFIX": f"t{tag}-",
            "STREAMREC_APP_ID": f"streamrec-t{tag}",
            "STREAMREC_RUN_DIR": str(tmp / "run"),
            "STREAMREC_WEB_PORT": str(free_port()),
            "STREAMREC_LOG_LEVEL": "info",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


# Ports and paths of the shared stack pass through to the isolated environment.
_KEEP = {
    "STREAMREC_KAFKA_PORT",
    "STREAMREC_KAFKA_HOST",
    "STREAMREC_TRITON_HOST",
    "STREAMREC_TRITON_GRPC_PORT",
    "STREAMREC_TRITON_HTTP_PORT",
    "STREAMREC_TRITON_METRICS_PORT",
    "STREAMREC_MODEL_ENV",
    "STREAMREC_KAFKA_HOME",
    "STREAMREC_TRITON_BACKENDS",
    "STREAMREC_DATA_DIR",
}


async def read_topic(settings: Settings, name: str, timeout_s: float = 3.0) -> list[Any]:
    """Every message currently in topic ``name`` (all partitions, from the beginning), without a group."""
    consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(name) or set()
        if not partitions:
            await consumer._client.force_metadata_update()  # a fresh topic: fetch its metadata now
            partitions = consumer.partitions_for_topic(name) or set()
        tps = [TopicPartition(name, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            positions = [await consumer.position(tp) for tp in tps]
            if all(pos >= end[tp] for pos, tp in zip(positions, tps, strict=True)):
                break
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                out.extend(messages)
        return out
    finally:
        await consumer.stop()


def read_json_topic(settings: Settings, topic: str) -> list[dict[str, Any]]:
    messages = asyncio.run(read_topic(settings, settings.topic(topic)))
    return [json.loads(m.value) for m in messages if m.value is not None]


def wait_for(predicate: Any, timeout_s: float, interval_s: float = 1.0, what: str = "condition") -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if predicate():
            return time.monotonic() - start
        time.sleep(interval_s)
    raise TimeoutError(f"{what} not met within {timeout_s}s")


def ids(records: Iterable[dict[str, Any]], key: str = "request_id") -> list[str]:
    return [str(r[key]) for r in records]
