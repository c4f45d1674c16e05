"""``update_profile`` and friends: pure, event-time folding of behaviour into per-user state."""

from __future__ import annotations

import math

import pytest

from stream.profile import (
    AFFINITY_HALF_LIFE_S,
    EVENT_WEIGHTS,
    MAX_AFFINITIES,
    MAX_PURCHASED,
    MAX_RECENT_ITEMS,
    MAX_RECENT_QUERIES,
    MAX_SEEN_EVENT_IDS,
    Profile,
    RecentItem,
    interacted,
    recent_titles,
    record_query,
    update_profile,
)
from stream.records import Event, EventType, Item

T0 = 1_700_000_000.0
DAY = 24 * 3600.0


def ev(event_id: str, item_id: str, type_: EventType = "view", ts: float = T0, user_id: str = "u") -> Event:
    return Event(event_id=event_id, user_id=user_id, item_id=item_id, type=type_, ts=ts)


def item(item_id: str, *categories: str, title: str | None = None) -> Item:
    return Item(
        item_id=item_id, title=title or f"Title {item_id}", categories=list(categories), updated_at=T0
    )


def fold(profile: Profile, events: list[Event], catalog: dict[str, Item] | None = None) -> Profile:
    catalog = catalog or {}
    for e in events:
        profile = update_profile(profile, e, catalog.get(e.item_id))
    return profile


def test_new_profile_is_cold_and_empty() -> None:
    p = Profile(user_id="u")
    assert p.is_cold
    assert p.counts == {}
    assert interacted(p) == set()


def test_counts_per_type_and_history_in_order() -> None:
    events = [
        ev("e1", "a", "view", T0),
        ev("e2", "a", "click", T0 + 1),
        ev("e3", "b", "view", T0 + 2),
        ev("e4", "b", "add_to_cart", T0 + 3),
        ev("e5", "b", "purchase", T0 + 4),
    ]
    p = fold(Profile(user_id="u"), events)
    assert p.counts == {"view": 2, "click": 1, "add_to_cart": 1, "purchase": 1}
    assert [(r.item_id, r.type) for r in p.recent_items] == [
        ("a", "view"),
        ("a", "click"),
        ("b", "view"),
        ("b", "add_to_cart"),
        ("b", "purchase"),
    ]
    assert p.seen_event_ids == ("e1", "e2", "e3", "e4", "e5")
    assert p.last_seen == T0 + 4
    assert not p.is_cold


def test_update_is_pure() -> None:
    before = Profile(user_id="u")
    after = update_profile(before, ev("e1", "a", "purchase"), item("a", "Drama"))
    assert before == Profile(user_id="u")
    assert after is not before
    assert after.purchased == frozenset({"a"})


def test_recent_items_are_bounded_to_the_latest() -> None:
    n = MAX_RECENT_ITEMS + 7
    p = fold(Profile(user_id="u"), [ev(f"e{i}", f"i{i}", ts=T0 + i) for i in range(n)])
    assert len(p.recent_items) == MAX_RECENT_ITEMS
    assert p.recent_items[0].item_id == f"i{n - MAX_RECENT_ITEMS}"
    assert p.recent_items[-1].item_id == f"i{n - 1}"
    assert p.counts["view"] == n  # counts are not bounded


def test_seen_event_ids_are_bounded() -> None:
    n = MAX_SEEN_EVENT_IDS + 3
    p = fold(Profile(user_id="u"), [ev(f"e{i}", "a", ts=T0 + i) for i in range(n)])
    assert len(p.seen_event_ids) == MAX_SEEN_EVENT_IDS
    assert p.seen_event_ids[0] == "e3"


def test_only_purchases_enter_the_purchased_set() -> None:
    p = fold(
        Profile(user_id="u"),
        [
            ev("e1", "a", "view"),
            ev("e2", "b", "add_to_cart"),
            ev("e3", "c", "purchase"),
            ev("e4", "c", "purchase"),
        ],
    )
    assert p.purchased == frozenset({"c"})
    assert interacted(p) == {"c"}
    assert p.counts["purchase"] == 2


def test_purchased_set_stays_bounded() -> None:
    events = [ev(f"e{i}", f"i{i}", "purchase", T0 + i) for i in range(MAX_PURCHASED + 1)]
    p = fold(Profile(user_id="u"), events)
    assert len(p.purchased) <= MAX_PURCHASED
    assert f"i{MAX_PURCHASED}" in p.purchased  # the newest purchase is never the one forgotten


def test_duplicate_event_id_returns_the_same_object() -> None:
    catalog = {"a": item("a", "Drama")}
    p1 = update_profile(Profile(user_id="u"), ev("e1", "a", "purchase"), catalog["a"])
    # Same id, even with different content: already applied.
    p2 = update_profile(p1, ev("e1", "b", "view", T0 + 100), None)
    assert p2 is p1
    assert p2.to_dict() == p1.to_dict()


