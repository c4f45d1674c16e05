"""Per-item statistics: co-visitation, item-item co-occurrence, and hopping-window counts.

Fed by ``Activity`` messages that the user-partitioned event agent derives from each event and
sends to a topic keyed by item, so each item's statistics have one writer.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from stream.profile import Profile, recent_distinct
from stream.topics import key_partition

NEAR_WINDOW = 5  # a co-visit: the two items are at most this many steps apart in the user's history
HISTORY_FOR_COOC = 20  # how far back in the user's history an event pairs with earlier items
MAX_NEIGHBORS = 60
# Pruning back to MAX_NEIGHBORS only once twice as many accumulate: one sort per ~60 new neighbours.
PRUNE_AT = 2 * MAX_NEIGHBORS
MAX_SEEN = 32
BUCKET_S = 3600.0
# Rows per packed item-activity message. A backlog batch's ~5,000 rows per partition in one message
# took about twice the Python time to parse and check as 256-row messages (orjson.loads alone 6x),
# and 256 rows still cut the messages ~9x against one per item.
MAX_ROWS_PER_MESSAGE = 256

# One activity on the item-activity topic: [activity_id, ts, count, [[other item, distance], ...]].
# Positional rather than an object per activity: about 20 of them per event make this the largest
# stream the worker writes and reads (2.4x fewer bytes than objects). A message packs the rows of
# every item of one partition, {item: [row, ...]} (``pack_by_partition``); earlier forms were keyed
# by the item: a list of rows, or before that a list of objects.
Row = tuple[str, float, bool, Sequence[Sequence[Any]]]


class MalformedActivity(ValueError):
    """An item-activity message that is JSON but not a list of activities."""


@dataclass(frozen=True, slots=True)
class Activity:
    """One event's effect on one item: count it (for the event's own item) and pair it."""

    activity_id: str
    item_id: str
    ts: float
    count: bool
    co_items: tuple[tuple[str, int], ...]  # (other item, distance in the user's history)

    def to_dict(self) -> dict[str, Any]:
        return {
            "activity_id": self.activity_id,
            "item_id": self.item_id,
            "ts": self.ts,
            "count": self.count,
            "co_items": [list(c) for c in self.co_items],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Activity:
        return cls(
            activity_id=str(data["activity_id"]),
            item_id=str(data["item_id"]),
            ts=float(data["ts"]),
            count=bool(data["count"]),
            co_items=tuple((str(i), int(d)) for i, d in data.get("co_items", [])),
        )

    def to_row(self) -> list[Any]:
        return [self.activity_id, self.ts, self.count, [list(c) for c in self.co_items]]


@dataclass(frozen=True, slots=True)
class ItemStats:
    item_id: str
    total: int = 0
    buckets: dict[int, int] = field(default_factory=dict)
    near: dict[str, float] = field(default_factory=dict)
    cooc: dict[str, float] = field(default_factory=dict)
    seen: tuple[str, ...] = ()
    # Offset of the last applied item-activity message (the topic is item-keyed: one partition each).
    offset: int = -1

    def to_dict(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "offset": self.offset,
            "total": self.total,
            "buckets": {str(k): v for k, v in self.buckets.items()},
            "near": dict(self.near),
            "cooc": dict(self.cooc),
            "seen": list(self.seen),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ItemStats:
        return cls(
            item_id=str(data["item_id"]),
            total=int(data.get("total", 0)),
            buckets={int(k): int(v) for k, v in data.get("buckets", {}).items()},
            near={str(k): float(v) for k, v in data.get("near", {}).items()},
            cooc={str(k): float(v) for k, v in data.get("cooc", {}).items()},
            seen=tuple(data.get("seen", [])),
            offset=int(data.get("offset", -1)),
        )


def activities_for(profile_before: Profile, event_id: str, item_id: str, ts: float) -> list[Activity]:
    """The activities one event produces, given the user's profile *before* the event."""
    history = recent_distinct(profile_before, HISTORY_FOR_COOC, exclude=item_id)
    pairs = tuple((other, distance) for distance, other in enumerate(history, start=1))
    out = [Activity(event_id, item_id, ts, True, pairs)]
    out.extend(Activity(event_id, other, ts, False, ((item_id, distance),)) for other, distance in pairs)
    return out


