"""Epsilon-greedy exploration: identity at 0, replay-stable, the right rate, honest propensities."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import orjson
import pytest

from stream.exploration import EXPLORING_PREFIX, epsilon_greedy, explore, uniforms
from stream.records import ModelInfo, Recommendation, RecommendedItem, parse
from tests.unit.test_recommend import FakeRanker, buyer, make, query
from workers.ranker_client import RankRequest

IDS = [f"m{i}" for i in range(8)]
KNOWN_R1 = ("55026e8812ab31c8", "15cfce4f52bd55fa", "b4a44fb1cf781ea1")


def ranked(n: int = 8) -> list[RecommendedItem]:
    return [
        RecommendedItem(item_id=IDS[r], score=1.0 - r / 10, rank=r + 1, reason=f"popular in G{r}")
        for r in range(n)
    ]


def test_epsilon_zero_is_the_identity_with_propensity_one() -> None:
    for rid in ("r-1", "r-2", "r-3"):
        plan = epsilon_greedy(8, 4, 0.0, rid, slots=2)
        assert plan.order == [0, 1, 2, 3]
        assert plan.propensities == [1.0] * 4
        assert plan.explored_slot is None
    items, explored = explore(ranked(), 4, 0.0, "r-1")
    assert not explored
    assert [(i.item_id, i.rank, i.reason, i.propensity) for i in items] == [
        (f"m{r}", r + 1, f"popular in G{r}", 1.0) for r in range(4)
    ]


def test_nothing_to_explore_when_the_list_fits_in_k() -> None:
    for n in (0, 3, 4):
        plan = epsilon_greedy(n, 4, 1.0, "r-1")
        assert plan.order == list(range(n))
        assert plan.propensities == [1.0] * n


def test_the_same_request_id_replays_the_same_answer() -> None:
    a = [epsilon_greedy(20, 5, 0.5, f"req-{i}", slots=3) for i in range(200)]
    b = [epsilon_greedy(20, 5, 0.5, f"req-{i}", slots=3) for i in range(200)]
    assert a == b
    assert len({tuple(p.order) for p in a}) > 10  # and different requests do differ


def test_uniforms_are_sha256_of_the_request_id() -> None:
    # printf 'explore\0r-1' | sha256sum | cut -c1-48, in three 8-byte points.
    assert uniforms("r-1") == tuple(int(h, 16) / 2**64 for h in KNOWN_R1)
    assert all(0.0 <= u < 1.0 for u in uniforms("r-1"))


@pytest.mark.parametrize("epsilon", [0.05, 0.2, 0.5, 1.0])
def test_the_empirical_swap_rate_is_epsilon(epsilon: float) -> None:
    n = 20_000
    swapped = sum(epsilon_greedy(30, 10, epsilon, f"rate-{i}").explored_slot is not None for i in range(n))
    assert abs(swapped / n - epsilon) < 0.01


def test_only_the_last_slots_explore_and_candidates_come_from_below_k() -> None:
    slots_seen, candidates_seen = Counter[int](), Counter[int]()
    for i in range(5000):
        plan = epsilon_greedy(10, 5, 1.0, f"s-{i}", slots=2)
        assert plan.explored_slot is not None
        assert plan.order[:3] == [0, 1, 2]
        slots_seen[plan.explored_slot] += 1
        candidates_seen[plan.order[plan.explored_slot]] += 1
        assert len(set(plan.order)) == 5
    assert set(slots_seen) == {3, 4}
    assert set(candidates_seen) == {5, 6, 7, 8, 9}


def test_logged_propensities_match_the_policy() -> None:
    n, k, slots, eps, runs = 8, 4, 2, 0.3, 40_000
    # By hand: m = 2 eligible slots, pool of 4. Slots 0-1: 1.0. Slot kept: 1 - 0.3/2 = 0.85.
    # Slot explored with a given candidate: 0.3 / (2 * 4) = 0.0375.
    expected_keep, expected_explore = 0.85, 0.0375
    shown = Counter[tuple[int, int]]()
    logged: dict[tuple[int, int], set[float]] = {}
    for i in range(runs):
        plan = epsilon_greedy(n, k, eps, f"p-{i}", slots=slots)
        for slot, (item, p) in enumerate(zip(plan.order, plan.propensities, strict=True)):
            shown[slot, item] += 1
            logged.setdefault((slot, item), set()).add(p)
    for (slot, item), ps in logged.items():
        [p] = ps  # one propensity per (slot, item): it is a property of the policy, not of the draw
        if slot < 2:
            assert p == 1.0
        elif item == slot:
            assert p == pytest.approx(expected_keep)
        else:
            assert item >= k
            assert p == pytest.approx(expected_explore)
        assert abs(shown[slot, item] / runs - p) < 0.01, (slot, item, shown[slot, item] / runs, p)
    # Each slot's propensities over everything that can appear there sum to 1.
    for slot in range(k):
        assert sum(next(iter(ps)) for (s, _), ps in logged.items() if s == slot) == pytest.approx(1.0)


def test_inverse_propensity_weighting_recovers_the_slot_value() -> None:
    # Unbiasedness check: a reward of 1 for item m5 in slot 3 has a true rate of p(3, m5) under the
    # policy; averaging reward / propensity over the logs estimates 1.0 (the value of always showing it).
    runs, total = 40_000, 0.0
    for i in range(runs):
        plan = epsilon_greedy(8, 4, 0.4, f"ips-{i}", slots=1)
        if plan.order[3] == 5:
            total += 1.0 / plan.propensities[3]
    assert total / runs == pytest.approx(1.0, abs=0.1)


def test_explore_marks_the_explored_item_and_drops_the_displaced_one() -> None:
    items = ranked()
    for i in range(200):
        rid = f"x-{i}"
        shown, explored = explore(items, 4, 1.0, rid, slots=1)
        if explored:
            break
    assert explored
    plan = epsilon_greedy(8, 4, 1.0, rid, slots=1)
    [slot] = [s for s in range(4) if plan.order[s] >= 4]
    assert slot == 3
    original = items[plan.order[3]]
    assert shown[3].item_id == original.item_id
    assert shown[3].reason == EXPLORING_PREFIX + original.reason
    assert shown[3].rank == 4
    assert shown[3].score == original.score
    assert shown[3].propensity == pytest.approx(1.0 / 4)
    assert "m3" not in {i.item_id for i in shown}
    assert [i.reason for i in shown[:3]] == [items[r].reason for r in range(3)]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="epsilon"):
        epsilon_greedy(8, 4, 1.5, "r")
    with pytest.raises(ValueError, match="slots"):
        epsilon_greedy(8, 4, 0.5, "r", slots=0)


# --- the record -------------------------------------------------------------------------------------


def test_propensity_is_in_the_json_only_when_set() -> None:
    plain = RecommendedItem(item_id="i", score=0.5, rank=1, reason="popular with everyone")
    logged = plain.model_copy(update={"propensity": 0.85})
    assert "propensity" not in orjson.loads(plain.to_json())
    assert orjson.loads(logged.to_json())["propensity"] == 0.85
    rec = Recommendation(
        request_id="r",
        user_id="u",
        items=[plain, logged],
        model=ModelInfo(name="ranker", version="1"),
        fallback=False,
        produced_at=1_700_000_000.0,
        latency_ms=1.0,
    )
    assert parse(Recommendation, rec.to_json()) == rec


# --- wire-in ---------------------------------------------------------------------------------------

# tests/integration/test_pipeline.py's REASON, plus the branch exploration needs.
REASON = re.compile(
    r"^(exploring: )?(matches '.+'|because you watched .+|you like .+|trending in .+|trending now"
    r"|popular in .+|popular with everyone)$"
)


async def test_recommender_explores_when_epsilon_is_set() -> None:
    def score(r: RankRequest) -> np.ndarray:
        return np.zeros(len(r.item_texts), dtype=np.float32)

    rec, metrics, _ = make(FakeRanker(score=score), explore_epsilon=1.0, explore_slots=2)
    outs = await rec.recommend([(query(request_id=f"r-{i}", k=5), buyer()) for i in range(20)])
    for out in outs:
        explored = [i for i in out.items if i.reason.startswith(EXPLORING_PREFIX)]
        assert len(explored) == 1
        assert explored[0].rank in (4, 5)
        assert [i.rank for i in out.items] == [1, 2, 3, 4, 5]
        assert all(REASON.match(i.reason) for i in out.items)
        assert [i.propensity for i in out.items[:3]] == [1.0, 1.0, 1.0]
        assert "propensity" in orjson.loads(out.to_json())["items"][0]
    assert metrics.registry.get_sample_value("streamrec_explored_items_total", {"variant": "control"}) == 20
    assert metrics.registry.get_sample_value("streamrec_impressions_total", {"variant": "control"}) == 100
    again = await rec.recommend([(query(request_id="r-3", k=5), buyer())])
    assert again[0].items == outs[3].items  # replaying a request gives the same list


async def test_an_arm_overrides_the_global_epsilon() -> None:
    variants = '{"explore": {"share": 1.0, "explore_epsilon": 1.0}}'
    rec, metrics, _ = make(FakeRanker(rank_error="breaker_open"), variants=variants)
    [out] = await rec.recommend([(query(k=5), buyer())])
    assert out.variant == "explore"
    assert out.fallback is True  # exploration runs over the fallback ranking too
    assert sum(i.reason.startswith(EXPLORING_PREFIX) for i in out.items) == 1
    assert metrics.registry.get_sample_value("streamrec_explored_items_total", {"variant": "explore"}) == 1
