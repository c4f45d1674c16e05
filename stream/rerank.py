"""Turn scored candidates into the final, explained list of ``k`` recommended items."""

from __future__ import annotations

import numpy as np

from stream.candidates import CandidateSet
from stream.catalog import CatalogIndex
from stream.explain import reason
from stream.records import RecommendedItem


def rerank(
    cands: CandidateSet,
    scores: np.ndarray,
    k: int,
    query: str,
    catalog: CatalogIndex,
) -> list[RecommendedItem]:
    """Order by ``scores`` (ties by the fallback blend, then id) and keep the top ``k``."""
    if len(scores) != len(cands.candidates):
        raise ValueError(f"{len(scores)} scores for {len(cands.candidates)} candidates")
    # Python floats once (the same values float() gives per element), not numpy scalars per key.
    values = np.asarray(scores, dtype=np.float64).tolist()
    fallback = np.asarray(cands.fallback, dtype=np.float64).tolist()
    order = sorted(
        range(len(values)),
        key=lambda r: (-values[r], -fallback[r], cands.candidates[r].signals.item_id),
    )[:k]
    return [
        RecommendedItem(
            item_id=cands.candidates[r].signals.item_id,
            score=round(values[r], 6),
            rank=rank,
            reason=reason(cands.candidates[r], cands.features[r], query, catalog, cands.top_genres),
        )
        for rank, r in enumerate(order, start=1)
    ]
