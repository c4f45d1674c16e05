"""Exploration: epsilon-greedy over the tail of the top-k, with logged propensities.

With probability ``epsilon`` one of the last ``slots`` positions of the top ``k`` is given to a
candidate drawn uniformly from ranks ``k+1..n``; the item it displaces is not shown. The draws come
from SHA-256 of the request id, so a replay of the same request gives the same answer.

The propensity logged with each shown item is the probability that the policy puts that item in
that slot, given the ranked list:

* a slot outside the last ``slots``: 1.0;
* an eligible slot keeping its ranked item: ``1 - epsilon / m`` (``m`` eligible slots);
* an eligible slot holding an explored item: ``epsilon / (m * (n - k))``.

These make the logs usable for inverse-propensity (unbiased) offline evaluation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from stream.records import RecommendedItem

EXPLORING_PREFIX = "exploring: "


@dataclass(frozen=True, slots=True)
class Exploration:
    order: list[int]  # indices into the ranked list, one per shown slot
    propensities: list[float]  # aligned with ``order``
    explored_slot: int | None  # the 0-based slot given to an explored item, if any


def uniforms(request_id: str, salt: str = "explore") -> tuple[float, float, float]:
    """Three independent points in [0, 1) from SHA-256(salt, NUL, request_id): coin, slot, candidate."""
    digest = hashlib.sha256(salt.encode("utf-8") + b"\x00" + request_id.encode("utf-8")).digest()
    coin, slot, candidate = (int.from_bytes(digest[o : o + 8], "big") / 2.0**64 for o in (0, 8, 16))
    return coin, slot, candidate


def epsilon_greedy(n: int, k: int, epsilon: float, request_id: str, slots: int = 1) -> Exploration:
    """The shown order of a ranked list of ``n`` with ``k`` slots, and each slot's propensity."""
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    if slots < 1:
        raise ValueError(f"slots must be at least 1, got {slots}")
    k = min(max(k, 0), n)
    order = list(range(k))
    pool = n - k
    m = min(slots, k)
    if epsilon == 0.0 or pool == 0 or m == 0:
        return Exploration(order, [1.0] * k, None)
    coin, u_slot, u_cand = uniforms(request_id)
    keep = 1.0 - epsilon / m
    propensities = [1.0] * (k - m) + [keep] * m
    if coin >= epsilon:
        return Exploration(order, propensities, None)
    slot = k - m + min(int(u_slot * m), m - 1)
    order[slot] = k + min(int(u_cand * pool), pool - 1)
    propensities[slot] = epsilon / (m * pool)
    return Exploration(order, propensities, slot)


def explore(
    items: Sequence[RecommendedItem], k: int, epsilon: float, request_id: str, slots: int = 1
) -> tuple[list[RecommendedItem], bool]:
    """Apply ``epsilon_greedy`` to a ranked list: the shown top ``k`` (ranks 1..k, each with its
    propensity; the explored one's reason prefixed ``exploring: ``) and whether one was explored."""
    plan = epsilon_greedy(len(items), k, epsilon, request_id, slots)
    shown = []
    for slot, (r, p) in enumerate(zip(plan.order, plan.propensities, strict=True)):
        update: dict[str, object] = {"rank": slot + 1, "propensity": p}
        if slot == plan.explored_slot:
            update["reason"] = EXPLORING_PREFIX + items[r].reason
        shown.append(items[r].model_copy(update=update))
    return shown, plan.explored_slot is not None
