"""Item statistics: activities derived from events, and their idempotent fold into per-item state."""

from __future__ import annotations

import math
import random

import orjson
import pytest

from stream.itemstats import (
    BUCKET_S,
    HISTORY_FOR_COOC,
    MAX_NEIGHBORS,
    MAX_SEEN,
    NEAR_WINDOW,
    PRUNE_AT,
    Activity,
    ItemStats,
    MalformedActivity,
    activities_for,
    activity_rows,
    apply_activity,
    apply_message,
    apply_rows,
    decode_message,
    knn_similarity,
    pack_by_partition,
    window_count,
)
from stream.profile import Profile, RecentItem
from stream.topics import key_partition

T0 = 1_700_000_000.0
HOUR = 3600.0
WINDOW = 6 * HOUR


def history(*item_ids: str) -> Profile:
    """A profile whose recent items are ``item_ids`` in order (oldest first)."""
    return Profile(
        user_id="u", recent_items=tuple(RecentItem(i, T0 + n, "view") for n, i in enumerate(item_ids))
    )


def act(
    activity_id: str, item_id: str = "x", ts: float = T0, count: bool = True, *co: tuple[str, int]
) -> Activity:
    return Activity(activity_id, item_id, ts, count, tuple(co))


# --- activities_for ------------------------------------------------------------------------------


def test_cold_user_produces_only_the_count() -> None:
    assert activities_for(Profile(user_id="u"), "e1", "x", T0) == [Activity("e1", "x", T0, True, ())]


def test_pairs_with_distance_newest_first_excluding_self_and_duplicates() -> None:
    # History oldest→newest: a b x c b; newest first distinct, not x: b(1), c(2), a(3).
    acts = activities_for(history("a", "b", "x", "c", "b"), "e9", "x", T0 + 100)
    assert acts[0] == Activity("e9", "x", T0 + 100, True, (("b", 1), ("c", 2), ("a", 3)))
    # One mirrored, uncounted activity per paired item, carrying the same distance.
    assert acts[1:] == [
        Activity("e9", "b", T0 + 100, False, (("x", 1),)),
        Activity("e9", "c", T0 + 100, False, (("x", 2),)),
        Activity("e9", "a", T0 + 100, False, (("x", 3),)),
    ]
    assert all(a.activity_id == "e9" for a in acts)
    assert "x" not in {other for other, _ in acts[0].co_items}


def test_pairs_are_capped_at_the_history_window() -> None:
    items = [f"i{n}" for n in range(HISTORY_FOR_COOC + 10)]
    acts = activities_for(history(*items), "e1", "x", T0)
    assert len(acts[0].co_items) == HISTORY_FOR_COOC
    assert acts[0].co_items[0] == (items[-1], 1)
    assert acts[0].co_items[-1] == (items[-HISTORY_FOR_COOC], HISTORY_FOR_COOC)
    assert len(acts) == 1 + HISTORY_FOR_COOC


def test_activity_round_trips_through_json() -> None:
    a = Activity("e1", "x", T0, True, (("a", 1), ("b", 7)))
    assert Activity.from_dict(orjson.loads(orjson.dumps(a.to_dict()))) == a


# --- the item-activity wire form (rows) ----------------------------------------------------------------


def test_activity_rows_carry_exactly_what_activities_for_derives() -> None:
    profile = history(*[f"i{n}" for n in range(HISTORY_FOR_COOC + 3)], "x", "i5")
    rows = activity_rows(profile, "e7", "x", T0)
    assert rows == [(a.item_id, a.to_row()) for a in activities_for(profile, "e7", "x", T0)]
    assert len(rows) == 1 + HISTORY_FOR_COOC
    assert activity_rows(history("a", "b", "x", "c", "b"), "e9", "x", T0) == [
        ("x", ["e9", T0, True, [["b", 1], ["c", 2], ["a", 3]]]),
        ("b", ["e9", T0, False, [["x", 1]]]),
        ("c", ["e9", T0, False, [["x", 2]]]),
        ("a", ["e9", T0, False, [["x", 3]]]),
    ]


