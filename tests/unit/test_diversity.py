"""MMR re-ranking and intra-list diversity on hand-built cases, and the recommender's wire-in."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream.diversity import ItemSimilarity, diversify, intra_list_diversity, jaccard, mmr, similarity_from
from stream.records import RecommendedItem
from tests.unit.test_recommend import FakeRanker, buyer, make, query
from workers.ranker_client import RankRequest

# Four items: a and a2 share genre x; b and c each have their own.
GENRES = {"a": ["x"], "a2": ["x"], "b": ["y"], "c": ["z"]}
SIM = similarity_from({}, GENRES)
IDS = ["a", "a2", "b", "c"]
RELEVANCE = [1.0, 0.9, 0.8, 0.7]


def by_index(a: int, b: int) -> float:
    return SIM(IDS[a], IDS[b])


def ranked(ids: list[str], scores: list[float]) -> list[RecommendedItem]:
    return [
        RecommendedItem(item_id=i, score=s, rank=r, reason=f"reason {i}")
        for r, (i, s) in enumerate(zip(ids, scores, strict=True), start=1)
    ]


# --- similarity ---------------------------------------------------------------------------------------


def test_jaccard_by_hand() -> None:
    assert jaccard({"a", "b"}, {"b", "c"}) == 1 / 3
    assert jaccard({"a"}, {"a"}) == 1.0
    assert jaccard({"a"}, {"b"}) == 0.0
    assert jaccard(set(), set()) == 0.0


def test_cosine_when_both_have_vectors_else_jaccard_of_genres() -> None:
    vectors = {"p": np.array([1.0, 0.0]), "q": np.array([3.0, 4.0]), "r": np.array([-1.0, 0.0])}
    genres = {"p": ["x"], "q": ["y"], "r": ["x"], "s": ["x", "y"]}
    sim = similarity_from(vectors, genres)
    assert sim("p", "q") == pytest.approx(0.6)  # cosine, although they share no genre
    assert sim("p", "r") == 0.0  # cosine -1 clipped: opposite vectors are not "similar"
    assert sim("p", "s") == 0.5  # s has no vector: Jaccard {x} vs {x, y}
    assert sim("s", "zzz") == 0.0  # unknown item: no genres, no vector


def test_item_similarity_looks_each_item_up_once() -> None:
    lookups: list[str] = []

    def vector_of(item_id: str) -> np.ndarray | None:
        lookups.append(item_id)
        return np.ones(2)

    sim = ItemSimilarity(vector_of, lambda _: ())
    for _ in range(3):
        assert sim("p", "q") == pytest.approx(1.0)
    assert sorted(lookups) == ["p", "q"]


# --- MMR ---------------------------------------------------------------------------------------


def test_lambda_one_is_the_ranked_order() -> None:
    assert mmr(RELEVANCE, by_index, 1.0, 4) == [0, 1, 2, 3]
    assert mmr([0.5, 0.5, 0.5, 0.1], by_index, 1.0, 3) == [0, 1, 2]  # ties keep the ranked order


def test_lambda_zero_picks_the_most_dissimilar() -> None:
    # The first pick has nothing to differ from (all gains 0): the top item. Then a2 is a copy of a
    # (similarity 1) while b and c are unlike anything picked: b, then c, and a2 last.
    assert mmr(RELEVANCE, by_index, 0.0, 4) == [0, 2, 3, 1]


def test_intermediate_lambda_by_hand() -> None:
    # Relevance scaled to [1, 2/3, 1/3, 0]. lam = 0.5, second step: a2 = 0.5*2/3 - 0.5*1 = -1/6,
    # b = 0.5*1/3 = 1/6, c = 0 -> b; third: a2 = -1/6, c = 0 -> c.
    assert mmr(RELEVANCE, by_index, 0.5, 4) == [0, 2, 3, 1]
    # lam = 0.8, second step: a2 = 0.8*2/3 - 0.2 = 1/3 beats b = 0.8/3 -> relevance wins.
    assert mmr(RELEVANCE, by_index, 0.8, 4) == [0, 1, 2, 3]


def test_k_bounds_and_a_bad_lambda() -> None:
    assert mmr(RELEVANCE, by_index, 0.5, 0) == []
    assert mmr(RELEVANCE, by_index, 0.5, 2) == [0, 2]
    assert sorted(mmr(RELEVANCE, by_index, 0.5, 10)) == [0, 1, 2, 3]
    assert mmr([], by_index, 0.5, 3) == []
    with pytest.raises(ValueError, match="lambda"):
        mmr(RELEVANCE, by_index, 1.5, 2)


def test_mmr_calls_similarity_at_most_k_times_n() -> None:
    n, k = 200, 10
    calls = 0

    def sim(a: int, b: int) -> float:
        nonlocal calls
        calls += 1
        return float((a % 7) == (b % 7))

    picks = mmr(list(np.linspace(1.0, 0.0, n)), sim, 0.3, k)
    assert len(set(picks)) == k
    assert calls <= k * n
    assert len({p % 7 for p in picks[:7]}) == 7  # the first seven cover every "genre" before repeating


def test_mmr_is_deterministic() -> None:
    rng = np.random.default_rng(0)
    rel = list(rng.random(40))
    vecs = {str(i): rng.normal(size=8) for i in range(40)}
    sim = similarity_from(vecs, {})
    runs = [mmr(rel, lambda a, b: sim(str(a), str(b)), 0.6, 10) for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]


def test_diversify_reorders_the_top_and_keeps_the_tail_for_exploration() -> None:
    items = ranked(IDS, RELEVANCE)
    out = diversify(items, 2, 0.0, SIM)
    assert [i.item_id for i in out] == ["a", "b", "a2", "c"]
    assert [i.rank for i in out] == [1, 2, 3, 4]
    assert [i.score for i in out] == [1.0, 0.8, 0.9, 0.7]  # scores and reasons stay the item's own
    assert out[1].reason == "reason b"
    assert diversify(items, 4, 1.0, SIM) == items


# --- intra-list diversity -----------------------------------------------------------------------------


def test_ild_by_hand() -> None:
    sim = similarity_from({}, {"p": ["a", "b"], "q": ["b", "c"], "r": ["d"]})
    # pairs: p-q 1 - 1/3, p-r 1, q-r 1 -> (2/3 + 2) / 3 = 8/9
    assert intra_list_diversity(["p", "q", "r"], sim) == pytest.approx(8 / 9)
    assert intra_list_diversity(["p"], sim) == 0.0
    assert intra_list_diversity([], sim) == 0.0
    assert intra_list_diversity(["p", "p"], sim) == 0.0


def test_ild_with_vectors_by_hand() -> None:
    s = math.sqrt(0.5)
    sim = similarity_from({"e1": np.array([1.0, 0.0]), "e2": np.array([0.0, 1.0]), "d": np.array([s, s])}, {})
    # e1-e2 cosine 0, e1-d and e2-d cosine sqrt(1/2): (1 + 2 * (1 - sqrt(1/2))) / 3
    assert intra_list_diversity(["e1", "e2", "d"], sim) == pytest.approx((1 + 2 * (1 - s)) / 3)


def test_mmr_raises_the_ild_of_the_top_k() -> None:
    items = ranked(IDS, RELEVANCE)
    plain = [i.item_id for i in items[:2]]
    diverse = [i.item_id for i in diversify(items, 2, 0.3, SIM)[:2]]
    assert intra_list_diversity(plain, SIM) == 0.0
    assert intra_list_diversity(diverse, SIM) == 1.0


# --- wire-in ---------------------------------------------------------------------------------------


async def test_recommender_applies_mmr_only_when_lambda_is_below_one() -> None:
    def score(r: RankRequest) -> np.ndarray:
        return np.arange(len(r.item_texts), dtype=np.float32)[::-1].copy()  # the blend's order

    plain, _, catalog = make(FakeRanker(score=score))
    diverse, _, _ = make(FakeRanker(score=score), mmr_lambda=0.0)
    [a] = await plain.recommend([(query(k=5), buyer())])
    [b] = await diverse.recommend([(query(k=5), buyer())])
    assert [i.rank for i in b.items] == [1, 2, 3, 4, 5]
    assert a.items[0].item_id == b.items[0].item_id  # MMR starts from the most relevant

    def genres(item_id: str) -> list[str]:
        return catalog.items[item_id].categories

    sim = similarity_from({}, {i: genres(i) for i in catalog.items})
    # Five genres in the catalog: the ranked top 5 repeats Action, pure diversity shows all five.
    assert len({genres(i.item_id)[0] for i in a.items}) == 3
    assert len({genres(i.item_id)[0] for i in b.items}) == 5
    assert intra_list_diversity([i.item_id for i in b.items], sim) > intra_list_diversity(
        [i.item_id for i in a.items], sim
    )
    assert all(i.propensity is None for i in b.items)
