"""The worker's shared runtime: metrics, the derived item view, and the services owning network clients.

Nothing here is per-user state (that lives in tables); the item view is a cache derived from the
item tables' changelogs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import faust
from prometheus_client import REGISTRY

from stream.answered import AnsweredRequests
from stream.app import app, settings
from stream.catalog import CatalogIndex
from stream.follower import ChangelogFollower, ItemView
from stream.metrics import Metrics
from stream.recommend import Recommender, Snapshot
from stream.registry import ModelRegistry, RegistryFollower
from workers.ranker_client import RankerClient


@dataclass
class Warmup:
    """Which catalog items have been through the ranker since its last recovery (its cache is warm)."""

    primed_items: set[str] = field(default_factory=set)
    recoveries: int = 0
    registry_generation: int = 0

    def is_for(self, recoveries: int, registry_generation: int) -> bool:
        """Whether the primed items were primed since this recovery and registry change."""
        return (self.recoveries, self.registry_generation) == (recoveries, registry_generation)

    def follow(self, recoveries: int, registry_generation: int) -> None:
        """Start over after a recovery or a registry change: the reloaded models' caches are cold."""
        if not self.is_for(recoveries, registry_generation):
            self.primed_items.clear()
            self.recoveries, self.registry_generation = recoveries, registry_generation

    def primed(self, catalog: CatalogIndex, recoveries: int, registry_generation: int) -> bool:
        """Warm for the ranker as it is now: a recovery or a registry change since the items were
        primed means a reloaded model with a cold cache, even before the timer has followed it."""
        return (
            self.is_for(recoveries, registry_generation)
            and bool(len(catalog))
            and all(i in self.primed_items for i in catalog.items)
        )


metrics = Metrics.create(REGISTRY)
answered = AnsweredRequests()
warmup = Warmup()
catalog = CatalogIndex()
snapshot = Snapshot()


item_view = ItemView(catalog, snapshot)
follower = ChangelogFollower(settings, item_view)
ranker_client = RankerClient(settings, metrics)
registry = ModelRegistry()
registry_follower = RegistryFollower(settings, registry)
recommender = Recommender(settings, catalog, item_view.item_stats, snapshot, ranker_client, metrics, registry)


PRODUCER_BUFFER_MAX = 20_000


@app.task
async def tune_producer_buffer() -> None:
    # Batches write hundreds of table keys at once; the default buffer of 100 makes every batch wait.
    app.producer.buffer.max_messages = PRODUCER_BUFFER_MAX


class FollowingService(faust.Service):
    """Runs a follower (``run(stop)``) for as long as the worker runs."""

    def follow(self, stop: asyncio.Event) -> Coroutine[Any, Any, None]:
        raise NotImplementedError

    async def on_start(self) -> None:
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self.follow(self._stop))

    async def on_stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@app.service
class ItemViewService(FollowingService):
    """Follows the item tables' changelogs."""

    def follow(self, stop: asyncio.Event) -> Coroutine[Any, Any, None]:
        follower.caught_up.clear()  # the run continues from where the preload stopped
        return follower.run(stop)


@app.service
class ModelRegistryService(FollowingService):
    """Follows the model registry topic, so a promoted ranker version is routed to without a restart."""

    def follow(self, stop: asyncio.Event) -> Coroutine[Any, Any, None]:
        return registry_follower.run(stop)


@app.service
class RankerService(faust.Service):
    """Owns the Triton client's connection: opened when the worker starts, closed when it stops."""

    async def on_start(self) -> None:
        await ranker_client.start()

    async def on_stop(self) -> None:
        await ranker_client.close()
