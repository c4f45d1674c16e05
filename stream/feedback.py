"""The feedback join: impressions joined with the user's later events into labelled examples.

Pure functions over one user's join state (a JSON dict in the ``feedback`` table, key ``user_id``),
called by the query agent (an impression opens), the event agent (an outcome arrives) and a sweep
timer (windows close). Impressions and events are keyed by ``user_id`` on co-partitioned topics, so
the whole join for a user happens on one worker without a repartition.

The user's state holds what attribution needs of each open impression: its request id, time, the
ids shown and the outcomes so far (``entry``). What training needs of it (features, scores, model,
context: ``payload``) is written once, under the request id, to the ``open-impressions`` table and
read back when the window closes. Each query and event rewrites the user's state, and with whole
impressions in it that was up to ``max_open`` x ~1.7 KB (85 KB) of JSON and changelog per write.

Semantics (docs/learning-loop.md):

* An outcome belongs to an impression when the event names its ``request_id`` and the item was
  shown, or, without a ``request_id``, when the item was shown by the user's newest open impression
  that showed it, from its ``ts`` up to ``ts + window`` (a purchase after a recommendation is a
  conversion even when the shop did not pass the request id through).
* An impression's label per item is the strongest outcome within the window (``OUTCOME_STRENGTH``);
  re-applying the same event changes nothing, so redelivery after a crash does not double-count.
* A window closes once the watermark passes ``ts + window + grace``; its examples (one per shown
  item, positives and shown-not-clicked negatives) are emitted then. An outcome for a closed
  impression, or after its window, is *late*: counted, not attributed.
* At most ``max_open`` impressions stay open per user; opening one more closes the oldest early
  (emitted, never dropped).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from stream.records import OUTCOME_STRENGTH, Event, Impression, ModelInfo, TrainingExample

CLOSED_KEPT = 200  # closed request ids remembered per user: redelivered impressions and late events
LABEL_MIN_STRENGTH = OUTCOME_STRENGTH["click"]

State = dict[str, Any]
Attribution = Literal["attributed", "late", "unmatched", "duplicate"]


@dataclass(frozen=True, slots=True)
class Window:
    length_s: float
    grace_s: float
    max_open: int

    def closes_at(self, shown_at: float) -> float:
        return shown_at + self.length_s + self.grace_s


def empty() -> State:
    return {"open": [], "closed": []}


def _copy(state: State | None) -> State:
    if not state:
        return empty()
    return {"open": list(state.get("open", [])), "closed": list(state.get("closed", []))}


def open_impression(state: State | None, impression: Impression, window: Window) -> tuple[State, list[State]]:
    """Add ``impression``; returns the new state and any impressions closed early to make room.

    An impression already open or recently closed (a redelivered query) is ignored."""
    out = _copy(state)
    rid = impression.request_id
    if rid in out["closed"] or any(o["request_id"] == rid for o in out["open"]):
        return out, []
    entry = {
        "request_id": rid,
        "ts": impression.ts,
        "shown": [i.item_id for i in impression.items],
        "outcomes": {},
    }
    out["open"].append(entry)
    out["open"].sort(key=lambda o: o["ts"])
    evicted: list[State] = []
    while len(out["open"]) > window.max_open:
        evicted.append(out["open"].pop(0))
    _remember_closed(out, [o["request_id"] for o in evicted])
    return out, evicted


def apply_outcome(state: State | None, event: Event, window: Window) -> tuple[State, Attribution]:
    """Record ``event`` as the outcome of the impression it belongs to, if any."""
    out = _copy(state)
    if event.request_id is not None:
        if event.request_id in out["closed"]:
            return out, "late"
        target = next((o for o in out["open"] if o["request_id"] == event.request_id), None)
        if target is None or not _shows(target, event.item_id):
            return out, "unmatched"
        if event.ts > target["ts"] + window.length_s:
            return out, "late"
    else:
        eligible = [
            o
            for o in out["open"]
            if _shows(o, event.item_id) and o["ts"] <= event.ts <= o["ts"] + window.length_s
        ]
        if not eligible:
            return out, "unmatched"
        target = eligible[-1]  # the newest: the recommendation the user most likely acted on
    current = target["outcomes"].get(event.item_id)
    strength = OUTCOME_STRENGTH[event.type]
    if current is not None and (
        OUTCOME_STRENGTH[current[0]] > strength
        or (OUTCOME_STRENGTH[current[0]] == strength and current[1] <= event.ts)
    ):
        return out, "duplicate"
    updated = {**target, "outcomes": {**target["outcomes"], event.item_id: [event.type, event.ts]}}
    out["open"] = [updated if o is target else o for o in out["open"]]
    return out, "attributed"


def close_due(state: State | None, watermark: float, window: Window) -> tuple[State, list[State]]:
    """Close every impression whose window (plus grace) the watermark has passed."""
    out = _copy(state)
    due = [o for o in out["open"] if window.closes_at(o["ts"]) <= watermark]
    if not due:
        return out, []
    out["open"] = [o for o in out["open"] if window.closes_at(o["ts"]) > watermark]
    _remember_closed(out, [o["request_id"] for o in due])
    return out, due


def next_close(state: State | None, window: Window) -> float | None:
    """When the earliest open window closes (None when nothing is open): the sweep's index."""
    if not state or not state.get("open"):
        return None
    return min(window.closes_at(o["ts"]) for o in state["open"])