def test_replaying_a_sequence_is_idempotent() -> None:
    catalog = {"a": item("a", "Drama"), "b": item("b", "Comedy")}
    events = [ev("e1", "a", "view", T0), ev("e2", "b", "purchase", T0 + DAY)]
    once = fold(Profile(user_id="u"), events, catalog)
    twice = fold(once, events, catalog)
    assert twice is once


def test_affinity_shares_the_event_weight_over_categories() -> None:
    p = update_profile(Profile(user_id="u"), ev("e1", "a", "click"), item("a", "Action", "Sci-Fi"))
    assert p.affinities == {"Action": EVENT_WEIGHTS["click"] / 2, "Sci-Fi": EVENT_WEIGHTS["click"] / 2}
    assert p.affinities == {"Action": 1.0, "Sci-Fi": 1.0}
    assert p.affinity_ts == T0


def test_unknown_item_counts_as_history_without_affinity() -> None:
    p = update_profile(Profile(user_id="u"), ev("e1", "ghost", "purchase"), None)
    assert p.affinities == {}
    assert p.recent_items == (RecentItem("ghost", T0, "purchase"),)
    assert p.purchased == frozenset({"ghost"})


def test_affinities_decay_with_the_half_life() -> None:
    catalog = {"a": item("a", "Action", "Drama"), "b": item("b", "Action")}
    p = update_profile(Profile(user_id="u"), ev("e1", "a", "view", T0), catalog["a"])
    # view = 1.0 split over two genres: 0.5 each at T0.
    assert p.affinities == {"Action": 0.5, "Drama": 0.5}
    # One half-life later a purchase (5.0) of a pure Action item: 0.5 * 0.5 + 5.0 and 0.5 * 0.5.
    p = update_profile(p, ev("e2", "b", "purchase", T0 + AFFINITY_HALF_LIFE_S), catalog["b"])
    assert p.affinities["Action"] == pytest.approx(5.25)
    assert p.affinities["Drama"] == pytest.approx(0.25)
    assert p.affinity_ts == T0 + AFFINITY_HALF_LIFE_S
    # Read-time decay: two more half-lives divide by four, a quarter half-life by 2 ** 0.25.
    later = p.decayed_affinities(T0 + 3 * AFFINITY_HALF_LIFE_S)
    assert later == pytest.approx({"Action": 5.25 / 4, "Drama": 0.25 / 4})
    soon = p.decayed_affinities(T0 + 1.25 * AFFINITY_HALF_LIFE_S)
    assert soon["Action"] == pytest.approx(5.25 / 2**0.25)
    # No decay at or before the affinity timestamp, and the stored values are untouched.
    assert p.decayed_affinities(T0) == p.affinities
    assert p.affinities["Action"] == pytest.approx(5.25)


def test_half_life_is_fourteen_days() -> None:
    assert AFFINITY_HALF_LIFE_S == 14 * DAY
    p = update_profile(Profile(user_id="u"), ev("e1", "a", "view"), item("a", "Drama"))
    assert p.decayed_affinities(T0 + 7 * DAY)["Drama"] == pytest.approx(math.sqrt(0.5))


def test_out_of_order_event_does_not_move_affinity_time_back() -> None:
    catalog = {"a": item("a", "Drama"), "b": item("b", "Comedy")}
    p = update_profile(Profile(user_id="u"), ev("e1", "a", "view", T0 + DAY), catalog["a"])
    p = update_profile(p, ev("e2", "b", "view", T0), catalog["b"])
    assert p.affinity_ts == T0 + DAY
    assert p.affinities == {"Drama": 1.0, "Comedy": 1.0}
    assert p.last_seen == T0 + DAY


def test_affinities_are_bounded_keeping_the_strongest() -> None:
    # 25 genres once (weight 1 each) then 20 other genres twice: 45 genres, the 5 weakest of the
    # first group (ties broken by name, so the alphabetically last) are dropped.
    catalog = {f"g{i:02d}": item(f"g{i:02d}", f"G{i:02d}") for i in range(45)}
    events = [ev(f"a{i}", f"g{i:02d}", "view", T0) for i in range(25)]
    events += [ev(f"b{i}", f"g{i:02d}", "click", T0) for i in range(25, 45)]
    p = fold(Profile(user_id="u"), events, catalog)
    assert len(p.affinities) == MAX_AFFINITIES
    assert all(f"G{i:02d}" in p.affinities for i in range(25, 45))
    assert all(f"G{i:02d}" in p.affinities for i in range(20))
    assert not any(f"G{i:02d}" in p.affinities for i in range(20, 25))


