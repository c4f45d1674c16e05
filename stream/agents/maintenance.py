"""Periodic refresh of the derived caches (catalog index, popularity/trending) from global tables."""

from __future__ import annotations

from typing import Any

import numpy as np

from stream.app import app, settings
from stream.itemstats import BUCKET_S
from stream.records import Item
from stream.runtime import catalog, metrics, snapshot
from stream.tables import item_stats, item_vectors, items, profiles


@app.timer(interval=1.0)
async def sync_catalog() -> None:
    stored: dict[str, Any] = dict(items.items())
    for item_id in [i for i in catalog.items if i not in stored]:
        catalog.remove(item_id)
    for item_id, raw in stored.items():
        if not raw:
            continue
        current = catalog.get(item_id)
        if current is None or current.updated_at != raw.get("updated_at"):
            catalog.upsert(Item.model_validate(raw))
    for item_id, raw in item_vectors.items():
        item = catalog.get(item_id)
        if item is None or not raw or catalog.has_vector(item_id):
            continue
        if raw.get("updated_at") == item.updated_at:
            catalog.set_vector(item_id, np.asarray(raw["vector"], dtype=np.float32))


@app.timer(interval=2.0)
async def refresh_snapshot() -> None:
    popularity: dict[str, int] = {}
    buckets: dict[str, dict[str, int]] = {}
    latest = 0
    for item_id, raw in item_stats.items():
        if not raw:
            continue
        popularity[item_id] = int(raw.get("total", 0))
        buckets[item_id] = raw.get("buckets", {})
        if buckets[item_id]:
            latest = max(latest, *(int(b) for b in buckets[item_id]))
    first = latest - int(settings.trending_window_s // BUCKET_S) + 1
    snapshot.popularity = popularity
    snapshot.trending = {
        i: n for i, bs in buckets.items() if (n := sum(c for b, c in bs.items() if int(b) >= first)) > 0
    }
    snapshot.watermark = (latest + 1) * BUCKET_S
    metrics.table_size.labels(table="items").set(len(catalog))
    metrics.table_size.labels(table="item_stats").set(len(popularity))
    metrics.table_size.labels(table="profiles").set(sum(1 for _ in profiles))
