"""Diversity: MMR re-ranking of a scored list and the intra-list diversity of what is shown.

Similarity of two items is the cosine of their embeddings when both have one (negatives clipped
to 0: they carry no evidence of similarity, as in stream/features.py), else the Jaccard index of
their genres. Both lie in [0, 1]; so does ``1 - similarity``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from stream.records import RecommendedItem

Similarity = Callable[[int, int], float]


class ItemSimilarity:
    """Similarity of item ids from their vectors (looked up once) and their genres."""

    def __init__(
        self,
        vector_of: Callable[[str], np.ndarray | None],
        genres_of: Callable[[str], Sequence[str]],
    ) -> None:
        self._vector_of = vector_of
        self._genres_of = genres_of
        self._unit: dict[str, np.ndarray | None] = {}
        self._genres: dict[str, frozenset[str]] = {}

    def __call__(self, a: str, b: str) -> float:
        va, vb = self._unit_vector(a), self._unit_vector(b)
        if va is not None and vb is not None:
            return min(max(float(va @ vb), 0.0), 1.0)
        return jaccard(self._genre_set(a), self._genre_set(b))

    def _unit_vector(self, item_id: str) -> np.ndarray | None:
        if item_id not in self._unit:
            vec = self._vector_of(item_id)
            norm = float(np.linalg.norm(vec)) if vec is not None else 0.0
            self._unit[item_id] = None if vec is None or norm == 0.0 else np.asarray(vec, np.float64) / norm
        return self._unit[item_id]

    def _genre_set(self, item_id: str) -> frozenset[str]:
        if item_id not in self._genres:
            self._genres[item_id] = frozenset(self._genres_of(item_id))
        return self._genres[item_id]


def jaccard(a: frozenset[str] | set[str], b: frozenset[str] | set[str]) -> float:
    """Size of the intersection over size of the union; two items without genres are not similar (0.0)."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def mmr(relevance: Sequence[float], similarity: Similarity, lam: float, k: int) -> list[int]:
    """Indices of ``k`` picks by maximal marginal relevance, in pick order.

    Each step picks ``argmax lam * rel[i] - (1 - lam) * max_{j picked} sim(i, j)``, ties to the lower
    index. Relevance is min-max scaled to [0, 1] so ``lam`` weighs it against similarity on the same
    scale. With ``lam == 1`` and ``relevance`` non-increasing (a ranked list) the result is the input
    order. ``similarity`` is called O(k * n) times.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda must be in [0, 1], got {lam}")
    n = len(relevance)
    k = min(max(k, 0), n)
    if k == 0:
        return []
    rel = np.asarray(relevance, dtype=np.float64)
    span = float(rel.max() - rel.min())
    rel = (rel - rel.min()) / span if span > 0 else np.zeros(n)
    max_sim = np.zeros(n)
    chosen = np.zeros(n, dtype=bool)
    picks: list[int] = []
    for _ in range(k):
        gain = np.where(chosen, -np.inf, lam * rel - (1.0 - lam) * max_sim)
        best = int(np.argmax(gain))  # argmax returns the first maximum: ties go to the lower index
        picks.append(best)
        chosen[best] = True
        if lam < 1.0 and len(picks) < k:
            for i in np.flatnonzero(~chosen):
                max_sim[i] = max(max_sim[i], similarity(int(i), best))
    return picks


def diversify(
    items: Sequence[RecommendedItem], k: int, lam: float, similarity: Callable[[str, str], float]
) -> list[RecommendedItem]:
    """Reorder a ranked list: the first ``k`` by MMR, then the rest in their ranked order.

    Ranks are renumbered 1..n; scores and reasons are kept. The tail stays available to exploration.
    """
    picks = mmr(
        [i.score for i in items],
        lambda a, b: similarity(items[a].item_id, items[b].item_id),
        lam,
        k,
    )
    taken = set(picks)
    order = picks + [r for r in range(len(items)) if r not in taken]
    return [items[r].model_copy(update={"rank": rank}) for rank, r in enumerate(order, start=1)]


def intra_list_diversity(item_ids: Sequence[str], similarity: Callable[[str, str], float]) -> float:
    """Mean over all pairs of ``1 - similarity``; 0.0 for fewer than two items."""
    n = len(item_ids)
    if n < 2:
        return 0.0
    total = sum(1.0 - similarity(item_ids[i], item_ids[j]) for i in range(n) for j in range(i + 1, n))
    return total / (n * (n - 1) / 2)


def similarity_from(vectors: Mapping[str, np.ndarray], genres: Mapping[str, Sequence[str]]) -> ItemSimilarity:
    """An ``ItemSimilarity`` over plain mappings (offline evaluation and tests)."""
    return ItemSimilarity(vectors.get, lambda i: genres.get(i, ()))