def activity_rows(
    profile_before: Profile, event_id: str, item_id: str, ts: float
) -> list[tuple[str, list[Any]]]:
    """``activities_for`` as (item, wire row) pairs, built without the intermediate objects: the
    event agent's hot path (about 20 activities per event)."""
    history = recent_distinct(profile_before, HISTORY_FOR_COOC, exclude=item_id)
    out: list[tuple[str, list[Any]]] = [
        (item_id, [event_id, ts, True, [[other, d] for d, other in enumerate(history, start=1)]])
    ]
    out.extend([(other, [event_id, ts, False, [[item_id, d]]]) for d, other in enumerate(history, start=1)])
    return out


def pack_by_partition(
    rows_by_item: dict[str, list[list[Any]]], partitions: int, max_rows: int = MAX_ROWS_PER_MESSAGE
) -> list[tuple[int, dict[str, list[list[Any]]]]]:
    """Item-activity messages, (partition, {item: rows}), each item in the partition its key hashes
    to: the partition that holds its statistics. Keyed by item, live batches of a few events sent
    ~20 messages per event (one per item paired), each to be consumed and committed. A message is
    closed once it holds ``max_rows`` rows (an item's rows are never split)."""
    by_partition: dict[int, dict[str, list[list[Any]]]] = {}
    for item_id, rows in rows_by_item.items():
        by_partition.setdefault(key_partition(item_id.encode(), partitions), {})[item_id] = rows
    out: list[tuple[int, dict[str, list[list[Any]]]]] = []
    for partition, items in by_partition.items():
        message: dict[str, list[list[Any]]] = {}
        size = 0
        for item_id, rows in items.items():
            message[item_id] = rows
            size += len(rows)
            if size >= max_rows:
                out.append((partition, message))
                message, size = {}, 0
        if message:
            out.append((partition, message))
    return out


def decode_message(key: bytes | None, data: Any) -> dict[str, list[Row]]:
    """The rows of one decoded item-activity message, by item, checked for shape.

    Reads the packed form ({item: [row, ...]}), and the earlier forms keyed by the item (a list of
    rows; a list of ``Activity.to_dict`` objects, each naming its item), so messages written before
    an upgrade still apply. Raises ``MalformedActivity``.
    """
    if isinstance(data, dict):
        if not all(type(item_id) is str and item_id for item_id in data):
            raise MalformedActivity("item-activity message names an empty item")
        return {item_id: _rows(rows, item_id) for item_id, rows in data.items()}
    if not isinstance(data, list):
        raise MalformedActivity("item-activity message is not a list or an object of items")
    out: dict[str, list[Row]] = {}
    try:
        for raw in data:
            if isinstance(raw, dict):
                a = Activity.from_dict(raw)
                out.setdefault(a.item_id, []).append((a.activity_id, a.ts, a.count, a.co_items))
                continue
            if key is None:
                raise MalformedActivity("item-activity message has no key (the item)")
            out.setdefault(key.decode("utf-8", errors="replace"), []).extend(_rows([raw], ""))
    except MalformedActivity:
        raise
    except (KeyError, ValueError, TypeError) as exc:
        raise MalformedActivity(f"item-activity message is malformed: {exc}") from None
    return out


def _rows(data: Any, item_id: str) -> list[Row]:
    """Wire rows checked for shape (``item_id`` names the item in the errors of the packed form)."""
    where = f" for item {item_id!r}" if item_id else ""
    if not isinstance(data, list):
        raise MalformedActivity(f"item-activity rows{where} are not a list")
    out: list[Row] = []
    try:
        for activity_id, ts, count, co_items in data:
            for other, distance in co_items:
                if type(other) is not str or type(distance) is not int:
                    raise MalformedActivity(
                        f"item-activity pair {[other, distance]!r}{where} is not [item, distance]"
                    )
            if type(activity_id) is not str or type(count) is not bool:
                raise MalformedActivity(f"item-activity row{where} is not [activity_id, ts, count, pairs]")
            out.append((activity_id, float(ts), count, co_items))
    except MalformedActivity:
        raise
    except (KeyError, ValueError, TypeError) as exc:
        raise MalformedActivity(f"item-activity message is malformed: {exc}") from None
    return out


