"""The offline candidate stage: events replayed in order through the pipeline's own pure functions.

``stream.profile.update_profile``, ``stream.itemstats.activities_for``/``apply_activity`` and
``stream.candidates.gather`` are the functions the live worker calls, so each query sees the
profile, item statistics and candidate features the pipeline would hold at that moment (event
time, nothing from later). Beside them, dense count matrices feed the full-catalog baselines
(popularity, co-visitation, item-kNN) from exactly the same applied events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np

from stream.candidates import CandidateParams, gather, top_genres
from stream.catalog import CatalogIndex
from stream.itemstats import NEAR_WINDOW, ItemStats, activities_for, apply_activity, window_count
from stream.profile import Profile, update_profile
from stream.records import Event, Item
from stream.settings import Settings
from stream.text import user_text
from workers.evaluation.split import Plan, Role

# MovieLens ratings are consumption: replayed as "purchase" so the pipeline's ``interacted``
# filter drops them from later candidate sets (the dataset has no repeat consumption).
EVENT_TYPE: Final[Literal["purchase"]] = "purchase"
KNN_HISTORY = 20
KNN_DECAY = 0.85
COVISIT_HISTORY = 20


@dataclass
class Case:
    """One query: what the pipeline would know just before the target event."""

    user_id: str
    role: Role
    target: str  # held-out item id
    now: float
    n_history: int
    target_count: int  # the target's interactions so far (cold items have few)
    query: str  # stream.text.user_text of the history (never the target)
    seen: np.ndarray  # catalog indices of consumed items (excluded from full-catalog rankings)
    candidates: list[str]
    features: np.ndarray  # (len(candidates), 8), FEATURE_NAMES order
    baselines: dict[str, np.ndarray] = field(default_factory=dict)  # full-catalog scores


class Replay:
    def __init__(self, items: Mapping[str, Item], trending_window_s: float | None = None) -> None:
        self.items = dict(items)
        self.ids = sorted(self.items, key=lambda i: (len(i), i))
        self.index = {item_id: n for n, item_id in enumerate(self.ids)}
        self.catalog = CatalogIndex()
        for item in self.items.values():
            self.catalog.upsert(item)
        self.window_s = trending_window_s or Settings().trending_window_s
        self.profiles: dict[str, Profile] = {}
        self.stats: dict[str, ItemStats] = {}
        self.popularity: dict[str, int] = {}
        self.history: dict[str, list[int]] = {}
        n = len(self.ids)
        self.total = np.zeros(n, dtype=np.float64)
        self.cooc = np.zeros((n, n), dtype=np.float32)  # user-level co-occurrence (item-kNN)
        self.near = np.zeros((n, n), dtype=np.float32)  # within NEAR_WINDOW steps (co-visitation)
        self.params = CandidateParams()

    # --- state -------------------------------------------------------------------------
    def apply(self, event_id: str, user_id: str, item_id: str, ts: float) -> None:
        profile = self.profiles.get(user_id) or Profile(user_id=user_id)
        for activity in activities_for(profile, event_id, item_id, ts):
            before = self.stats.get(activity.item_id) or ItemStats(item_id=activity.item_id)
            self.stats[activity.item_id] = apply_activity(before, activity, self.window_s)
        event = Event(event_id=event_id, user_id=user_id, item_id=item_id, type=EVENT_TYPE, ts=ts)
        self.profiles[user_id] = update_profile(profile, event, self.items.get(item_id))
        self.popularity[item_id] = self.popularity.get(item_id, 0) + 1
        j = self.index.get(item_id)
        if j is None:
            return
        hist = self.history.setdefault(user_id, [])
        if hist:
            h = np.asarray(hist, dtype=np.int64)
            np.add.at(self.cooc[j], h, 1.0)
            np.add.at(self.cooc[:, j], h, 1.0)
            recent = np.asarray(hist[-NEAR_WINDOW:], dtype=np.int64)
            np.add.at(self.near[j], recent, 1.0)
            np.add.at(self.near[:, j], recent, 1.0)
        hist.append(j)
        self.total[j] += 1

    def trending(self, now: float) -> dict[str, int]:
        out = {}
        for item_id, stats in self.stats.items():
            count = window_count(stats, now, self.window_s)
            if count:
                out[item_id] = count
        return out

    # --- queries -----------------------------------------------------------------------
    def query(self, user_id: str, role: Role, target: str, now: float, with_baselines: bool) -> Case:
        profile = self.profiles.get(user_id) or Profile(user_id=user_id)
        titles = [self.items[r.item_id].title for r in profile.recent_items if r.item_id in self.items]
        text = user_text("", titles, top_genres(profile, now, self.params.top_genres))
        cset = gather(
            profile,
            "",
            None,
            self.catalog,
            self.stats.get,
            self.popularity,
            self.trending(now),
            now,
            self.params,
        )
        hist = self.history.get(user_id, [])
        case = Case(
            user_id=user_id,
            role=role,
            target=target,
            now=now,
            n_history=len(hist),
            target_count=self.popularity.get(target, 0),
            query=text,
            seen=np.asarray(sorted(set(hist)), dtype=np.int64),
            candidates=[c.signals.item_id for c in cset.candidates],
            features=cset.features.astype(np.float32),
        )
        if with_baselines:
            case.baselines = self.baseline_scores(hist)
        return case

    def baseline_scores(self, hist: list[int]) -> dict[str, np.ndarray]:
        pop = self.total.copy()
        recent: list[int] = []
        for j in reversed(hist):
            if j not in recent:
                recent.append(j)
            if len(recent) >= max(KNN_HISTORY, COVISIT_HISTORY):
                break
        norm = np.sqrt(np.maximum(self.total, 1.0))
        knn = np.zeros(len(self.ids))
        covisit = np.zeros(len(self.ids))
        for k, a in enumerate(recent):
            w = KNN_DECAY**k
            if k < KNN_HISTORY:
                knn += w * self.cooc[a] / (norm[a] * norm)
            if k < COVISIT_HISTORY:
                covisit += w * self.near[a]
        return {"popularity": pop, "covisitation": covisit, "item_knn": knn}


def replay(
    plan: Plan, items: Mapping[str, Item], with_baselines: bool = True, users: set[str] | None = None
) -> tuple[Replay, list[Case]]:
    """Run ``plan`` and return its cases in event order (``users`` limits which queries are issued)."""
    state = Replay(items)
    cases: list[Case] = []
    for pos, event in enumerate(plan.events):
        role = plan.targets.get(pos)
        if role is not None and (users is None or event.user_id in users):
            now = event.ts if plan.cut is None else plan.events[plan.cut - 1].ts
            cases.append(
                state.query(event.user_id, role, event.item_id, now, with_baselines and role == "test")
            )
        if plan.applies(pos):
            state.apply(f"e{pos}", event.user_id, event.item_id, event.ts)
    return state, cases
