"""Ranking metrics for one held-out item per query, with a seeded tie-break.

Scores tie often (popularity counts, zero features); ranking ties by item id or position would
plant a signal, so every ranking breaks ties with a random key drawn from a seeded generator.
An item outside the ranked set (``-inf`` score, e.g. missed by the candidate stage) has rank
``inf``: it counts as a miss for every metric.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

K = 10
CANDIDATE_K = 50


def tie_keys(n: int, seed: int, case: int) -> np.ndarray:
    return np.random.default_rng([seed, case]).random(n)


def order(scores: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Indices best first: higher score, then the random key; ``-inf`` rows are left out."""
    idx = np.lexsort((keys, -scores))
    return idx[np.isfinite(scores[idx])]


def rank_of(scores: np.ndarray, target: int, keys: np.ndarray) -> float:
    """1-based rank of ``target`` under ``order``; ``inf`` when its score is ``-inf``."""
    s = scores[target]
    if not np.isfinite(s):
        return math.inf
    better = int(np.sum(scores > s))
    tied = int(np.sum((scores == s) & (keys < keys[target])))
    return float(better + tied + 1)


def ndcg(rank: float, k: int = K) -> float:
    return 1.0 / math.log2(rank + 1) if rank <= k else 0.0


def recall(rank: float, k: int = K) -> float:
    return 1.0 if rank <= k else 0.0


def mrr(rank: float) -> float:
    return 0.0 if math.isinf(rank) else 1.0 / rank


@dataclass
class Tally:
    """Accumulates per-query results for one method (and one segment)."""

    ranks: list[float]
    in_candidates: list[bool]
    top: set[int]

    @classmethod
    def empty(cls) -> Tally:
        return cls([], [], set())

    def add(self, rank: float, in_candidates: bool, top_k: Iterable[int]) -> None:
        self.ranks.append(rank)
        self.in_candidates.append(in_candidates)
        self.top.update(int(i) for i in top_k)

    def summary(self, catalog_size: int) -> dict[str, float]:
        n = max(len(self.ranks), 1)
        return {
            "ndcg@10": sum(ndcg(r) for r in self.ranks) / n,
            "recall@10": sum(recall(r) for r in self.ranks) / n,
            "mrr": sum(mrr(r) for r in self.ranks) / n,
            "candidate_recall@k": sum(self.in_candidates) / n,
            "coverage": len(self.top) / max(catalog_size, 1),
            "queries": float(len(self.ranks)),
        }


def mean_ndcg(ranks: Sequence[float]) -> float:
    return sum(ndcg(r) for r in ranks) / max(len(ranks), 1)
