"""Which events are held out, and where each evaluation (or training) query is issued.

Two protocols over the seeded-tie-break event order of ``workers.movielens.load_interactions``:

* ``leave_last_out``: per user, the last event is the *test* target; the ``train_shifts`` events
  before it (and, with ``cold_starts``, the user's first event, queried with no history) are
  *train* targets (used only to train the head). Test events are never applied to
  any state, so nothing a training example sees depends on a test event.
* ``time_cut``: one global cut at a quantile of the event order; for every user with an event
  after the cut, the first such event is the test target, and the state holds only pre-cut events.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from workers.movielens import Interaction

Role = Literal["test", "train"]


@dataclass(frozen=True, slots=True)
class Plan:
    """What the replay does with each event position of ``events``."""

    name: str
    events: Sequence[Interaction]
    targets: dict[int, Role]  # event position -> query issued just before that event
    applied: frozenset[int] | None  # positions folded into the state (None = all non-test events)
    cut: int | None = None  # time-cut: positions >= cut are never applied

    def applies(self, position: int) -> bool:
        if self.cut is not None and position >= self.cut:
            return False
        if self.targets.get(position) == "test":
            return False
        return self.applied is None or position in self.applied


def _by_user(events: Sequence[Interaction]) -> dict[str, list[int]]:
    positions: dict[str, list[int]] = defaultdict(list)
    for pos, event in enumerate(events):
        positions[event.user_id].append(pos)
    return positions


def leave_last_out(
    events: Sequence[Interaction], train_shifts: int = 2, min_history: int = 3, cold_starts: bool = False
) -> Plan:
    targets: dict[int, Role] = {}
    for positions in _by_user(events).values():
        if len(positions) < 2:
            continue
        targets[positions[-1]] = "test"
        for shift in range(1, train_shifts + 1):
            if len(positions) - 1 - shift >= min_history:
                targets[positions[-1 - shift]] = "train"
        if cold_starts and len(positions) > train_shifts + 2:
            targets.setdefault(positions[0], "train")  # a cold user: teaches the head cold_user=1
    return Plan("leave_last_out", events, targets, None)


def time_cut(events: Sequence[Interaction], quantile: float = 0.9) -> Plan:
    cut = int(len(events) * quantile)
    targets: dict[int, Role] = {}
    done: set[str] = set()
    for pos in range(cut, len(events)):
        user = events[pos].user_id
        if user not in done:
            done.add(user)
            targets[pos] = "test"
    return Plan("time_cut", events, targets, None, cut=cut)


def held_out_events(plan: Plan) -> set[tuple[str, str, float]]:
    """(user, item, ts) of every test target: must never reach training data."""
    return {
        (plan.events[p].user_id, plan.events[p].item_id, plan.events[p].ts)
        for p, role in plan.targets.items()
        if role == "test"
    }
