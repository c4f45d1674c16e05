"""Answering a batch of recommendation requests: candidates, one packed Triton call, fallback, reasons."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from stream.candidates import CandidateParams, CandidateSet, gather
from stream.catalog import CatalogIndex
from stream.diversity import ItemSimilarity, diversify
from stream.experiment import Arm, Experiment
from stream.exploration import explore
from stream.itemstats import ItemStats
from stream.metrics import Metrics
from stream.profile import Profile, recent_titles
from stream.records import Impression, ModelInfo, Query, Recommendation, RecommendedItem, ShownItem
from stream.registry import TRITON_DEFAULT, ModelRegistry
from stream.rerank import rerank
from stream.settings import Settings
from stream.text import user_text
from workers.ranker_client import RankerClient, RankerUnavailable, RankRequest, RankResult

FALLBACK_MODEL = ModelInfo(name="fallback-blend", version="1")
COVERAGE_TRACKED_MAX = 1_000_000  # distinct shown items tracked per variant (bounds memory)


@dataclass
class Snapshot:
    """Popularity and trending counts derived from the item-stats table, refreshed periodically."""

    popularity: dict[str, int] = field(default_factory=dict)
    trending: dict[str, int] = field(default_factory=dict)
    watermark: float = 0.0  # the latest event time seen in the statistics


@dataclass(frozen=True, slots=True)
class Answer:
    """A recommendation and its impression log entry (what was shown, and what the ranker saw)."""

    recommendation: Recommendation
    impression: Impression


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
        registry: ModelRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else ModelRegistry()
        self.catalog = catalog
        self.item_stats = item_stats
        self.snapshot = snapshot
        self.client = client
        self.metrics = metrics
        self.params = CandidateParams(limit=settings.candidates_max)
        self.experiment = Experiment(salt=settings.experiment_salt, variants=settings.variants)
        self._shown_items: dict[str, set[str]] = {}
        # The version Triton last answered a default ("") request with, and the (registry
        # generation, ranker recoveries) it was learned under. An arm on "latest" with nothing
        # promoted routes to it, so an A/A test (one arm pinned to that version) is one packed call,
        # not two; a registry change, a ranker recovery or a Triton error on it forgets it.
        self._served_default: tuple[int, int, str] | None = None

    async def recommend(
        self, requests: Sequence[tuple[Query, Profile]], trigger: str = "query"
    ) -> list[Recommendation]:
        return [a.recommendation for a in await self.answer(requests, trigger)]

    async def answer(self, requests: Sequence[tuple[Query, Profile]], trigger: str = "query") -> list[Answer]:
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
        variants = [self.experiment.assign(query.user_id) for query, _ in requests]
        contexts = [
            user_text(query.text, recent_titles(profile, self.catalog.items), cands.top_genres)
            for (query, profile), cands in zip(requests, sets, strict=True)
        ]
        # A "fallback" arm is ranked by the blend on purpose: not sent to Triton, not a failure.
        # The others are grouped by the ranker version their arm routes to: one packed call each.
        groups: dict[str, list[int]] = {}
        for r, v in enumerate(variants):
            if not v.arm.uses_fallback:
                groups.setdefault(self._route(v.arm.version), []).append(r)
        scores: list[np.ndarray] = [c.fallback for c in sets]
        models: list[ModelInfo] = [FALLBACK_MODEL] * len(requests)
        causes: list[str | None] = [None] * len(requests)
        results = await asyncio.gather(
            *(
                self._score([contexts[r] for r in rows], [sets[r] for r in rows], deadline, version)
                for version, rows in groups.items()
            )
        )
        for rows, (ranker_scores, model, cause) in zip(groups.values(), results, strict=True):
            for r, row in zip(rows, ranker_scores, strict=True):
                scores[r], models[r], causes[r] = row, model, cause
            if cause is not None:
                self.metrics.fallbacks.labels(cause=cause).inc(len(rows))
        out = []
        for r, ((query, _), cands, row_scores, variant) in enumerate(
            zip(requests, sets, scores, variants, strict=True)
        ):
            items, explored = self._shown(query, cands, row_scores, variant.arm)
            self.metrics.impressions.labels(variant=variant.name).inc(len(items))
            self.metrics.explored.labels(variant=variant.name).inc(int(explored))
            self.metrics.coverage.labels(variant=variant.name).set(self._cover(variant.name, items))
            produced = time.time()
            rec = Recommendation(
                request_id=query.request_id,
                user_id=query.user_id,
                items=items,
                model=models[r],
                fallback=causes[r] is not None,
                produced_at=produced,
                latency_ms=round(max(produced - query.ts, 0.0) * 1000.0, 3),
                trigger="event" if trigger == "event" else "query",
                variant=variant.name,
            )
            out.append(Answer(rec, self._impression(rec, query, cands, contexts[r])))
        return out

    def routed_versions(self) -> list[str]:
        """The ranker versions the arms route to now ("" = Triton's configured one)."""
        return sorted(
            {self._route(v.arm.version) for v in self.experiment.variants if not v.arm.uses_fallback}
        )

    async def prime(self, request: RankRequest, deadline: float) -> None:
        """Send ``request`` to every version the arms route to (the ranker's item caches warm up)."""
        for version in self.routed_versions() or [TRITON_DEFAULT]:
            await self._rank([request], deadline, version)

    def _route(self, policy: str) -> str:
        """The ``model_version`` to send for an arm's version policy."""
        version = self.registry.resolve(self.settings.ranker_model, policy)
        if version == TRITON_DEFAULT and self._served_default is not None:
            generation, recoveries, served = self._served_default
            if (generation, recoveries) == (self.registry.generation, self.client.recoveries):
                return served
        return version

    async def _rank(self, requests: Sequence[RankRequest], deadline: float, version: str) -> RankResult:
        """A ranker call (queries and priming alike), and what it says of Triton's default version."""
        try:
            result = await self.client.rank(requests, deadline, version)
        except RankerUnavailable as exc:
            learned = self._served_default
            if exc.cause == "triton_error" and learned is not None and learned[2] == version:
                self._served_default = None  # a restarted Triton may serve another version by default
            raise
        if version == TRITON_DEFAULT and result.model_version.isdigit():
            self._served_default = (self.registry.generation, self.client.recoveries, result.model_version)
        return result

    def _cover(self, variant: str, items: Sequence[RecommendedItem]) -> int:
        """Distinct items this variant has shown since the worker started (catalog coverage)."""
        seen = self._shown_items.setdefault(variant, set())
        if len(seen) < COVERAGE_TRACKED_MAX:
            seen.update(i.item_id for i in items)
        return len(seen)

    @staticmethod
    def _impression(rec: Recommendation, query: Query, cands: CandidateSet, context: str) -> Impression:
        row = {c.signals.item_id: n for n, c in enumerate(cands.candidates)}
        return Impression(
            request_id=rec.request_id,
            user_id=rec.user_id,
            ts=query.ts,
            variant=rec.variant,
            model=rec.model,
            fallback=rec.fallback,
            context=context,
            items=[
                ShownItem(
                    item_id=i.item_id,
                    rank=i.rank,
                    score=i.score,
                    propensity=1.0 if i.propensity is None else i.propensity,
                    features=[round(float(f), 6) for f in cands.features[row[i.item_id]]],
                )
                for i in rec.items
            ],
        )

    def _shown(
        self, query: Query, cands: CandidateSet, scores: np.ndarray, arm: Arm
    ) -> tuple[list[RecommendedItem], bool]:
        """The top ``k``: by score, then MMR when lambda < 1, then exploration when epsilon > 0."""
        lam = self.settings.mmr_lambda if arm.mmr_lambda is None else arm.mmr_lambda
        eps = self.settings.explore_epsilon if arm.explore_epsilon is None else arm.explore_epsilon
        if lam >= 1.0 and eps <= 0.0:
            return rerank(cands, scores, query.k, query.text, self.catalog), False
        items = rerank(cands, scores, len(cands.candidates), query.text, self.catalog)
        if lam < 1.0:
            similarity = ItemSimilarity(self.catalog.vector, self._categories)
            items = diversify(items, query.k, lam, similarity)
        if eps > 0.0:
            return explore(items, query.k, eps, query.request_id, self.settings.explore_slots)
        return items[: query.k], False

    def _categories(self, item_id: str) -> list[str]:
        item = self.catalog.get(item_id)
        return item.categories if item is not None else []

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
        self, contexts: Sequence[str], sets: list[CandidateSet], deadline: float, version: str = ""
    ) -> tuple[list[np.ndarray], ModelInfo, str | None]:
        rank_requests = []
        for context, cands in zip(contexts, sets, strict=True):
            texts = []
            for c in cands.candidates:
                text = self.catalog.text(c.signals.item_id)
                texts.append(text if text is not None else c.signals.item_id)
            rank_requests.append(RankRequest(context, texts, cands.features))
        try:
            result = await self._rank(rank_requests, deadline, version)
        except RankerUnavailable as exc:
            return [c.fallback for c in sets], FALLBACK_MODEL, exc.cause
        self.metrics.model_version.labels(model=self.settings.ranker_model).set(
            float(result.model_version) if result.model_version.isdigit() else 0
        )
        return result.scores, ModelInfo(name=self.settings.ranker_model, version=result.model_version), None
