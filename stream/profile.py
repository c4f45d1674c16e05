"""Per-user state and the pure function that folds one event into it.

Time is event time (the event's ``ts``), never the wall clock, so replaying the same events in the
same order always gives the same profile: the changelog-restored state can be checked against it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from stream.records import Event, Item

EVENT_WEIGHTS = {"view": 1.0, "click": 2.0, "add_to_cart": 3.0, "purchase": 5.0}
MAX_RECENT_ITEMS = 50
MAX_RECENT_QUERIES = 10
MAX_PURCHASED = 2000
MAX_SEEN_EVENT_IDS = 256
MAX_AFFINITIES = 40
AFFINITY_HALF_LIFE_S = 14 * 24 * 3600.0


class RecentItem(NamedTuple):
    # A tuple, not a frozen dataclass: a profile holds up to 50 and every read of one from its table
    # builds them all; the dataclass's __init__ took ~1.4 us each, over half of Profile.from_dict.
    item_id: str
    ts: float
    type: str


@dataclass(frozen=True, slots=True)
class Profile:
    user_id: str
    recent_items: tuple[RecentItem, ...] = ()
    recent_queries: tuple[tuple[str, float], ...] = ()
    affinities: dict[str, float] = field(default_factory=dict)
    affinity_ts: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    purchased: frozenset[str] = frozenset()
    seen_event_ids: tuple[str, ...] = ()
    last_seen: float = 0.0
    # The offset of the last applied message of the (user-keyed, so single-partition) events topic.
    events_offset: int = -1
    # Set when the user was erased: older events (redelivered or late) must not rebuild the profile.
    erased_at: float = 0.0

    @property
    def is_cold(self) -> bool:
        return not self.recent_items

    def decayed_affinities(self, now: float) -> dict[str, float]:
        return _decay(self.affinities, self.affinity_ts, now)

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "recent_items": [list(r) for r in self.recent_items],
            "recent_queries": [[q, ts] for q, ts in self.recent_queries],
            "affinities": dict(self.affinities),
            "affinity_ts": self.affinity_ts,
            "counts": dict(self.counts),
            "purchased": sorted(self.purchased),
            "seen_event_ids": list(self.seen_event_ids),
            "last_seen": self.last_seen,
            "events_offset": self.events_offset,
            "erased_at": self.erased_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        return cls(
            user_id=str(data["user_id"]),
            recent_items=tuple(
                [RecentItem(str(i), float(t), str(k)) for i, t, k in data.get("recent_items", ())]
            ),
            recent_queries=tuple((str(q), float(t)) for q, t in data.get("recent_queries", [])),
            affinities={str(k): float(v) for k, v in data.get("affinities", {}).items()},
            affinity_ts=float(data.get("affinity_ts", 0.0)),
            counts={str(k): int(v) for k, v in data.get("counts", {}).items()},
            purchased=frozenset(map(str, data.get("purchased", []))),
            seen_event_ids=tuple(map(str, data.get("seen_event_ids", []))),
            last_seen=float(data.get("last_seen", 0.0)),
            events_offset=int(data.get("events_offset", -1)),
            erased_at=float(data.get("erased_at", 0.0)),
        )


def _decay(affinities: dict[str, float], since: float, now: float) -> dict[str, float]:
    if now <= since or not affinities:
        return dict(affinities)
    factor = math.pow(0.5, (now - since) / AFFINITY_HALF_LIFE_S)
    return {k: v * factor for k, v in affinities.items()}


def update_profile(profile: Profile, event: Event, item: Item | None, offset: int | None = None) -> Profile:
    """Fold ``event`` into ``profile``; a replayed or duplicate event leaves the profile unchanged.

    ``item`` is the catalog entry (for its categories); an unknown item still counts as history.
    ``offset`` is the event's offset in the events topic: a redelivery after a crash (offset at or
    below the last applied one) is skipped exactly, however many events it spans; a duplicate sent
    twice by a producer is caught by its ``event_id`` among the recent ones.
    """
    if offset is not None and offset <= profile.events_offset:
        return profile
    if event.ts <= profile.erased_at:
        return replace(profile, events_offset=offset) if offset is not None else profile
    if event.event_id in profile.seen_event_ids:
        return replace(profile, events_offset=offset) if offset is not None else profile
    now = max(event.ts, profile.affinity_ts)
    weight = EVENT_WEIGHTS[event.type]
    affinities = _decay(profile.affinities, profile.affinity_ts, now)
    if item is not None and item.categories:
        share = weight / len(item.categories)
        for category in item.categories:
            affinities[category] = affinities.get(category, 0.0) + share
    if len(affinities) > MAX_AFFINITIES:
        affinities = dict(sorted(affinities.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_AFFINITIES])
    recent = (*profile.recent_items, RecentItem(event.item_id, event.ts, event.type))[-MAX_RECENT_ITEMS:]
    purchased = profile.purchased
    if event.type == "purchase" and event.item_id not in purchased:
        purchased = purchased | {event.item_id}
        if len(purchased) > MAX_PURCHASED:
            keep = {r.item_id for r in recent if r.type == "purchase"}
            purchased = frozenset(keep)
    counts = {**profile.counts, event.type: profile.counts.get(event.type, 0) + 1}
    return replace(
        profile,
        recent_items=recent,
        affinities=affinities,
        affinity_ts=now,
        counts=counts,
        purchased=purchased,
        seen_event_ids=(*profile.seen_event_ids, event.event_id)[-MAX_SEEN_EVENT_IDS:],
        last_seen=max(profile.last_seen, event.ts),
        events_offset=profile.events_offset if offset is None else offset,
    )


def record_query(profile: Profile, text: str, ts: float) -> Profile:
    """Remember a search query (non-empty text only).

    Kept in time order and deduplicated, so a query redelivered after a crash, or processed out of
    order with another, leaves the same profile.
    """
    text = " ".join(text.split())
    if not text or (text, ts) in profile.recent_queries:
        return profile
    queries = tuple(sorted((*profile.recent_queries, (text, ts)), key=lambda q: (q[1], q[0])))
    return replace(
        profile, recent_queries=queries[-MAX_RECENT_QUERIES:], last_seen=max(profile.last_seen, ts)
    )


def interacted(profile: Profile) -> set[str]:
    """Items the user has already consumed and should not be recommended again."""
    return set(profile.purchased)


def erased(profile: Profile, erased_at: float) -> Profile:
    """What remains of a user after erasure: no behaviour, only what keeps older events from
    rebuilding it (the last applied events offset and the erasure time)."""
    return Profile(user_id=profile.user_id, events_offset=profile.events_offset, erased_at=erased_at)


def recent_distinct(profile: Profile, n: int, exclude: str | None = None) -> list[str]:
    """The user's ``n`` most recent distinct items, most recent first (``exclude`` left out)."""
    out: list[str] = []
    taken = {exclude}  # a set beside the list: this runs once per event (item statistics)
    for recent in reversed(profile.recent_items):
        if recent.item_id not in taken:
            taken.add(recent.item_id)
            out.append(recent.item_id)
            if len(out) >= n:
                break
    return out


def recent_titles(profile: Profile, catalog: Mapping[str, Item], n: int = 5) -> list[str]:
    """Titles of the user's most recent distinct items, oldest first."""
    return [catalog[i].title for i in reversed(recent_distinct(profile, n)) if i in catalog]
