"""Which ranker versions may serve: the ``model-versions`` topic, followed by every worker.

The trainer (workers/loop/) writes a ``promoted`` record only after the version loaded in Triton and
passed its canary, ``refused`` when it did not, ``retired`` when it is taken out of service. A
variant asking for ``latest`` gets the highest promoted version of its model; with none promoted
yet, Triton's own choice (the version the committed config serves; once Triton has answered such
a request, stream/recommend.py sends that version by number, so an A/A test is one call). A pinned
version is routed as asked: pinning is an operator's explicit choice, and its failures fall back
like any Triton error.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from stream.experiment import LATEST
from stream.records import ModelVersion
from stream.settings import Settings
from workers.kafka_clients import client_kwargs

log = logging.getLogger(__name__)
TRITON_DEFAULT = ""  # an empty model_version lets Triton pick the version its config serves


class ModelRegistry:
    def __init__(self) -> None:
        self._records: dict[str, ModelVersion] = {}
        # Bumped on every change: a publish reloads every served version in Triton (their caches
        # start cold), so the worker primes them again when this moves.
        self.generation = 0

    def apply(self, record: ModelVersion) -> None:
        current = self._records.get(record.key)
        if current is None or current.ts <= record.ts:
            self._records[record.key] = record
            self.generation += int(current != record)

    def promoted(self, model: str) -> list[int]:
        return sorted(
            int(r.version) for r in self._records.values() if r.model == model and r.status == "promoted"
        )

    def resolve(self, model: str, policy: str) -> str:
        """The ``model_version`` to send for an arm's version policy (``latest`` or a number)."""
        if policy != LATEST:
            return policy
        versions = self.promoted(model)
        return str(versions[-1]) if versions else TRITON_DEFAULT


class RegistryFollower:
    """Reads the registry topic from the start, then follows it, into a ``ModelRegistry``."""

    def __init__(self, settings: Settings, registry: ModelRegistry) -> None:
        self.settings = settings
        self.registry = registry
        self.topic = settings.topic("model-versions")

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(**client_kwargs(self.settings), group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            tps: list[TopicPartition] = []
            while not tps and not stop.is_set():
                await consumer._client.force_metadata_update()  # a fresh topic's metadata
                tps = [
                    TopicPartition(self.topic, p)
                    for p in sorted(consumer.partitions_for_topic(self.topic) or ())
                ]
                if not tps:
                    await asyncio.sleep(1.0)
            if not tps:
                return
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=500, max_records=1000)
                for messages in batch.values():
                    for msg in messages:
                        self._apply(msg.value)
        finally:
            await consumer.stop()

    def _apply(self, value: bytes | None) -> None:
        if value is None:
            return
        try:
            record = ModelVersion.model_validate(orjson.loads(value))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            log.warning("skipping unreadable model-versions record: %s", str(exc)[:200])
            return
        before = self.registry.resolve(record.model, LATEST)
        self.registry.apply(record)
        after = self.registry.resolve(record.model, LATEST)
        if after != before:
            log.info("model %s: 'latest' now routes to version %s", record.model, after or "(Triton default)")
