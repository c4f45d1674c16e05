"""The candidate stage: cheap retrieval from several sources, merged, scored, and capped.

Sources: (a) the query against the catalog (BM25 and embedding similarity), (b) co-visitation and
item-kNN neighbours of the user's recent items, (c) the user's genre affinities, (d) trending.
Already-consumed items are filtered. The merged set is ordered by the fallback blend and cut to
``limit``; the same order is the fallback ranking when the ranker is unavailable.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from stream.catalog import CatalogIndex
from stream.features import Signals, fallback_scores, feature_matrix
from stream.itemstats import ItemStats, knn_similarity
from stream.profile import Profile, interacted, recent_distinct


@dataclass(frozen=True)
class CandidateParams:
    limit: int = 50
    per_source: int = 40
    recent_for_neighbors: int = 20
    recency_decay: float = 0.85
    top_genres: int = 3


@dataclass(frozen=True, slots=True)
class Candidate:
    signals: Signals
    sources: frozenset[str]
    anchor: str | None = None  # the recent item that contributed most to covisit/knn


@dataclass
class CandidateSet:
    candidates: list[Candidate]
    features: np.ndarray  # rows aligned with ``candidates``, columns = FEATURE_NAMES
    fallback: np.ndarray  # the fallback blend per row; ``candidates`` is sorted by it
    top_genres: list[str] = field(default_factory=list)


@dataclass
class _Acc:
    sources: set[str] = field(default_factory=set)
    covisit: float = 0.0
    knn: float = 0.0
    anchor: str | None = None
    anchor_weight: float = 0.0


def top_genres(profile: Profile, now: float, n: int) -> list[str]:
    affinities = profile.decayed_affinities(now)
    return [g for g, _ in sorted(affinities.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def gather(
    profile: Profile,
    query: str,
    query_vec: np.ndarray | None,
    catalog: CatalogIndex,
    item_stats: Callable[[str], ItemStats | None],
    popularity: Mapping[str, int],
    trending: Mapping[str, int],
    now: float,
    params: CandidateParams | None = None,
) -> CandidateSet:
    params = params or CandidateParams()
    exclude = interacted(profile)
    acc: dict[str, _Acc] = {}

    def add(item_id: str, source: str) -> _Acc | None:
        if item_id in exclude or item_id not in catalog:
            return None
        entry = acc.get(item_id)
        if entry is None:
            entry = acc[item_id] = _Acc()
        entry.sources.add(source)
        return entry

    # (a) the query against the catalog
    lexical = catalog.bm25(query) if query else {}
    semantic = catalog.cosine(query_vec) if query_vec is not None else {}
    for item_id in _top(lexical, params.per_source):
        add(item_id, "query")
    for item_id in _top(semantic, params.per_source):
        add(item_id, "query")

    # (b) neighbours of recent items, weighted by how recent the anchor is
    for position, anchor in enumerate(recent_distinct(profile, params.recent_for_neighbors)):
        stats = item_stats(anchor)
        if stats is None:
            continue
        weight = params.recency_decay**position
        for other, cooc in stats.cooc.items():
            entry = add(other, "behaviour")
            if entry is None:
                continue
            other_stats_total = popularity.get(other, 0)
            sim = knn_similarity(cooc, stats.total, other_stats_total)
            near = stats.near.get(other, 0.0)
            entry.knn += weight * sim
            entry.covisit += weight * near
            contribution = weight * (sim + near / max(stats.total, 1))
            if contribution > entry.anchor_weight:
                entry.anchor, entry.anchor_weight = anchor, contribution

    # (c) the user's genres: their most popular items
    genres = top_genres(profile, now, params.top_genres)
    for genre in genres:
        members = catalog.in_category(genre)
        for item_id in heapq.nlargest(
            params.per_source // 2, members, key=lambda i: (popularity.get(i, 0), i)
        ):
            add(item_id, "affinity")

    # (d) trending (and popularity for users with nothing else)
    for item_id in _top(trending, params.per_source // 2):
        add(item_id, "trending")
    if len(acc) < params.limit:
        for item_id in _top(popularity, params.limit):
            add(item_id, "popular")
    if len(acc) < params.limit:
        # A cold start with no statistics yet: the newest items fill the list.
        for item_id in catalog.newest(params.limit + len(exclude)):
            add(item_id, "new")
            if len(acc) >= params.limit:
                break

    affinities = profile.decayed_affinities(now)
    signals = []
    for item_id, entry in acc.items():
        item = catalog.get(item_id)
        categories = item.categories if item is not None else []
        affinity = sum(affinities.get(c, 0.0) for c in categories) / max(len(categories), 1) ** 0.5
        signals.append(
            Signals(
                item_id=item_id,
                lexical=lexical.get(item_id, 0.0),
                semantic=semantic.get(item_id, 0.0),
                covisit=entry.covisit,
                knn=entry.knn,
                affinity=affinity,
                trending=float(trending.get(item_id, 0)),
                popularity=float(popularity.get(item_id, 0)),
            )
        )
    max_pop = float(max(popularity.values(), default=1))
    features = feature_matrix(signals, cold_user=profile.is_cold, max_popularity=max_pop)
    blend = fallback_scores(features)
    # Stable order: by blend, then item id, so equal inputs always give equal outputs.
    order = sorted(range(len(signals)), key=lambda r: (-float(blend[r]), signals[r].item_id))[: params.limit]
    candidates = [
        Candidate(signals[r], frozenset(acc[signals[r].item_id].sources), acc[signals[r].item_id].anchor)
        for r in order
    ]
    return CandidateSet(candidates, features[order], blend[order], genres)


def _top(scores: Mapping[str, float] | Mapping[str, int], n: int) -> list[str]:
    return [k for k, v in heapq.nlargest(n, scores.items(), key=lambda kv: (kv[1], kv[0])) if v > 0]
