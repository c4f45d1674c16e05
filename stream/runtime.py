"""The worker's shared runtime: metrics, the derived catalog index and snapshots, and the Triton client.

Nothing here is per-user state (that lives in tables); these are caches derived from global tables
and the services that own network clients.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import faust
from prometheus_client import REGISTRY

from stream.app import app, settings
from stream.catalog import CatalogIndex
from stream.itemstats import ItemStats
from stream.metrics import Metrics
from stream.recommend import Recommender, Snapshot
from stream.tables import item_stats
from workers.ranker_client import RankerClient


@dataclass
class Warmup:
    """Which catalog items have been through the ranker since its last recovery (its cache is warm)."""

    primed_items: set[str] = field(default_factory=set)
    recoveries: int = 0

    def primed(self, catalog: CatalogIndex) -> bool:
        return bool(len(catalog)) and all(i in self.primed_items for i in catalog.items)


metrics = Metrics.create(REGISTRY)
warmup = Warmup()
catalog = CatalogIndex()
snapshot = Snapshot()


def lookup_item_stats(item_id: str) -> ItemStats | None:
    raw: Any = item_stats.get(item_id)
    return ItemStats.from_dict(raw) if raw else None


ranker_client = RankerClient(settings, metrics)
recommender = Recommender(settings, catalog, lookup_item_stats, snapshot, ranker_client, metrics)


PRODUCER_BUFFER_MAX = 20_000


@app.task
async def tune_producer_buffer() -> None:
    # Batches write hundreds of table keys at once; the default buffer of 100 makes every batch wait.
    app.producer.buffer.max_messages = PRODUCER_BUFFER_MAX


@app.service
class RankerService(faust.Service):
    """Owns the Triton client's connection: opened when the worker starts, closed when it stops."""

    async def on_start(self) -> None:
        await ranker_client.start()

    async def on_stop(self) -> None:
        await ranker_client.close()
