"""Table state read back from the broker, and the pure fold it must equal after any fault."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import orjson

from stream.itemstats import ItemStats, MalformedActivity, apply_rows, decode_message
from stream.profile import Profile, record_query, update_profile
from stream.records import Event, Item, Query
from stream.settings import Settings
from tests.support.stack import read_topic


def changelog_state(settings: Settings, table_name: str) -> dict[str, Any]:
    """The latest value per key in a table's changelog (None for a tombstone)."""
    messages = asyncio.run(read_topic(settings, f"{settings.app_id}-{table_name}-changelog"))
    state: dict[str, Any] = {}
    for msg in messages:
        state[json.loads(msg.key)] = json.loads(msg.value) if msg.value is not None else None
    return state


def expected_profiles(settings: Settings, items: dict[str, Item]) -> dict[str, dict[str, Any]]:
    """The pure fold of every event and query in the topics, per user in partition order."""
    profiles: dict[str, Profile] = {}
    for msg in asyncio.run(read_topic(settings, settings.topic("events"))):
        event = Event.model_validate_json(msg.value)
        before = profiles.get(event.user_id) or Profile(user_id=event.user_id)
        profiles[event.user_id] = update_profile(before, event, items.get(event.item_id), offset=msg.offset)
    for msg in asyncio.run(read_topic(settings, settings.topic("queries"))):
        query = Query.model_validate_json(msg.value)
        before = profiles.get(query.user_id) or Profile(user_id=query.user_id)
        profiles[query.user_id] = record_query(before, query.text, query.ts)
    return {u: p.to_dict() for u, p in profiles.items()}


def expected_item_stats(settings: Settings) -> dict[str, dict[str, Any]]:
    """The fold of the ``item-activity`` topic, each partition in offset order, as the item agent
    folds it (a message at or below an item's last applied offset, or an activity id it has seen,
    changes nothing): what the ``item-stats`` changelog must hold after any fault."""
    stats: dict[str, ItemStats] = {}
    messages = asyncio.run(read_topic(settings, settings.topic("item-activity")))
    for msg in sorted(messages, key=lambda m: (m.partition, m.offset)):
        try:
            by_item = decode_message(msg.key, orjson.loads(msg.value or b"[]"))
        except (orjson.JSONDecodeError, MalformedActivity):
            continue  # dead-lettered by the agent, applied nowhere
        for item_id, rows in by_item.items():
            current = stats.get(item_id) or ItemStats(item_id)
            stats[item_id] = apply_rows(current, rows, settings.trending_window_s, msg.offset)
    return {item_id: s.to_dict() for item_id, s in stats.items()}


def divergence(actual: dict[str, Any], expected: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per diverging user, the fields that differ (a user in only one of the two counts too)."""
    out: dict[str, dict[str, Any]] = {}
    for user in sorted(set(actual) | set(expected)):
        got, want = actual.get(user), expected.get(user)
        if got == want:
            continue
        if got is None or want is None:
            out[user] = {"changelog": got is not None, "fold": want is not None}
        else:
            out[user] = {k: (str(got.get(k))[:200], str(v)[:200]) for k, v in want.items() if got.get(k) != v}
    return out
