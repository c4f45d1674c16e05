"""The feedback join (stream/feedback.py): windows, attribution, late events, labels, redelivery."""

from __future__ import annotations

import json

import pytest

from stream import feedback as join
from stream.records import Event, Impression, ModelInfo, ShownItem

T0 = 1_700_000_000.0
WINDOW = join.Window(length_s=600.0, grace_s=30.0, max_open=3)


# What the agent keeps in the ``open-impressions`` table for each impression built below.
PAYLOADS: dict[str, join.State] = {}


def impression(
    request_id: str = "r1", ts: float = T0, items: tuple[str, ...] = ("a", "b", "c")
) -> Impression:
    imp = _impression(request_id, ts, items)
    PAYLOADS[request_id] = join.payload(imp)
    return imp


def _impression(request_id: str, ts: float, items: tuple[str, ...]) -> Impression:
    return Impression(
        request_id=request_id,
        user_id="u1",
        ts=ts,
        variant="treatment",
        model=ModelInfo(name="ranker", version="2"),
        fallback=False,
        context="comedy | Toy Story (1995)",
        items=[
            ShownItem(item_id=i, rank=n + 1, score=1.0 - n / 10, propensity=0.9, features=[float(n)] * 8)
            for n, i in enumerate(items)
        ],
    )


def event(
    item: str, type_: str = "click", ts: float = T0 + 10, request_id: str | None = "r1", n: int = 0
) -> Event:
    return Event(
        event_id=f"e{n}-{item}-{type_}", user_id="u1", item_id=item, type=type_, ts=ts, request_id=request_id
    )  # type: ignore[arg-type]


def opened(*imps: Impression) -> join.State:
    state: join.State | None = None
    for imp in imps:
        state, evicted = join.open_impression(state, imp, WINDOW)
        assert evicted == []
    assert state is not None
    return state


def closed_examples(state: join.State, watermark: float) -> dict[tuple[str, str], tuple[str, int]]:
    _, closed = join.close_due(state, watermark, WINDOW)
    return {
        (x.request_id, x.item_id): (x.outcome, x.label)
        for c in closed
        for x in join.examples(c, PAYLOADS[c["request_id"]])
    }


def test_a_click_by_request_id_labels_that_item_and_the_others_are_negatives() -> None:
    state, result = join.apply_outcome(opened(impression()), event("b"), WINDOW)
    assert result == "attributed"
    assert closed_examples(state, T0 + 630) == {
        ("r1", "a"): ("none", 0),
        ("r1", "b"): ("click", 1),
        ("r1", "c"): ("none", 0),
    }


def test_the_strongest_outcome_wins_and_redelivery_changes_nothing() -> None:
    state = opened(impression())
    state, _ = join.apply_outcome(state, event("a", "click", T0 + 5), WINDOW)
    state, _ = join.apply_outcome(state, event("a", "purchase", T0 + 50), WINDOW)
    again, result = join.apply_outcome(state, event("a", "click", T0 + 5), WINDOW)
    assert result == "duplicate" and again == state
    state, result = join.apply_outcome(state, event("a", "view", T0 + 60), WINDOW)
    assert result == "duplicate"  # a weaker outcome never downgrades the label
    assert closed_examples(state, T0 + 10_000)[("r1", "a")] == ("purchase", 1)


def test_a_view_is_an_outcome_but_not_a_positive_label() -> None:
    state, _ = join.apply_outcome(opened(impression()), event("c", "view"), WINDOW)
    assert closed_examples(state, T0 + 10_000)[("r1", "c")] == ("view", 0)


def test_without_request_id_the_newest_open_impression_showing_the_item_gets_it() -> None:
    state = opened(impression("r1", T0, ("a", "b")), impression("r2", T0 + 100, ("b", "c")))
    state, result = join.apply_outcome(state, event("b", "purchase", T0 + 150, request_id=None), WINDOW)
    assert result == "attributed"
    labels = closed_examples(state, T0 + 10_000)
    assert labels[("r2", "b")] == ("purchase", 1)
    assert labels[("r1", "b")] == ("none", 0)


def test_organic_events_and_unknown_requests_are_unmatched() -> None:
    state = opened(impression())
    assert join.apply_outcome(state, event("z", request_id=None), WINDOW)[1] == "unmatched"  # never shown
    assert join.apply_outcome(state, event("z"), WINDOW)[1] == "unmatched"  # r1 did not show z
    assert join.apply_outcome(state, event("a", request_id="r9"), WINDOW)[1] == "unmatched"
    before = event("a", ts=T0 - 1, request_id=None)
    assert join.apply_outcome(state, before, WINDOW)[1] == "unmatched"  # bought before it was shown


