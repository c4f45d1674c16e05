"""The worker's HTTP endpoints for ops: ``/metrics`` (Prometheus), ``/health`` (live), ``/ready``."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from stream.app import app
from stream.runtime import catalog, follower, metrics, ranker_client, recommender, registry, warmup


@app.page("/metrics")
async def metrics_page(web: Any, request: Any) -> Any:
    return web.bytes(generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])


@app.page("/health")
async def health_page(web: Any, request: Any) -> Any:
    return web.json({"status": "ok"})


def readiness() -> dict[str, Any]:
    """Ready = partitions assigned, tables recovered, not rebalancing."""
    tables: Any = app.tables
    recovered = tables.recovery.completed.is_set()
    assigned = len(app.consumer.assignment()) if app.consumer is not None else 0
    return {
        "ready": bool(recovered and assigned and not app.rebalancing and follower.caught_up.is_set()),
        "item_view_caught_up": follower.caught_up.is_set(),
        "recovered": recovered,
        "rebalancing": bool(app.rebalancing),
        "assigned_partitions": assigned,
        "catalog_items": len(catalog),
        "catalog_vectors": len(catalog.items) - len(catalog.missing_vectors()),
        "ranker_primed": warmup.primed(catalog, ranker_client.recoveries, registry.generation),
        "ranker_versions": recommender.routed_versions(),
    }


@app.page("/ready")
async def ready_page(web: Any, request: Any) -> Any:
    state = readiness()
    return web.json(state, status=200 if state["ready"] else 503)
