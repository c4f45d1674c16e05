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
from itertools import repeat

import numpy as np

from stream.catalog import CatalogIndex
from stream.features import Signals, fallback_scores, normalised_features
from stream.itemstats import ItemStats, knn_similarity
from stream.profile import Profile, interacted, recent_distinct
from stream.records import Item


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


@dataclass(slots=True)
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
    items = catalog.items
    acc: dict[str, _Acc] = {}

    def add(item_id: str, source: str) -> _Acc | None:
        if item_id in exclude or item_id not in items:
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
    _add_neighbours(
        acc,
        exclude,
        items,
        recent_distinct(profile, params.recent_for_neighbors),
        item_stats,
        popularity,
        params,
    )

    # (c) the user's genres: their most popular items. (popularity, id) pairs compare as the key
    # would (ids are unique), without a key call per member of a genre of hundreds.
    genres = top_genres(profile, now, params.top_genres)
    for genre in genres:
        members = catalog.in_category(genre)
        ranked = zip(map(popularity.get, members, repeat(0)), members, strict=True)
        for _, item_id in heapq.nlargest(params.per_source // 2, ranked):
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

    # Column by column, and a Signals record only for the rows kept: building one per gathered
    # item (hundreds a query, most of them cut) cost more than the blend itself.
    affinities = profile.decayed_affinities(now)
    ids = list(acc)
    entries = list(acc.values())
    lexical_col = list(map(lexical.get, ids, repeat(0.0)))
    semantic_col = list(map(semantic.get, ids, repeat(0.0)))
    covisit_col = [e.covisit for e in entries]
    knn_col = [e.knn for e in entries]
    affinity_col = [_affinity(affinities, items.get(i)) for i in ids]
    trending_col = [float(trending.get(i, 0)) for i in ids]
    popularity_col = [float(popularity.get(i, 0)) for i in ids]
    raw = np.array(
        [lexical_col, semantic_col, covisit_col, knn_col, affinity_col, trending_col], dtype=np.float64
    ).T.copy()
    max_pop = float(max(popularity.values(), default=1))
    features = pool_features(
        ids,
        raw,
        np.array(popularity_col, dtype=np.float64),
        cold_user=profile.is_cold,
        max_popularity=max_pop,
    )
    blend = fallback_scores(features)
    # Stable order: by blend, then item id, so equal inputs always give equal outputs. The blend as
    # Python floats once (the same values as float() of each element), not a numpy scalar per key.
    blend_values = blend.tolist()
    order = sorted(range(len(ids)), key=lambda r: (-blend_values[r], ids[r]))[: params.limit]
    candidates = [
        Candidate(
            # Positional, in field order: a frozen dataclass built from keywords costs twice as much.
            Signals(
                ids[r],
                lexical_col[r],
                semantic_col[r],
                covisit_col[r],
                knn_col[r],
                affinity_col[r],
                trending_col[r],
                popularity_col[r],
            ),
            frozenset(entries[r].sources),
            entries[r].anchor,
        )
        for r in order
    ]
    return CandidateSet(candidates, features[order], blend[order], genres)


def pool_features(
    ids: list[str], raw: np.ndarray, popularity: np.ndarray, cold_user: bool, max_popularity: float
) -> np.ndarray:
    """The feature matrix of the pre-cut pool, rows in ``ids`` order: ``normalised_features``. Its own
    function so that bench/feature_ablation.py can widen it and see each query's whole pool."""
    return normalised_features(raw, popularity, cold_user=cold_user, max_popularity=max_popularity)


def _affinity(affinities: Mapping[str, float], item: Item | None) -> float:
    categories = item.categories if item is not None else []
    return sum(map(affinities.get, categories, repeat(0.0))) / max(len(categories), 1) ** 0.5


def _add_neighbours(
    acc: dict[str, _Acc],
    exclude: set[str],
    items: Mapping[str, object],
    anchors: list[str],
    item_stats: Callable[[str], ItemStats | None],
    popularity: Mapping[str, int],
    params: CandidateParams,
) -> None:
    """Source (b): co-visitation and item-kNN neighbours of the recent ``anchors`` (most recent first).

    The hot loop of the stage (~20 anchors x up to 120 neighbours, many already consumed), so the
    checks of ``gather``'s ``add`` are written out here rather than called per neighbour.
    """
    for position, anchor in enumerate(anchors):
        stats = item_stats(anchor)
        if stats is None:
            continue
        weight = params.recency_decay**position
        total, near_of = stats.total, stats.near
        covisit_scale = max(total, 1)
        for other, cooc in stats.cooc.items():
            if other in exclude or other not in items:
                continue
            entry = acc.get(other)
            if entry is None:
                entry = acc[other] = _Acc()
            entry.sources.add("behaviour")
            sim = knn_similarity(cooc, total, popularity.get(other, 0))
            near = near_of.get(other, 0.0)
            entry.knn += weight * sim
            entry.covisit += weight * near
            contribution = weight * (sim + near / covisit_scale)
            if contribution > entry.anchor_weight:
                entry.anchor, entry.anchor_weight = anchor, contribution


def _top(scores: Mapping[str, float] | Mapping[str, int], n: int) -> list[str]:
    """The ``n`` best keys with a positive score, by (score, key) descending."""
    # (score, key) pairs compare as the key function would (keys are unique), without its calls.
    pairs = zip(scores.values(), scores.keys(), strict=True)
    return [k for v, k in heapq.nlargest(n, pairs) if v > 0]