def apply_activity(stats: ItemStats, activity: Activity, window_s: float) -> ItemStats:
    """Fold one activity into an item's statistics; a replayed activity changes nothing."""
    return _fold(stats, ((activity.activity_id, activity.ts, activity.count, activity.co_items),), window_s)


def apply_message(
    stats: ItemStats, activities: Sequence[Activity], window_s: float, offset: int | None = None
) -> ItemStats:
    """Fold one item-activity message (its activities for this item) into the statistics.

    A message at or below the last applied ``offset`` is a redelivery after a crash and changes
    nothing, however long the replayed tail; ``activity_id`` catches a duplicate sent twice.
    """
    rows = [(a.activity_id, a.ts, a.count, a.co_items) for a in activities]
    return apply_rows(stats, rows, window_s, offset)


def apply_rows(
    stats: ItemStats, rows: Iterable[Row], window_s: float, offset: int | None = None
) -> ItemStats:
    """``apply_message`` for rows as ``decode_message`` gives them (no objects per activity)."""
    if offset is not None and offset <= stats.offset:
        return stats
    return _fold(stats, rows, window_s, offset)


def _fold(stats: ItemStats, rows: Iterable[Row], window_s: float, offset: int | None = None) -> ItemStats:
    """Activities applied in order, on working copies made once (the hot path of item statistics);
    ``offset`` (when given) becomes the last applied one, replays or not."""
    # The last MAX_SEEN ids in order, and as a set for the check each row makes.
    seen = deque(stats.seen)
    seen_set = set(seen)
    total = stats.total
    buckets: dict[int, int] | None = None
    near: dict[str, float] | None = None
    cooc: dict[str, float] | None = None
    for activity_id, ts, count, co_items in rows:
        if activity_id in seen_set:
            continue
        if near is None or cooc is None:
            near, cooc = dict(stats.near), dict(stats.cooc)
        seen.append(activity_id)
        seen_set.add(activity_id)
        if len(seen) > MAX_SEEN:
            seen_set.discard(seen.popleft())
        if count:
            total += 1
            oldest = int((ts - 2 * window_s) // BUCKET_S)
            source = buckets if buckets is not None else stats.buckets
            buckets = {b: c for b, c in source.items() if b >= oldest}
            bucket = int(ts // BUCKET_S)
            buckets[bucket] = buckets.get(bucket, 0) + 1
        for other, distance in co_items:
            cooc[other] = cooc.get(other, 0.0) + 1.0
            if distance <= NEAR_WINDOW:
                near[other] = near.get(other, 0.0) + 1.0
        if len(cooc) > PRUNE_AT:
            # By count descending, then id: sorted by id first, the stable count sort keeps that
            # order among equal counts (two sorts in C, no key tuple per neighbour).
            counts = cooc
            keep = sorted(counts)
            keep.sort(key=counts.__getitem__, reverse=True)
            cooc = {k: counts[k] for k in keep[:MAX_NEIGHBORS]}
            near = {k: v for k, v in near.items() if k in cooc}
    last = stats.offset if offset is None else offset
    if near is None or cooc is None:  # every activity was a replay
        return stats if last == stats.offset else replace(stats, offset=last)
    return replace(
        stats,
        offset=last,
        total=total,
        buckets=buckets if buckets is not None else stats.buckets,
        near=near,
        cooc=cooc,
        seen=tuple(seen),
    )


def window_count(stats: ItemStats, now: float, window_s: float) -> int:
    """Interactions in the hopping window of ``window_s`` ending at the bucket holding ``now``."""
    last = int(now // BUCKET_S)
    first = int((now - window_s) // BUCKET_S) + 1
    return sum(c for b, c in stats.buckets.items() if first <= b <= last)


def knn_similarity(cooc: float, total_a: int, total_b: int) -> float:
    if cooc <= 0 or total_a <= 0 or total_b <= 0:
        return 0.0
    return cooc / math.sqrt(total_a * total_b)
