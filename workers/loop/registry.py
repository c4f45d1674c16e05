"""The model registry: ``ModelVersion`` records on the compacted ``model-versions`` topic (app env).

Workers route an arm's ``latest`` to the highest ``promoted`` version; only ``publish`` and
``retire`` write here, after Triton has (un)loaded the version.
"""

from __future__ import annotations

import asyncio
import time

from stream.records import InvalidMessage, ModelStatus, ModelVersion, parse
from stream.settings import Settings
from workers.kafka_clients import ensure_topics, producer
from workers.loop.examples import read_topic


def record(
    model: str,
    version: int | str,
    status: ModelStatus,
    reason: str = "",
    metrics: dict[str, float] | None = None,
) -> ModelVersion:
    return ModelVersion(
        model=model,
        version=str(version),
        status=status,
        reason=reason[:2000],
        metrics=metrics or {},
        ts=time.time(),
    )


async def write_async(settings: Settings, entry: ModelVersion) -> None:
    await ensure_topics(settings)
    prod = producer(settings)
    await prod.start()
    try:
        await prod.send_and_wait(
            settings.topic("model-versions"), key=entry.key.encode(), value=entry.to_json()
        )
    finally:
        await prod.stop()


def write(settings: Settings, entry: ModelVersion) -> ModelVersion:
    asyncio.run(write_async(settings, entry))
    return entry


def read(settings: Settings) -> dict[str, ModelVersion]:
    """The registry as it stands: the latest record per ``model:version``."""
    latest: dict[str, ModelVersion] = {}
    for _key, value in asyncio.run(read_topic(settings, settings.topic("model-versions"))):
        try:
            entry = parse(ModelVersion, value)
        except InvalidMessage:
            continue
        latest[entry.key] = entry
    return latest


def latest_promoted(entries: dict[str, ModelVersion], model: str) -> str | None:
    promoted = [int(e.version) for e in entries.values() if e.model == model and e.status == "promoted"]
    return str(max(promoted)) if promoted else None
