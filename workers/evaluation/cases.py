"""Loading (and caching) the replayed queries of a protocol, and the item texts they rank."""

from __future__ import annotations

import hashlib
import pickle
import random
from pathlib import Path

from stream.records import Item
from stream.text import item_text
from workers.evaluation import replay as replay_mod
from workers.evaluation.replay import Case
from workers.evaluation.split import Plan, leave_last_out, time_cut
from workers.model.config import CACHE_DIR, CONFIG, ROOT
from workers.movielens import Interaction, load_interactions, load_items

PROTOCOLS = ("leave_last_out", "time_cut")
_SOURCES = (
    "stream/candidates.py",
    "stream/itemstats.py",
    "stream/profile.py",
    "stream/features.py",
    "stream/catalog.py",
    "stream/text.py",
    "workers/evaluation/replay.py",
    "workers/evaluation/split.py",
    "workers/movielens.py",
)


def make_plan(protocol: str, events: list[Interaction]) -> Plan:
    if protocol == "leave_last_out":
        return leave_last_out(events, train_shifts=CONFIG.train_shifts, cold_starts=CONFIG.cold_starts)
    if protocol == "time_cut":
        return time_cut(events)
    raise ValueError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")


def sample_users(events: list[Interaction], n: int, seed: int) -> set[str]:
    users = sorted({e.user_id for e in events}, key=int)
    return set(random.Random(seed).sample(users, min(n, len(users))))


def _key(protocol: str, n_events: int, users: set[str] | None, seed: int) -> str:
    h = hashlib.sha256(
        f"{protocol}|{n_events}|{seed}|{CONFIG.train_shifts}|{CONFIG.cold_starts}|{sorted(users) if users else None}".encode()
    )
    for src in _SOURCES:
        h.update((ROOT / src).read_bytes())
    return h.hexdigest()[:16]


def load_cases(
    protocol: str,
    quick_users: int | None = None,
    limit_events: int | None = None,
    seed: int = CONFIG.seed,
    cache: bool = True,
) -> tuple[dict[str, Item], list[str], list[Case]]:
    """Items, catalog ids (index order) and the cases of ``protocol``; cached under models/ranker/cache."""
    items = load_items()
    events = load_interactions(seed=seed)
    if limit_events:
        events = events[:limit_events]
    users = sample_users(events, quick_users, seed) if quick_users else None
    path = CACHE_DIR / f"cases-{protocol}-{_key(protocol, len(events), users, seed)}.pkl"
    if cache and path.exists():
        ids, cases = pickle.loads(path.read_bytes())
        return items, ids, cases
    state, cases = replay_mod.replay(make_plan(protocol, events), items, users=users)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(pickle.dumps((state.ids, cases), protocol=pickle.HIGHEST_PROTOCOL))
        tmp.replace(path)
    return items, state.ids, cases


def item_texts(items: dict[str, Item], ids: list[str]) -> list[str]:
    return [item_text(items[i]) for i in ids]


def cache_path(name: str) -> Path:
    return CACHE_DIR / name