def test_rows_fold_to_the_same_stats_as_activities_after_a_json_round_trip() -> None:
    profile = history("a", "b", "x", "c", "b")
    by_item: dict[str, list[list[object]]] = {}
    for item_id, row in activity_rows(profile, "e9", "x", T0):
        by_item.setdefault(item_id, []).append(row)
    for item_id, rows in by_item.items():
        decoded = decode_message(item_id.encode(), orjson.loads(orjson.dumps(rows)))
        assert list(decoded) == [item_id]
        expected = apply_message(
            ItemStats(item_id),
            [a for a in activities_for(profile, "e9", "x", T0) if a.item_id == item_id],
            WINDOW,
            5,
        )
        assert apply_rows(ItemStats(item_id), decoded[item_id], WINDOW, 5) == expected
    assert apply_rows(expected, decoded[item_id], WINDOW, 5) is expected  # a redelivery


def test_rows_are_packed_one_message_per_partition_and_decode_back() -> None:
    profile = history("a", "b", "x", "c", "b")
    by_item: dict[str, list[list[object]]] = {}
    for item_id, row in activity_rows(profile, "e9", "x", T0):
        by_item.setdefault(item_id, []).append(row)
    packed = pack_by_partition(by_item, 4)
    assert sorted(i for _, items in packed for i in items) == sorted(by_item)
    assert len({p for p, _ in packed}) == len(packed)  # under max_rows: one message per partition
    for partition, items in packed:
        assert {key_partition(i.encode(), 4) for i in items} == {partition}
        decoded = decode_message(None, orjson.loads(orjson.dumps(items)))  # no key needed
        for item_id, rows in decoded.items():
            expected = apply_rows(
                ItemStats(item_id), decode_message(item_id.encode(), by_item[item_id])[item_id], WINDOW, 5
            )
            assert apply_rows(ItemStats(item_id), rows, WINDOW, 5) == expected


def test_a_partition_with_many_rows_gets_several_messages_and_no_item_is_split() -> None:
    by_item = {f"i{n}": [[f"e{n}-{r}", T0, True, []] for r in range(n % 5 + 1)] for n in range(200)}
    packed = pack_by_partition(by_item, 2, max_rows=16)
    assert sorted(i for _, m in packed for i in m) == sorted(by_item)  # each item once, whole
    for partition, message in packed:
        assert {key_partition(i.encode(), 2) for i in message} == {partition}
        rows = [len(r) for r in message.values()]
        assert sum(rows) - rows[-1] < 16  # closed by the item that reached the bound
    assert len(packed) > 2


def test_key_partition_is_the_producers_default_partitioner() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    for key in (b"1", b"242", b"item-x", "é".encode()):
        assert key_partition(key, 4) == DefaultPartitioner()(key, [0, 1, 2, 3], [0, 1, 2, 3])


def test_messages_in_the_earlier_object_form_still_decode() -> None:
    old = [Activity("e1", "x", T0, True, (("a", 1),)).to_dict(), Activity("e2", "y", T0, False, ()).to_dict()]
    decoded = decode_message(b"x", orjson.loads(orjson.dumps(old)))
    assert decoded == {"x": [("e1", T0, True, (("a", 1),))], "y": [("e2", T0, False, ())]}


@pytest.mark.parametrize(
    "data",
    [
        {"activity_id": "e1"},  # not a list
        [["e1", T0, True]],  # a row too short
        [["e1", T0, "yes", []]],  # count not a boolean
        [["e1", "soon", True, []]],  # ts not a number
        [["e1", T0, True, [["a", "1"]]]],  # distance not an int
        [["e1", T0, True, [[7, 1]]]],  # item not a string
        [{"item_id": "x", "ts": T0, "count": True}],  # an old-form object without its id
        {"x": ["e1", T0, True, []]},  # packed: the item's rows are one row, not a list of them
        {"x": [["e1", T0, True, [["a", 1.5]]]]},  # packed: a distance not an int
        {"": [["e1", T0, True, []]]},  # packed: an empty item
        "rows",  # neither a list nor an object
    ],
)
def test_malformed_messages_are_refused_with_a_reason(data: object) -> None:
    with pytest.raises(MalformedActivity, match="item-activity"):
        decode_message(b"x", data)


def test_a_row_without_a_key_is_refused() -> None:
    with pytest.raises(MalformedActivity, match="no key"):
        decode_message(None, [["e1", T0, True, []]])


# --- apply_activity -----------------------------------------------------------------------------------


