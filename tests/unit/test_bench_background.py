"""bench/e2e.py's background events: views from the MovieLens pool, sent with each query."""

from __future__ import annotations

from bench.e2e import background_events
from stream.records import Event, parse


def pool_of(n: int) -> list[Event]:
    return [
        Event(event_id=f"ml-{i}", user_id=f"u{i}", item_id=f"i{i}", type="purchase", ts=8.8e8 + i)
        for i in range(n)
    ]


def test_each_query_takes_the_next_events_of_the_pool_wrapping_with_new_ids() -> None:
    pool = pool_of(5)
    first = background_events(pool, 0, 3, "t", ts=1.8e9)
    second = background_events(pool, 3, 3, "t", ts=1.8e9 + 1)
    assert [(e.user_id, e.item_id) for e in first + second] == [
        ("u0", "i0"), ("u1", "i1"), ("u2", "i2"), ("u3", "i3"), ("u4", "i4"), ("u0", "i0"),
    ]  # fmt: skip
    ids = [e.event_id for e in first + second]
    assert len(set(ids)) == 6  # a wrapped event is a new event, not a redelivery the worker skips
    assert {e.type for e in first} == {"view"} and {e.ts for e in second} == {1.8e9 + 1}


def test_the_events_are_valid_on_the_wire() -> None:
    for event in background_events(pool_of(2), 7, 4, "ab12cd", ts=1.8e9):
        assert parse(Event, event.to_json(), event.user_id.encode(), key_field="user_id") == event


def test_no_pool_or_no_count_sends_nothing() -> None:
    assert background_events([], 0, 10, "t", ts=1.8e9) == []
    assert background_events(pool_of(3), 0, 0, "t", ts=1.8e9) == []