def payload(impression: Impression) -> State:
    """What the ``open-impressions`` table keeps of an impression until its window closes."""
    return impression.model_dump(mode="json")


def payload_of(closed: State, stored: State | None) -> State | None:
    """The payload for a closed ``entry``: the stored one, or the entry itself when it was written
    whole (the state's form before payloads had a table of their own)."""
    if stored is not None:
        return stored
    return closed if "items" in closed else None


def examples(closed: State, whole: State) -> list[TrainingExample]:
    """One example per shown item of a closed entry (its payload: ``whole``), labelled by its
    strongest outcome."""
    out = []
    for item in whole["items"]:
        outcome, at = closed["outcomes"].get(item["item_id"], ["none", None])
        out.append(
            TrainingExample(
                request_id=closed["request_id"],
                user_id=whole["user_id"],
                item_id=item["item_id"],
                rank=item["rank"],
                score=item["score"],
                propensity=item.get("propensity", 1.0),
                features=item["features"],
                context=whole["context"],
                variant=whole["variant"],
                model=ModelInfo.model_validate(whole["model"]),
                fallback=whole["fallback"],
                shown_at=closed["ts"],
                outcome=outcome,
                outcome_at=at,
                label=int(OUTCOME_STRENGTH[outcome] >= LABEL_MIN_STRENGTH),
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class ImpressionSummary:
    """What the online metrics count for one closed impression."""

    variant: str
    clicked: bool
    converted: bool
    reciprocal_rank: float  # 1 / rank of the first clicked item; 0 without a click


def summarise(rows: Sequence[TrainingExample]) -> ImpressionSummary:
    clicked = [r.rank for r in rows if r.label]
    return ImpressionSummary(
        variant=rows[0].variant if rows else "",
        clicked=bool(clicked),
        converted=any(r.outcome in ("add_to_cart", "purchase") for r in rows),
        reciprocal_rank=1.0 / min(clicked) if clicked else 0.0,
    )


def _shows(entry: State, item_id: str) -> bool:
    shown = entry.get("shown")
    if shown is None:  # an entry written whole, before payloads had a table of their own
        return any(i["item_id"] == item_id for i in entry["items"])
    return item_id in shown


def _remember_closed(state: State, request_ids: Iterable[str]) -> None:
    state["closed"] = [*state["closed"], *request_ids][-CLOSED_KEPT:]