def test_count_and_buckets() -> None:
    s = ItemStats("x")
    s = apply_activity(s, act("e1", ts=T0), WINDOW)
    s = apply_activity(s, act("e2", ts=T0 + 1), WINDOW)
    s = apply_activity(s, act("e3", ts=T0 + HOUR), WINDOW)
    b = int(T0 // BUCKET_S)
    assert s.total == 3
    # T0 + 1 lands in T0's bucket unless T0 sits on the last second of its hour (it does not).
    assert int((T0 + 1) // BUCKET_S) == b
    assert s.buckets == {b: 2, b + 1: 1}


def test_uncounted_activity_pairs_without_counting() -> None:
    s = apply_activity(ItemStats("x"), act("e1", "x", T0, False, ("a", 1)), WINDOW)
    assert s.total == 0
    assert s.buckets == {}
    assert s.cooc == {"a": 1.0}
    assert s.near == {"a": 1.0}


def test_near_only_within_the_near_window_cooc_always() -> None:
    s = apply_activity(
        ItemStats("x"),
        act("e1", "x", T0, True, ("a", 1), ("b", NEAR_WINDOW), ("c", NEAR_WINDOW + 1), ("d", 20)),
        WINDOW,
    )
    assert s.cooc == {"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0}
    assert s.near == {"a": 1.0, "b": 1.0}
    s = apply_activity(s, act("e2", "x", T0, True, ("a", 9), ("c", 2)), WINDOW)
    assert s.cooc == {"a": 2.0, "b": 1.0, "c": 2.0, "d": 1.0}
    assert s.near == {"a": 1.0, "b": 1.0, "c": 1.0}


def test_replayed_activity_changes_nothing() -> None:
    s = apply_activity(ItemStats("x"), act("e1", "x", T0, True, ("a", 1)), WINDOW)
    again = apply_activity(s, act("e1", "x", T0, True, ("a", 1)), WINDOW)
    assert again is s
    assert again.total == 1


def test_replay_is_remembered_for_max_seen_activities() -> None:
    s = ItemStats("x")
    for n in range(MAX_SEEN + 1):
        s = apply_activity(s, act(f"e{n}"), WINDOW)
    assert len(s.seen) == MAX_SEEN
    assert "e0" not in s.seen
    assert apply_activity(s, act("e1"), WINDOW) is s
    assert s.total == MAX_SEEN + 1


def test_within_one_message_only_the_last_max_seen_ids_are_remembered() -> None:
    # 40 rows in one fold, then e0 again: e0 has left the window of MAX_SEEN ids and counts anew,
    # as it would in 41 separate messages; e39 is still in it and does not.
    rows = [(f"e{n}", T0, True, (("a", 1),)) for n in range(40)]
    s = apply_rows(ItemStats("x"), [*rows, ("e0", T0, True, (("a", 1),)), rows[-1]], WINDOW)
    assert s.total == 41
    assert s.seen == (*[f"e{n}" for n in range(40 - MAX_SEEN + 1, 40)], "e0")


def test_pruning_keeps_the_strongest_then_lowest_ids_as_a_full_sort_would() -> None:
    rng = random.Random(7)
    names = [f"n{n:05d}" for n in rng.sample(range(100_000), PRUNE_AT + 1)]
    tally = {name: float(rng.choice([1, 1, 1, 2, 3])) for name in names}  # many ties at each count
    # Each name's rows together; the last name's single row passes PRUNE_AT and prunes once.
    tally[names[-1]] = 1.0
    rows = [
        (f"e{n}-{k}", T0, False, ((name, 9),))
        for n, name in enumerate(names)
        for k in range(int(tally[name]))
    ]
    folded = apply_rows(ItemStats("x"), rows, WINDOW)
    kept = sorted(tally, key=lambda k: (-tally[k], k))[:MAX_NEIGHBORS]
    assert folded.cooc == {k: tally[k] for k in kept}


def test_replaying_an_uncommitted_tail_of_forty_activities_counts_nothing_twice() -> None:
    # One item-activity message per activity, at offsets 100..139 of the item's partition.
    tail = [(100 + n, act(f"e{n}", "x", T0 + n, True, ("a", 1))) for n in range(40)]
    s = ItemStats("x")
    for offset, a in tail:
        s = apply_message(s, [a], WINDOW, offset)
    for offset, a in tail:  # the consumer restarts from the last committed offset and sees them again
        s = apply_message(s, [a], WINDOW, offset)
    assert s.total == 40
    assert s.cooc == {"a": 40.0}
    assert s.offset == 139


def test_neighbors_are_pruned_to_the_strongest() -> None:
    limit = PRUNE_AT
    s = ItemStats("x")
    # "strong" is paired three times (near), then enough weak distinct neighbours to pass the limit.
    for n in range(3):
        s = apply_activity(s, act(f"s{n}", "x", T0, False, ("strong", 1)), WINDOW)
    for n in range(limit):
        s = apply_activity(s, act(f"w{n}", "x", T0, False, (f"weak{n:03d}", 1 + n % 10)), WINDOW)
    # After the limit-th distinct neighbour the map had limit+1 entries → pruned to MAX_NEIGHBORS.
    assert len(s.cooc) == MAX_NEIGHBORS
    assert s.cooc["strong"] == 3.0
    # Ties (count 1) keep the lowest names.
    kept_weak = sorted(k for k in s.cooc if k != "strong")
    assert kept_weak == [f"weak{n:03d}" for n in range(MAX_NEIGHBORS - 1)]
    assert set(s.near) <= set(s.cooc)
    assert s.near["strong"] == 3.0


def test_neighbors_below_the_limit_are_not_pruned() -> None:
    limit = PRUNE_AT
    s = ItemStats("x")
    for n in range(limit):
        s = apply_activity(s, act(f"w{n}", "x", T0, False, (f"n{n}", 1)), WINDOW)
    assert len(s.cooc) == limit


def test_old_buckets_are_pruned_beyond_two_windows() -> None:
    s = apply_activity(ItemStats("x"), act("e1", ts=T0), WINDOW)
    s = apply_activity(s, act("e2", ts=T0 + 2 * WINDOW - BUCKET_S), WINDOW)
    assert len(s.buckets) == 2  # still within two windows of the newest
    s = apply_activity(s, act("e3", ts=T0 + 2 * WINDOW + 2 * BUCKET_S), WINDOW)
    assert int(T0 // BUCKET_S) not in s.buckets
    assert s.total == 3  # the all-time count is kept


def test_late_activity_does_not_prune_newer_buckets() -> None:
    s = apply_activity(ItemStats("x"), act("e1", ts=T0 + 10 * WINDOW), WINDOW)
    s = apply_activity(s, act("e2", ts=T0), WINDOW)
    assert int((T0 + 10 * WINDOW) // BUCKET_S) in s.buckets


def test_apply_is_pure() -> None:
    s = ItemStats("x")
    apply_activity(s, act("e1", "x", T0, True, ("a", 1)), WINDOW)
    assert s == ItemStats("x")


# --- window_count and knn_similarity -------------------------------------------------------------------


def test_window_count_covers_whole_buckets_ending_at_now() -> None:
    b = 500_000  # an hour index
    s = ItemStats("x", buckets={b - 3: 100, b - 2: 10, b - 1: 5, b: 2, b + 1: 1000})
    now = b * BUCKET_S + 1800.0  # half-way through bucket b
    # 3 hours back from now ends half-way through bucket b-3, so buckets b-2 .. b count.
    assert window_count(s, now, 3 * HOUR) == 10 + 5 + 2
    assert window_count(s, now, HOUR) == 2
    assert window_count(s, now, 4 * HOUR) == 100 + 10 + 5 + 2
    assert window_count(ItemStats("x"), now, HOUR) == 0


def test_knn_similarity() -> None:
    assert knn_similarity(4.0, 4, 16) == pytest.approx(4.0 / 8.0)
    assert knn_similarity(3.0, 9, 1) == pytest.approx(1.0)
    assert knn_similarity(2.0, 3, 5) == pytest.approx(2 / math.sqrt(15))
    assert knn_similarity(0.0, 4, 4) == 0.0
    assert knn_similarity(1.0, 0, 4) == 0.0
    assert knn_similarity(1.0, 4, 0) == 0.0


# --- serialisation ----------------------------------------------------------------------------------


def test_item_stats_round_trip_through_json() -> None:
    s = ItemStats("x")
    s = apply_activity(s, act("e1", "x", T0, True, ("a", 1), ("b", 9)), WINDOW)
    s = apply_activity(s, act("e2", "x", T0 + HOUR, True, ("a", 2)), WINDOW)
    data = orjson.loads(orjson.dumps(s.to_dict()))  # JSON object keys are strings
    assert all(isinstance(k, str) for k in data["buckets"])
    restored = ItemStats.from_dict(data)
    assert restored == s
    # A restored state still deduplicates replays.
    assert apply_activity(restored, act("e2", "x", T0 + HOUR, True, ("a", 2)), WINDOW) is restored


def test_from_dict_defaults() -> None:
    assert ItemStats.from_dict({"item_id": "x"}) == ItemStats("x")
