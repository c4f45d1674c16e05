"""Table state read back from the broker, and the pure fold it must equal after any fault."""

from __future__ import annotations

import asyncio
import json
from typing import Any

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