def test_outcomes_after_the_window_or_after_closing_are_late_and_not_attributed() -> None:
    state = opened(impression())
    state, result = join.apply_outcome(state, event("a", ts=T0 + 601), WINDOW)
    assert result == "late"
    state, closed = join.close_due(state, T0 + 630, WINDOW)
    assert [c["request_id"] for c in closed] == ["r1"]
    state, result = join.apply_outcome(state, event("b", ts=T0 + 20), WINDOW)  # arrived too late
    assert result == "late"
    assert closed_examples(opened(impression()), T0 + 630)[("r1", "a")] == ("none", 0)


def test_windows_close_only_after_length_plus_grace() -> None:
    state = opened(impression("r1", T0), impression("r2", T0 + 100))
    still, closed = join.close_due(state, T0 + 629.9, WINDOW)
    assert closed == [] and len(still["open"]) == 2
    assert join.next_close(state, WINDOW) == pytest.approx(T0 + 630)
    after, closed = join.close_due(state, T0 + 630, WINDOW)
    assert [c["request_id"] for c in closed] == ["r1"]
    assert join.next_close(after, WINDOW) == pytest.approx(T0 + 730)
    assert join.next_close(join.empty(), WINDOW) is None


def test_a_redelivered_impression_is_ignored_open_or_closed() -> None:
    state = opened(impression())
    again, evicted = join.open_impression(state, impression(), WINDOW)
    assert again == state and evicted == []
    state, _ = join.close_due(state, T0 + 630, WINDOW)
    again, _ = join.open_impression(state, impression(), WINDOW)
    assert again["open"] == []  # not reopened: its examples were already written


def test_too_many_open_impressions_close_the_oldest_early_instead_of_dropping_it() -> None:
    state = opened(*(impression(f"r{n}", T0 + n) for n in range(3)))
    state, evicted = join.open_impression(state, impression("r3", T0 + 3), WINDOW)
    assert [e["request_id"] for e in evicted] == ["r0"]
    assert [o["request_id"] for o in state["open"]] == ["r1", "r2", "r3"]
    assert len(join.examples(evicted[0], PAYLOADS["r0"])) == 3


def test_examples_carry_what_training_needs() -> None:
    state, _ = join.apply_outcome(opened(impression()), event("b", ts=T0 + 42), WINDOW)
    _, [closed] = join.close_due(state, T0 + 630, WINDOW)
    rows = join.examples(closed, PAYLOADS["r1"])
    b = next(r for r in rows if r.item_id == "b")
    assert (b.rank, b.propensity, b.features, b.context, b.variant, b.model.version) == (
        2,
        0.9,
        [1.0] * 8,
        "comedy | Toy Story (1995)",
        "treatment",
        "2",
    )
    assert (b.shown_at, b.outcome_at, b.key) == (T0, T0 + 42, "r1:b")
    summary = join.summarise(rows)
    assert (summary.variant, summary.clicked, summary.converted, summary.reciprocal_rank) == (
        "treatment",
        True,
        False,
        0.5,
    )


def test_states_are_never_mutated_in_place() -> None:
    state = opened(impression())
    snapshot = repr(state)
    join.apply_outcome(state, event("a"), WINDOW)
    join.close_due(state, T0 + 10_000, WINDOW)
    join.open_impression(state, impression("r2"), WINDOW)
    assert repr(state) == snapshot


def test_the_users_state_keeps_ids_not_payloads() -> None:
    """Each query and event rewrites the user's state: it must not carry every open impression's
    features (max_open x ~1.7 KB of JSON per write before the payloads got a table of their own)."""
    state = opened(impression("r0", T0, ("a", "b")), impression("r1", T0 + 1, ("b", "c")))
    assert state["open"][0] == {"request_id": "r0", "ts": T0, "shown": ["a", "b"], "outcomes": {}}
    text = json.dumps(state)
    assert "features" not in text and "context" not in text
    assert join.payload(impression("r0", T0, ("a", "b")))["items"][1]["features"] == [1.0] * 8


def test_entries_written_whole_before_the_split_still_join_and_label() -> None:
    """State restored from a changelog written by the earlier form: whole impressions in ``open``."""
    old = {**join.payload(_impression("r1", T0, ("a", "b", "c"))), "outcomes": {}}
    state = {"open": [old], "closed": []}
    state, result = join.apply_outcome(state, event("b"), WINDOW)
    assert result == "attributed"
    _, [closed] = join.close_due(state, T0 + 630, WINDOW)
    whole = join.payload_of(closed, None)
    assert whole is not None
    assert {(x.item_id, x.label) for x in join.examples(closed, whole)} == {("a", 0), ("b", 1), ("c", 0)}
    slim, _ = join.open_impression(None, _impression("r2", T0, ("a",)), WINDOW)
    assert join.payload_of(slim["open"][0], None) is None  # a slim entry has nothing to fall back on
