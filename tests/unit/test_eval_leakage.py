"""The data building leaks nothing from held-out events into training queries or their state.

The check that would catch a leak: change every held-out (test) event to another item and replay;
every training query (its text, candidates and features) must come out identical, and each test
query must be unaffected by its own target.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pytest

from stream.records import Item
from workers.evaluation.replay import Case, replay
from workers.evaluation.split import Plan, held_out_events, leave_last_out, time_cut
from workers.movielens import Interaction

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance"]


def catalog(n: int = 40) -> dict[str, Item]:
    rng = random.Random(1)
    return {
        str(i): Item(
            item_id=str(i),
            title=f"Movie {i} (199{i % 10})",
            categories=rng.sample(GENRES, 2),
            attributes={"year": 1990 + i % 10},
            updated_at=883_000_000.0,
        )
        for i in range(1, n + 1)
    }


def events(n_users: int = 12, per_user: int = 9, seed: int = 0) -> list[Interaction]:
    rng = random.Random(seed)
    rows = []
    for u in range(1, n_users + 1):
        items = rng.sample(range(1, 41), per_user)
        for k, item in enumerate(items):
            rows.append(
                Interaction(
                    str(u), str(item), 4.0, 880_000_000.0 + u * 4 * 3600 + k * 3600 + rng.random() * 1800
                )
            )
    return sorted(rows, key=lambda r: r.ts)


def swap_test_items(
    plan_events: Sequence[Interaction], targets: Mapping[int, str], seed: int = 7
) -> list[Interaction]:
    rng = random.Random(seed)
    out = list(plan_events)
    for pos, role in targets.items():
        if role == "test":
            e = out[pos]
            out[pos] = Interaction(e.user_id, str(rng.randint(1, 40)), e.rating, e.ts)
    return out


def fingerprint(case: Case) -> tuple[object, ...]:
    return (case.user_id, case.target, case.query, tuple(case.candidates), case.features.round(6).tobytes())


@pytest.mark.parametrize("make_plan", [leave_last_out, time_cut])
def test_training_queries_do_not_depend_on_test_events(make_plan: Callable[..., Plan]) -> None:
    items, evs = catalog(), events()
    plan = make_plan(evs)
    _, cases = replay(plan, items)
    swapped = make_plan(swap_test_items(plan.events, plan.targets))
    assert swapped.targets == plan.targets
    _, cases2 = replay(swapped, items)
    train = [fingerprint(c) for c in cases if c.role == "train"]
    assert train == [fingerprint(c) for c in cases2 if c.role == "train"]
    # test queries: everything but the target itself is unchanged
    tests = [c for c in cases if c.role == "test"]
    tests2 = [c for c in cases2 if c.role == "test"]
    assert [fingerprint(c)[2:] for c in tests] == [fingerprint(c)[2:] for c in tests2]
    for a, b in zip(tests, tests2, strict=True):
        assert np.array_equal(a.baselines["item_knn"], b.baselines["item_knn"])


def test_a_query_never_contains_its_target_or_later_events() -> None:
    items, evs = catalog(), events()
    plan = leave_last_out(evs)
    _, cases = replay(plan, items)
    held_out = held_out_events(plan)
    assert len(held_out) == 12
    for case in cases:
        assert items[case.target].title not in case.query
        # the state at the query holds only events before it: the user's own history length
        before = [e for e in evs if e.user_id == case.user_id and e.ts < case.now]
        assert case.n_history == len(before)


def test_the_leakage_check_catches_a_leaky_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sanity of the check itself: a plan that applies test events fails it."""
    items, evs = catalog(), events()
    plan = leave_last_out(evs)
    monkeypatch.setattr(type(plan), "applies", lambda self, pos: True)
    _, cases = replay(plan, items)
    _, cases2 = replay(leave_last_out(swap_test_items(plan.events, plan.targets)), items)
    train = [fingerprint(c) for c in cases if c.role == "train"]
    assert train != [fingerprint(c) for c in cases2 if c.role == "train"]