def test_to_dict_from_dict_round_trip() -> None:
    catalog = {"a": item("a", "Drama", "War"), "b": item("b", "Comedy")}
    p = fold(
        Profile(user_id="u"),
        [
            ev("e1", "a", "view", T0),
            ev("e2", "b", "purchase", T0 + DAY),
            ev("e3", "a", "click", T0 + 2 * DAY),
        ],
        catalog,
    )
    p = record_query(p, "space  opera", T0 + 3 * DAY)
    data = p.to_dict()
    assert data["purchased"] == ["b"]
    assert data["recent_items"][0] == ["a", T0, "view"]
    restored = Profile.from_dict(data)
    assert restored == p
    assert restored.to_dict() == data
    # Stored as JSON, tuples become lists: from_dict must accept that too.
    import orjson

    assert Profile.from_dict(orjson.loads(orjson.dumps(data))) == p


def test_from_dict_fills_defaults() -> None:
    assert Profile.from_dict({"user_id": "u"}) == Profile(user_id="u")


def test_record_query_normalises_and_bounds() -> None:
    p = record_query(Profile(user_id="u"), "  star \t wars\n", T0)
    assert p.recent_queries == (("star wars", T0),)
    assert p.last_seen == T0
    for i in range(MAX_RECENT_QUERIES + 2):
        p = record_query(p, f"q{i}", T0 + i + 1)
    assert len(p.recent_queries) == MAX_RECENT_QUERIES
    assert p.recent_queries[-1] == (f"q{MAX_RECENT_QUERIES + 1}", T0 + MAX_RECENT_QUERIES + 2)
    assert p.recent_queries[0][0] == "q2"


@pytest.mark.parametrize("blank", ["", "   ", "\n\t"])
def test_record_query_ignores_blank_text(blank: str) -> None:
    p = Profile(user_id="u")
    assert record_query(p, blank, T0) is p


def test_record_query_does_not_move_last_seen_back() -> None:
    p = record_query(Profile(user_id="u", last_seen=T0 + 10), "x", T0)
    assert p.last_seen == T0 + 10


def test_recent_titles_distinct_newest_n_oldest_first() -> None:
    catalog = {i: item(i, title=f"T-{i}") for i in "abcdef"}
    events = [ev(f"e{n}", i, ts=T0 + n) for n, i in enumerate("abcadbef")]
    p = fold(Profile(user_id="u"), events, catalog)
    # Newest first, distinct: f, e, b, d, a, c → the 3 newest are f, e, b → oldest first: b, e, f.
    assert recent_titles(p, catalog, n=3) == ["T-b", "T-e", "T-f"]
    assert recent_titles(p, catalog) == ["T-a", "T-d", "T-b", "T-e", "T-f"]


def test_recent_titles_skips_items_missing_from_the_catalog() -> None:
    catalog = {"a": item("a", title="Alpha")}
    p = fold(Profile(user_id="u"), [ev("e1", "a"), ev("e2", "gone", ts=T0 + 1)])
    assert recent_titles(p, catalog) == ["Alpha"]
    assert recent_titles(Profile(user_id="u"), catalog) == []


# --- exact replay dedupe by events-topic offset ------------------------------------------------------


def test_redelivered_offsets_are_skipped_whatever_the_event() -> None:
    p = update_profile(Profile(user_id="u"), ev("e1", "a"), None, offset=5)
    assert p.events_offset == 5
    # A redelivery after a crash: same or lower offsets, even with ids long gone from seen_event_ids.
    assert update_profile(p, ev("e1", "a"), None, offset=5) is p
    assert update_profile(p, ev("e0", "z", "purchase"), None, offset=3) is p
    q = update_profile(p, ev("e2", "b"), None, offset=6)
    assert q.counts == {"view": 2}
    assert q.events_offset == 6


def test_duplicate_id_at_a_new_offset_only_moves_the_offset() -> None:
    p = update_profile(Profile(user_id="u"), ev("e1", "a", "purchase"), item("a", "Drama"), offset=1)
    q = update_profile(p, ev("e1", "a", "purchase"), item("a", "Drama"), offset=2)
    assert q.events_offset == 2
    assert (q.counts, q.recent_items, q.affinities, q.purchased) == (
        p.counts,
        p.recent_items,
        p.affinities,
        p.purchased,
    )


def test_events_offset_survives_the_round_trip() -> None:
    p = update_profile(Profile(user_id="u"), ev("e1", "a"), None, offset=41)
    assert Profile.from_dict(p.to_dict()).events_offset == 41
    assert Profile.from_dict({"user_id": "u"}).events_offset == -1


def test_record_query_is_time_ordered_and_idempotent() -> None:
    p = record_query(Profile(user_id="u"), "second", T0 + 2)
    p = record_query(p, "first", T0 + 1)
    assert [q for q, _ in p.recent_queries] == ["first", "second"]
    assert record_query(p, "first", T0 + 1) is p
    assert record_query(p, " first ", T0 + 1) is p  # same after whitespace normalisation
    # Processing the same queries in another order gives the same profile.
    other = record_query(record_query(Profile(user_id="u"), "first", T0 + 1), "second", T0 + 2)
    assert other == p
