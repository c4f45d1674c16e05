"""The click simulator's behaviour model and the online A/B metrics with their intervals."""

from __future__ import annotations

import math
from typing import Any

import pytest

from workers.clicksim import ClickModel, events_for, held_out, react
from workers.movielens import Interaction
from workers.online_metrics import by_arm, difference, mean_interval, wilson


def rec(request_id: str, items: list[str], user: str = "u1") -> dict[str, Any]:
    return {
        "request_id": request_id,
        "user_id": user,
        "trigger": "query",
        "items": [{"item_id": i, "rank": n + 1} for n, i in enumerate(items)],
    }


def test_held_out_is_only_what_comes_after_the_replayed_slice() -> None:
    rows = [Interaction("u1", "a", 5, 1.0), Interaction("u2", "b", 4, 2.0), Interaction("u1", "c", 3, 3.0)]
    assert held_out(rows, replayed=1) == {"u2": frozenset({"b"}), "u1": frozenset({"c"})}
    assert held_out(rows, replayed=3) == {}


def test_wanted_items_are_clicked_far_more_and_top_ranks_more_than_low_ranks() -> None:
    model = ClickModel()
    items = [f"i{n}" for n in range(10)]
    wanted_clicks = [0] * 10
    unwanted_clicks = 0
    for r in range(2000):
        wants = frozenset(items)  # everything wanted: only position bias varies
        for reaction in react(rec(f"r{r}", items), wants, model, seed=1):
            if reaction.type == "click":
                wanted_clicks[items.index(reaction.item_id)] += 1
        unwanted_clicks += sum(
            x.type == "click" for x in react(rec(f"r{r}", items), frozenset(), model, seed=1)
        )
    # Expected click share at rank r: examined(r) * relevant_click.
    for rank in (1, 5, 10):
        expected = model.examined(rank) * model.relevant_click * 2000
        assert wanted_clicks[rank - 1] == pytest.approx(expected, rel=0.15)
    assert wanted_clicks[0] > wanted_clicks[4] > wanted_clicks[9]
    assert unwanted_clicks < sum(wanted_clicks) / 10


def test_reactions_are_reproducible_and_purchases_follow_wanted_clicks_only() -> None:
    items = ["a", "b", "c"]
    first = react(rec("r1", items), frozenset({"a"}), ClickModel(convert=1.0, noise_click=1.0), seed=3)
    again = react(rec("r1", items), frozenset({"a"}), ClickModel(convert=1.0, noise_click=1.0), seed=3)
    assert first == again
    assert all(r.item_id == "a" for r in first if r.type == "purchase")
    events = events_for(rec("r1", items), first, ts=1_800_000_000.0)
    assert all(e.request_id == "r1" and e.user_id == "u1" for e in events)
    assert len({e.event_id for e in events}) == len(events)


def test_wilson_interval_matches_the_textbook_and_behaves_at_the_edges() -> None:
    ci = wilson(10, 100)
    assert (ci.value, round(ci.low, 4), round(ci.high, 4)) == (0.1, 0.0552, 0.1744)
    zero = wilson(0, 20)
    assert zero.low == 0.0 and 0.1 < zero.high < 0.2
    assert wilson(0, 0).value == 0.0


def test_mean_and_difference_intervals() -> None:
    m = mean_interval([0.0, 1.0, 0.5, 0.5])
    assert m.value == 0.5 and m.low < 0.5 < m.high
    d = difference((10, 100), (30, 100))
    assert d.value == pytest.approx(0.2)
    half = 1.959963984540054 * math.sqrt(0.1 * 0.9 / 100 + 0.3 * 0.7 / 100)
    assert (d.low, d.high) == pytest.approx((0.2 - half, 0.2 + half))


def example(
    rid: str, item: str, rank: int, label: int, variant: str, outcome: str = "none"
) -> dict[str, Any]:
    return {
        "request_id": rid,
        "item_id": item,
        "rank": rank,
        "label": label,
        "outcome": outcome if label == 0 else (outcome if outcome != "none" else "click"),
        "variant": variant,
        "model": {"name": "ranker", "version": "2" if variant == "t" else "1"},
    }


def test_by_arm_counts_impressions_not_rows_and_dedupes_redelivered_examples() -> None:
    genres = {"a": ["Drama"], "b": ["Drama"], "c": ["Comedy"], "d": ["Horror"]}
    rows = [
        example("r1", "a", 1, 0, "c"),
        example("r1", "b", 2, 1, "c"),
        example("r1", "b", 2, 1, "c"),  # a duplicate after a crash
        example("r2", "a", 1, 0, "c"),
        example("r2", "c", 2, 0, "c"),
        example("r3", "c", 1, 1, "t", "purchase"),
        example("r3", "d", 2, 0, "t"),
    ]
    arms = by_arm(rows, genres, k=10)
    c, t = arms["c"], arms["t"]
    assert (c.impressions, c.clicked, c.converted) == (2, 1, 0)
    assert c.mrr.value == pytest.approx((0.5 + 0.0) / 2)
    assert (t.impressions, t.clicked, t.converted, t.mrr.value) == (1, 1, 1, 1.0)
    assert c.coverage == pytest.approx(3 / 4) and t.coverage == pytest.approx(2 / 4)
    assert c.diversity == pytest.approx((0.0 + 1.0) / 2)  # r1: Drama/Drama, r2: Drama/Comedy
    assert c.models == ["ranker/1"] and t.models == ["ranker/2"]
    only_top1 = by_arm(rows, genres, k=1)["c"]
    assert only_top1.clicked == 0  # r1's click was at rank 2
