"""The behaviour features the ranker sees beside the text, in one fixed order.

The live pipeline (stream/candidates.py) and offline training/evaluation build them with the same
code, so a model trained offline sees the same inputs when served.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter

import numpy as np

FEATURE_NAMES: tuple[str, ...] = (
    "lexical",  # BM25 of the query against the item text, divided by the best in the candidate set
    "semantic",  # cosine of query and item embeddings from the encoder (0 when there is no query)
    "covisit",  # recency-weighted co-visitation with the user's recent items, divided by the set's best
    "knn",  # recency-weighted cosine item-kNN over the user's last items, divided by the set's best
    "affinity",  # user's decayed genre affinity for the item's genres, divided by the set's best
    "trending",  # windowed interaction count, divided by the set's best
    "popularity",  # log1p(all-time count) / log1p(the catalog's largest count)
    "cold_user",  # 1 when the user has no history
)
N_FEATURES = len(FEATURE_NAMES)

# The fallback ranking: a fixed blend used when Triton is unavailable. Weights chosen on the
# offline harness (docs/ranker.md, "fallback" row); behaviour signals dominate as they do there.
FALLBACK_WEIGHTS: dict[str, float] = {
    "lexical": 0.6,
    "semantic": 0.4,
    "covisit": 0.8,
    "knn": 1.0,
    "affinity": 0.3,
    "trending": 0.2,
    "popularity": 0.3,
    "cold_user": 0.0,
}


@dataclass(frozen=True, slots=True)
class Signals:
    """Raw, un-normalised evidence for one candidate, gathered by the candidate stage."""

    item_id: str
    lexical: float = 0.0
    semantic: float = 0.0
    covisit: float = 0.0
    knn: float = 0.0
    affinity: float = 0.0
    trending: float = 0.0
    popularity: float = 0.0


# The raw columns before normalisation: the Signals fields but item_id and popularity, in order.
RAW_FEATURES: tuple[str, ...] = ("lexical", "semantic", "covisit", "knn", "affinity", "trending")
# One C-level getter per row instead of six attribute loads in a Python list.
_RAW_COLUMNS = attrgetter(*RAW_FEATURES)
_POPULARITY = attrgetter("popularity")


def feature_matrix(signals: list[Signals], cold_user: bool, max_popularity: float) -> np.ndarray:
    """Rows in ``signals`` order, columns in ``FEATURE_NAMES`` order, float32, all in [0, 1]."""
    if not signals:
        return np.zeros((0, N_FEATURES), dtype=np.float32)
    raw = np.array(list(map(_RAW_COLUMNS, signals)), dtype=np.float64)
    popularity = np.array(list(map(_POPULARITY, signals)), dtype=np.float64)
    return normalised_features(raw, popularity, cold_user, max_popularity)


def normalised_features(
    raw: np.ndarray, popularity: np.ndarray, cold_user: bool, max_popularity: float
) -> np.ndarray:
    """``feature_matrix`` from the raw columns: ``raw`` is (rows, 6) float64 in ``RAW_FEATURES``
    order, ``popularity`` the rows' all-time counts. ``raw`` is changed."""
    out = np.zeros((len(raw), N_FEATURES), dtype=np.float32)
    if not len(raw):
        return out
    raw[:, 1] = np.clip(raw[:, 1], 0.0, 1.0)  # cosine is already bounded; negatives carry no evidence
    for col in (0, 2, 3, 4, 5):
        top = raw[:, col].max()
        if top > 0:
            raw[:, col] /= top
    out[:, :6] = raw
    pop_scale = np.log1p(max(max_popularity, 1.0))
    out[:, 6] = np.log1p(popularity) / pop_scale
    out[:, 7] = 1.0 if cold_user else 0.0
    return out


def fallback_scores(features: np.ndarray) -> np.ndarray:
    weights = np.array([FALLBACK_WEIGHTS[name] for name in FEATURE_NAMES], dtype=np.float32)
    return features @ weights
