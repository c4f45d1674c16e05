"""Feature normalisation, the fallback blend, the reason strings, and the final reranking."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream.candidates import Candidate, CandidateSet
from stream.catalog import CatalogIndex
from stream.explain import MAX_QUERY_IN_REASON, reason
from stream.features import (
    FALLBACK_WEIGHTS,
    FEATURE_NAMES,
    N_FEATURES,
    Signals,
    fallback_scores,
    feature_matrix,
)
from stream.records import Item
from stream.rerank import rerank

T0 = 1_700_000_000.0
COL = {name: i for i, name in enumerate(FEATURE_NAMES)}


def make_catalog() -> CatalogIndex:
    catalog = CatalogIndex()
    for item_id, title, cats in [
        ("sw", "Star Wars", ["Action", "Sci-Fi"]),
        ("esb", "Empire Strikes Back", ["Action", "Sci-Fi"]),
        ("fargo", "Fargo", ["Crime", "Drama"]),
        ("plain", "No Genre", []),
    ]:
        catalog.upsert(Item(item_id=item_id, title=title, categories=cats, updated_at=T0))
    return catalog


def row(**values: float) -> np.ndarray:
    out = np.zeros(N_FEATURES, dtype=np.float32)
    for name, v in values.items():
        out[COL[name]] = v
    return out


def cand(item_id: str, anchor: str | None = None) -> Candidate:
    return Candidate(Signals(item_id=item_id), frozenset({"test"}), anchor)


# --- features ---------------------------------------------------------------------------------------


def test_feature_names_and_weights_agree() -> None:
    assert N_FEATURES == len(FEATURE_NAMES) == 8
    assert set(FALLBACK_WEIGHTS) == set(FEATURE_NAMES)


def test_feature_matrix_normalisation_by_hand() -> None:
    signals = [
        Signals("a", lexical=2, semantic=0.5, covisit=1, knn=0, affinity=3, trending=4, popularity=9),
        Signals("b", lexical=4, semantic=-0.3, covisit=0, knn=0, affinity=1, trending=2, popularity=0),
        Signals("c", semantic=1.7, popularity=99),
    ]
    m = feature_matrix(signals, cold_user=False, max_popularity=99)
    assert m.dtype == np.float32
    assert m.shape == (3, N_FEATURES)
    # lexical /4; semantic clipped to [0, 1]; covisit /1; knn all zero stays zero; affinity /3;
    # trending /4; popularity log1p(p) / log1p(99) → log(10)/log(100) = 0.5 for p = 9.
    np.testing.assert_allclose(m[0], [0.5, 0.5, 1.0, 0.0, 1.0, 1.0, 0.5, 0.0], rtol=1e-6)
    np.testing.assert_allclose(m[1], [1.0, 0.0, 0.0, 0.0, 1 / 3, 0.5, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(m[2], [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0], rtol=1e-6)


def test_cold_user_column_and_small_max_popularity() -> None:
    m = feature_matrix([Signals("a", popularity=0)], cold_user=True, max_popularity=0)
    # max_popularity below 1 is treated as 1, so nothing divides by log1p(0) = 0.
    assert np.isfinite(m).all()
    assert m[0, COL["cold_user"]] == 1.0
    assert m[0, COL["popularity"]] == 0.0


def test_feature_matrix_of_nothing() -> None:
    assert feature_matrix([], cold_user=True, max_popularity=10).shape == (0, N_FEATURES)


def test_fallback_scores_by_hand() -> None:
    features = np.array(
        [[0.5, 0.5, 1.0, 0.0, 1.0, 1.0, 0.5, 1.0], [0, 0, 0, 1.0, 0, 0, 0, 0], [0] * 8], dtype=np.float32
    )
    # 0.6*0.5 + 0.4*0.5 + 0.8 + 0.3 + 0.2 + 0.3*0.5 (+ cold_user weight 0) = 1.95; knn alone = 1.0.
    np.testing.assert_allclose(fallback_scores(features), [1.95, 1.0, 0.0], rtol=1e-6)


# --- explain.reason ---------------------------------------------------------------------------------


def test_reason_query_match() -> None:
    catalog = make_catalog()
    assert (
        reason(cand("sw"), row(lexical=1.0, popularity=0.5), "star wars", catalog, [])
        == "matches 'star wars'"
    )
    assert reason(cand("sw"), row(semantic=0.9), "space saga", catalog, []) == "matches 'space saga'"


def test_reason_truncates_a_long_query() -> None:
    query = "x" * (MAX_QUERY_IN_REASON + 10)
    text = reason(cand("sw"), row(lexical=1.0), query, make_catalog(), [])
    assert text == "matches '" + "x" * (MAX_QUERY_IN_REASON - 1) + "…'"
    exact = "y" * MAX_QUERY_IN_REASON
    assert reason(cand("sw"), row(lexical=1.0), exact, make_catalog(), []) == f"matches '{exact}'"


def test_reason_lexical_without_a_query_does_not_claim_a_match() -> None:
    text = reason(cand("sw"), row(lexical=1.0), "", make_catalog(), ["Action"])
    assert "matches" not in text
    assert text == "popular in Action"


def test_reason_because_you_watched_the_anchor() -> None:
    catalog = make_catalog()
    assert reason(cand("esb", anchor="sw"), row(knn=0.7), "", catalog, []) == "because you watched Star Wars"
    assert (
        reason(cand("esb", anchor="sw"), row(covisit=0.9), "", catalog, []) == "because you watched Star Wars"
    )
    # An anchor no longer in the catalog is still named.
    assert (
        reason(cand("esb", anchor="gone"), row(knn=0.7), "", catalog, []) == "because you watched item gone"
    )


def test_reason_behaviour_without_anchor_falls_through() -> None:
    assert reason(cand("esb"), row(knn=0.7), "", make_catalog(), []) == "popular with everyone"


def test_reason_you_like_genre_uses_the_items_first_liked_genre() -> None:
    catalog = make_catalog()
    assert reason(cand("sw"), row(affinity=1.0), "", catalog, ["Sci-Fi", "Action"]) == "you like Action"
    assert reason(cand("fargo"), row(affinity=1.0), "", catalog, ["Drama"]) == "you like Drama"


def test_reason_trending() -> None:
    catalog = make_catalog()
    assert reason(cand("fargo"), row(trending=1.0), "", catalog, ["Drama"]) == "trending in Drama"
    # No liked genre: the item's first genre; no genre at all: "trending now".
    assert reason(cand("fargo"), row(trending=1.0), "", catalog, []) == "trending in Crime"
    assert reason(cand("plain"), row(trending=1.0), "", catalog, []) == "trending now"


def test_reason_popular() -> None:
    catalog = make_catalog()
    assert reason(cand("sw"), row(popularity=1.0), "", catalog, ["Sci-Fi"]) == "popular in Sci-Fi"
    assert reason(cand("sw"), row(popularity=1.0), "", catalog, []) == "popular with everyone"
    assert reason(cand("sw"), row(), "", catalog, []) == "popular with everyone"
    assert reason(cand("unknown"), row(), "", catalog, ["Action"]) == "popular with everyone"


def test_reason_picks_the_strongest_weighted_evidence() -> None:
    catalog = make_catalog()
    # knn 0.5 * 1.0 = 0.5 beats lexical 0.6 * 0.6 = 0.36 even though the raw lexical value is higher.
    features = row(lexical=0.6, knn=0.5)
    assert reason(cand("esb", anchor="sw"), features, "star", catalog, []) == "because you watched Star Wars"
    # cold_user is never a reason, even at 1.
    assert reason(cand("sw"), row(cold_user=1.0, popularity=0.1), "", catalog, []) == "popular with everyone"


# --- rerank -------------------------------------------------------------------------------------------


def cand_set(item_ids: list[str], fallback: list[float]) -> CandidateSet:
    features = np.zeros((len(item_ids), N_FEATURES), dtype=np.float32)
    features[:, COL["popularity"]] = 1.0
    return CandidateSet([cand(i) for i in item_ids], features, np.array(fallback, dtype=np.float32), [])


def test_rerank_orders_by_score_and_numbers_ranks() -> None:
    cands = cand_set(["sw", "esb", "fargo", "plain"], [0.0, 0.0, 0.0, 0.0])
    out = rerank(cands, np.array([0.1, 0.9, 0.5, 0.3], dtype=np.float32), 3, "", make_catalog())
    assert [r.item_id for r in out] == ["esb", "fargo", "plain"]
    assert [r.rank for r in out] == [1, 2, 3]
    assert [r.score for r in out] == pytest.approx([0.9, 0.5, 0.3])
    assert all(r.reason == "popular with everyone" for r in out)


def test_rerank_ties_by_fallback_then_item_id() -> None:
    cands = cand_set(["c", "b", "a", "d"], [0.2, 0.7, 0.2, 0.1])
    out = rerank(cands, np.array([1.0, 1.0, 1.0, 2.0]), 4, "", make_catalog())
    # d has the best score; among the tied three, b has the best fallback, then a < c by id.
    assert [r.item_id for r in out] == ["d", "b", "a", "c"]


def test_rerank_k_larger_than_candidates_and_k_one() -> None:
    cands = cand_set(["a", "b"], [0.0, 0.0])
    scores = np.array([0.3, 0.6])
    assert [r.item_id for r in rerank(cands, scores, 10, "", make_catalog())] == ["b", "a"]
    assert [r.item_id for r in rerank(cands, scores, 1, "", make_catalog())] == ["b"]


def test_rerank_rounds_scores_and_handles_negative_ones() -> None:
    cands = cand_set(["a", "b"], [0.0, 0.0])
    out = rerank(cands, np.array([-1.23456789, -0.5]), 2, "", make_catalog())
    assert [r.item_id for r in out] == ["b", "a"]
    assert out[1].score == -1.234568
    assert isinstance(out[0].score, float)


def test_rerank_uses_each_candidates_own_reason() -> None:
    catalog = make_catalog()
    features = np.stack([row(lexical=1.0), row(knn=1.0)])
    cands = CandidateSet(
        [cand("sw"), cand("esb", anchor="fargo")], features, np.array([0.6, 1.0], np.float32), ["Action"]
    )
    out = rerank(cands, np.array([0.2, 0.8]), 2, "star", catalog)
    assert [(r.item_id, r.reason) for r in out] == [
        ("esb", "because you watched Fargo"),
        ("sw", "matches 'star'"),
    ]


def test_rerank_length_mismatch_raises() -> None:
    cands = cand_set(["a", "b"], [0.0, 0.0])
    with pytest.raises(ValueError, match="3 scores for 2 candidates"):
        rerank(cands, np.array([0.1, 0.2, 0.3]), 2, "", make_catalog())


def test_rerank_empty() -> None:
    assert rerank(cand_set([], []), np.zeros(0), 5, "", make_catalog()) == []


def test_fallback_scores_follow_weights_for_unit_rows() -> None:
    for i, name in enumerate(FEATURE_NAMES):
        features = np.zeros((1, N_FEATURES), np.float32)
        features[0, i] = 1.0
        assert math.isclose(float(fallback_scores(features)[0]), FALLBACK_WEIGHTS[name], rel_tol=1e-6)
