"""Ranking metrics against hand-computed values (one relevant item per query, seeded ties)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workers.evaluation import metrics


def test_ndcg_recall_mrr_by_hand() -> None:
    assert metrics.ndcg(1) == 1.0
    assert metrics.ndcg(3) == pytest.approx(0.5)  # 1 / log2(4)
    assert metrics.ndcg(10) == pytest.approx(1 / math.log2(11))
    assert metrics.ndcg(11) == 0.0
    assert metrics.recall(10) == 1.0 and metrics.recall(11) == 0.0
    assert metrics.mrr(4) == 0.25
    assert metrics.mrr(math.inf) == 0.0 and metrics.ndcg(math.inf) == 0.0


def test_rank_counts_strictly_better_items() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.3])
    keys = np.zeros(4)
    assert metrics.rank_of(scores, 2, keys) == 2.0
    assert metrics.rank_of(scores, 1, keys) == 1.0


def test_ties_are_broken_by_the_seeded_key_not_position() -> None:
    scores = np.ones(5)
    keys = np.array([0.9, 0.1, 0.5, 0.3, 0.7])
    assert metrics.rank_of(scores, 1, keys) == 1.0
    assert metrics.rank_of(scores, 0, keys) == 5.0
    assert list(metrics.order(scores, keys)) == [1, 3, 2, 4, 0]
    # the same seed and case give the same keys; another case gives others
    assert np.array_equal(metrics.tie_keys(5, 0, 3), metrics.tie_keys(5, 0, 3))
    assert not np.array_equal(metrics.tie_keys(5, 0, 3), metrics.tie_keys(5, 0, 4))


def test_items_outside_the_ranked_set_are_misses() -> None:
    scores = np.array([0.5, -np.inf, 0.2])
    keys = np.zeros(3)
    assert metrics.rank_of(scores, 1, keys) == math.inf
    assert list(metrics.order(scores, keys)) == [0, 2]


def test_tally_summary_by_hand() -> None:
    tally = metrics.Tally.empty()
    tally.add(1.0, True, [0, 1])  # ndcg 1, mrr 1
    tally.add(3.0, True, [1, 2])  # ndcg 0.5, mrr 1/3
    tally.add(math.inf, False, [3])  # miss
    tally.add(20.0, True, [])  # outside top 10: mrr 1/20 only
    out = tally.summary(catalog_size=8)
    assert out["ndcg@10"] == pytest.approx((1 + 0.5) / 4)
    assert out["recall@10"] == pytest.approx(2 / 4)
    assert out["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 20) / 4)
    assert out["candidate_recall@k"] == pytest.approx(3 / 4)
    assert out["coverage"] == pytest.approx(4 / 8)
