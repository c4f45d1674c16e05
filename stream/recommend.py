"""Answering a batch of recommendation requests: candidates, one packed Triton call, fallback, reasons."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from stream.candidates import CandidateParams, CandidateSet, gather
from stream.catalog import CatalogIndex
from stream.itemstats import ItemStats
from stream.metrics import Metrics
from stream.profile import Profile, recent_titles
from stream.records import ModelInfo, Query, Recommendation
from stream.rerank import rerank
from stream.settings import Settings
from stream.text import item_text, user_text
from workers.ranker_client import RankerClient, RankerUnavailable, RankRequest

FALLBACK_MODEL = ModelInfo(name="fallback-blend", version="1")


@dataclass
class Snapshot:
    """Popularity and trending counts derived from the item-stats table, refreshed periodically."""

    popularity: dict[str, int] = field(default_factory=dict)
    trending: dict[str, int] = field(default_factory=dict)
    watermark: float = 0.0  # the latest event time seen in the statistics


def request_deadline(timestamps: Sequence[float], budget_s: float) -> float:
    """The monotonic time by which the batch must be answered: the budget counts from the oldest
    request's ``ts`` (time already spent queueing is spent), and never exceeds ``budget_s`` from now."""
    now_wall, now = time.time(), time.monotonic()
    remaining = min(timestamps) + budget_s - now_wall if timestamps else budget_s
    return now + min(max(remaining, 0.0), budget_s)


class Recommender:
    def __init__(
        self,
        settings: Settings,
        catalog: CatalogIndex,
        item_stats: Callable[[str], ItemStats | None],
        snapshot: Snapshot,
        client: RankerClient,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.item_stats = item_stats
        self.snapshot = snapshot
        self.client = client
        self.metrics = metrics
        self.params = CandidateParams(limit=settings.candidates_max)

    async def recommend(
        self, requests: Sequence[tuple[Query, Profile]], trigger: str = "query"
    ) -> list[Recommendation]:
        if not requests:
            return []
        deadline = request_deadline([q.ts for q, _ in requests], self.settings.ranker_deadline_ms / 1000.0)
        vectors = await self._embed_queries([q.text for q, _ in requests], deadline)
        sets = [
            gather(
                profile,
                query.text,
                vectors.get(query.text),
                self.catalog,
                self.item_stats,
                self.snapshot.popularity,
                self.snapshot.trending,
                now=query.ts,
                params=self.params if query.k <= self.params.limit else replace(self.params, limit=query.k),
            )
            for query, profile in requests
        ]
        scores, model, cause = await self._score(requests, sets, deadline)
        out = []
        for (query, _), cands, row_scores in zip(requests, sets, scores, strict=True):
            items = rerank(cands, row_scores, query.k, query.text, self.catalog)
            produced = time.time()
            out.append(
                Recommendation(
                    request_id=query.request_id,
                    user_id=query.user_id,
                    items=items,
                    model=model,
                    fallback=cause is not None,
                    produced_at=produced,
                    latency_ms=round(max(produced - query.ts, 0.0) * 1000.0, 3),
                    trigger="event" if trigger == "event" else "query",
                )
            )
        if cause is not None:
            self.metrics.fallbacks.labels(cause=cause).inc(len(out))
        return out

    async def _embed_queries(self, texts: Sequence[str], deadline: float) -> Mapping[str, np.ndarray]:
        unique = sorted({t for t in texts if t})
        if not unique:
            return {}
        # Retrieval may use at most half the budget: ranking must still fit.
        budget_end = time.monotonic() + (deadline - time.monotonic()) / 2
        try:
            vectors = await self.client.embed(unique, budget_end)
        except RankerUnavailable:
            return {}  # lexical and behaviour sources still answer
        return dict(zip(unique, vectors, strict=True))

    async def _score(
        self,
        requests: Sequence[tuple[Query, Profile]],
        sets: list[CandidateSet],
        deadline: float,
    ) -> tuple[list[np.ndarray], ModelInfo, str | None]:
        rank_requests = []
        for (query, profile), cands in zip(requests, sets, strict=True):
            titles = recent_titles(profile, self.catalog.items)
            texts = []
            for c in cands.candidates:
                item = self.catalog.get(c.signals.item_id)
                texts.append(item_text(item) if item is not None else c.signals.item_id)
            rank_requests.append(
                RankRequest(user_text(query.text, titles, cands.top_genres), texts, cands.features)
            )
        try:
            result = await self.client.rank(rank_requests, deadline)
        except RankerUnavailable as exc:
            return [c.fallback for c in sets], FALLBACK_MODEL, exc.cause
        self.metrics.model_version.labels(model=self.settings.ranker_model).set(
            float(result.model_version) if result.model_version.isdigit() else 0
        )
        return result.scores, ModelInfo(name=self.settings.ranker_model, version=result.model_version), None
