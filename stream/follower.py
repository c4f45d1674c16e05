"""Every worker's view of the item tables: it follows their changelog topics, all partitions.

``items``, ``item-vectors`` and ``item-stats`` are partitioned tables with one writer per item (the
worker that owns the item's partition). Candidate generation needs all of them on every worker, so
each worker reads the three changelogs in full with a group-less consumer into derived caches:
the catalog index, the item statistics, and the popularity snapshot. (Faust's GlobalTable was
tried first: with two workers each kept only part of the other's writes.)
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from stream.catalog import CatalogIndex
from stream.itemstats import ItemStats
from stream.recommend import Snapshot
from stream.records import Item
from stream.settings import Settings
from workers.kafka_clients import client_kwargs

log = logging.getLogger(__name__)
TABLES = ("items", "item-vectors", "item-stats")


class ItemView:
    """The caches and how one changelog record updates them (pure apart from the caches)."""

    def __init__(self, catalog: CatalogIndex, snapshot: Snapshot) -> None:
        self.catalog = catalog
        self.snapshot = snapshot
        self.stats: dict[str, dict[str, Any]] = {}
        # Parsed on first read, kept with the record it came from: candidate generation reads ~20
        # anchors' statistics per query, while most changelog records are replaced unread.
        self._parsed: dict[str, tuple[dict[str, Any], ItemStats]] = {}
        self._vectors: dict[str, tuple[float, np.ndarray]] = {}

    def item_stats(self, item_id: str) -> ItemStats | None:
        raw = self.stats.get(item_id)
        if not raw:
            return None
        cached = self._parsed.get(item_id)
        if cached is not None and cached[0] is raw:
            return cached[1]
        parsed = ItemStats.from_dict(raw)
        self._parsed[item_id] = (raw, parsed)
        return parsed

    def apply(self, table: str, item_id: str, value: dict[str, Any] | None) -> None:
        if table == "items":
            if value is None:
                self.catalog.remove(item_id)
                self._vectors.pop(item_id, None)
                return
            current = self.catalog.get(item_id)
            if current is None or current.updated_at != value.get("updated_at"):
                self.catalog.upsert(Item.model_validate(value))
            self._attach_vector(item_id)
        elif table == "item-vectors":
            if value is None:
                self._vectors.pop(item_id, None)
                self.catalog.set_vector(item_id, None)
                return
            self._vectors[item_id] = (
                float(value["updated_at"]),
                np.asarray(value["vector"], dtype=np.float32),
            )
            self._attach_vector(item_id)
        elif table == "item-stats":
            if value is None:
                self._parsed.pop(item_id, None)
                self.stats.pop(item_id, None)
                self.snapshot.popularity.pop(item_id, None)
                return
            self.stats[item_id] = value
            self.snapshot.popularity[item_id] = int(value.get("total", 0))

    def _attach_vector(self, item_id: str) -> None:
        item = self.catalog.get(item_id)
        found = self._vectors.get(item_id)
        if item is not None and found is not None and found[0] == item.updated_at:
            self.catalog.set_vector(item_id, found[1])


class ChangelogFollower:
    """Reads the item tables' changelogs (every partition, from the start) into an ``ItemView``."""

    def __init__(self, settings: Settings, view: ItemView) -> None:
        self.settings = settings
        self.view = view
        self.caught_up = threading.Event()
        self.positions: dict[TopicPartition, int] = {}  # next offset to read, kept across preload → run
        self._topics = {f"{settings.app_id}-{t}-changelog": t for t in TABLES}

    async def preload(self) -> None:
        """Read what the changelogs hold now, before the worker starts: events applied right after a
        restart must see the catalog (their genres go into the profile). The changelogs must exist
        (a first start has nothing to preload)."""
        await self.run(asyncio.Event(), first_start_waits=False, until_caught_up=True)

    async def run(
        self, stop: asyncio.Event, first_start_waits: bool = True, until_caught_up: bool = False
    ) -> None:
        consumer = AIOKafkaConsumer(**client_kwargs(self.settings), group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            partitions = await self._partitions(consumer, stop, wait=first_start_waits)
            if not partitions:
                self.caught_up.set()
                return
            consumer.assign(partitions)
            for tp in partitions:
                if tp in self.positions:
                    consumer.seek(tp, self.positions[tp])
                else:
                    await consumer.seek_to_beginning(tp)
            ends = await consumer.end_offsets(partitions)
            pending = {tp for tp in partitions if ends[tp] > self.positions.get(tp, 0)}
            if not pending:
                self.caught_up.set()
            while not stop.is_set() and not (until_caught_up and self.caught_up.is_set()):
                batch = await consumer.getmany(timeout_ms=200, max_records=5000)
                for tp, messages in batch.items():
                    table = self._topics[tp.topic]
                    for msg in messages:
                        self._apply(table, msg.key, msg.value)
                    self.positions[tp] = messages[-1].offset + 1
                if not self.caught_up.is_set():
                    for tp in list(pending):
                        if await consumer.position(tp) >= ends[tp]:
                            pending.discard(tp)
                    if not pending:
                        self.caught_up.set()
                        log.info("item view caught up: %d items", len(self.view.catalog))
        finally:
            await consumer.stop()

    def _apply(self, table: str, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        try:
            item_id = str(orjson.loads(key))
            self.view.apply(table, item_id, orjson.loads(value) if value is not None else None)
        except (orjson.JSONDecodeError, ValueError, KeyError, TypeError) as exc:
            log.warning("skipping unreadable %s changelog record %r: %s", table, key[:64], exc)

    async def _partitions(
        self, consumer: AIOKafkaConsumer, stop: asyncio.Event, wait: bool = True
    ) -> list[TopicPartition]:
        """The changelog topics' partitions; with ``wait``, until Faust has created them."""
        while not stop.is_set():
            await consumer._client.force_metadata_update()  # a fresh topic's metadata
            found = {t: consumer.partitions_for_topic(t) for t in self._topics}
            if all(found.values()):
                return [TopicPartition(t, p) for t, ps in found.items() for p in sorted(ps or ())]
            if not wait:
                return []
            await asyncio.sleep(0.5)
        return []
