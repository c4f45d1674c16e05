"""Online A/B metrics from the labelled examples, with 95% confidence intervals.

The unit is the impression (one recommendation request), so every rate is a proportion of
independent-ish trials: CTR@k = share of impressions with at least one click in the top k,
conversion = share with an add-to-cart or purchase of a shown item, MRR = mean of 1 / rank of the
first click (0 without one). Proportions get Wilson intervals (sound for small counts and rates
near 0); MRR and the CTR difference between two arms get normal intervals.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from stream.diversity import jaccard

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.4f} [{self.low:.4f}, {self.high:.4f}]"


def wilson(successes: int, trials: int, z: float = Z95) -> Interval:
    if trials <= 0:
        return Interval(0.0, 0.0, 0.0)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(values: Sequence[float], z: float = Z95) -> Interval:
    n = len(values)
    if n == 0:
        return Interval(0.0, 0.0, 0.0)
    mean = math.fsum(values) / n
    if n == 1:
        return Interval(mean, mean, mean)
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    half = z * math.sqrt(var / n)
    return Interval(mean, mean - half, mean + half)


def difference(a: tuple[int, int], b: tuple[int, int], z: float = Z95) -> Interval:
    """(successes, trials) of arm b minus arm a: the difference of proportions with a normal interval."""
    (sa, na), (sb, nb) = a, b
    if na == 0 or nb == 0:
        return Interval(0.0, 0.0, 0.0)
    pa, pb = sa / na, sb / nb
    half = z * math.sqrt(pa * (1 - pa) / na + pb * (1 - pb) / nb)
    return Interval(pb - pa, pb - pa - half, pb - pa + half)


@dataclass(frozen=True)
class ArmMetrics:
    arm: str
    impressions: int
    clicked: int
    converted: int
    ctr: Interval
    conversion: Interval
    mrr: Interval
    coverage: float  # distinct items shown / catalog size
    diversity: float  # mean intra-list genre diversity (1 - Jaccard), per impression
    models: list[str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def dedupe(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """One row per (request_id, item_id): the examples topic is at-least-once."""
    seen: dict[tuple[str, str], Mapping[str, Any]] = {}
    for row in rows:
        seen.setdefault((str(row["request_id"]), str(row["item_id"])), row)
    return list(seen.values())


def by_arm(
    rows: Iterable[Mapping[str, Any]],
    genres: Mapping[str, Sequence[str]],
    k: int = 10,
    arm_of: Any = None,
) -> dict[str, ArmMetrics]:
    """Per-arm metrics; ``arm_of(row)`` names the arm (default: the row's variant)."""
    key = arm_of or (lambda row: str(row["variant"]))
    impressions: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    for row in dedupe(rows):
        impressions.setdefault(key(row), {}).setdefault(str(row["request_id"]), []).append(row)
    out = {}
    for arm, requests in sorted(impressions.items()):
        clicked = converted = 0
        reciprocal: list[float] = []
        diversity: list[float] = []
        shown: set[str] = set()
        models: set[str] = set()
        for shown_rows in requests.values():
            top = sorted((r for r in shown_rows if int(r["rank"]) <= k), key=lambda r: int(r["rank"]))
            clicks = [int(r["rank"]) for r in top if int(r["label"])]
            clicked += bool(clicks)
            converted += any(r["outcome"] in ("add_to_cart", "purchase") for r in top)
            reciprocal.append(1.0 / min(clicks) if clicks else 0.0)
            items = [str(r["item_id"]) for r in top]
            shown.update(items)
            models.update(f"{r['model']['name']}/{r['model']['version']}" for r in top)
            diversity.append(_intra_list(items, genres))
        n = len(requests)
        out[arm] = ArmMetrics(
            arm=arm,
            impressions=n,
            clicked=clicked,
            converted=converted,
            ctr=wilson(clicked, n),
            conversion=wilson(converted, n),
            mrr=mean_interval(reciprocal),
            coverage=len(shown) / len(genres) if genres else 0.0,
            diversity=math.fsum(diversity) / len(diversity) if diversity else 0.0,
            models=sorted(models),
        )
    return out


def _intra_list(items: Sequence[str], genres: Mapping[str, Sequence[str]]) -> float:
    pairs = [(a, b) for n, a in enumerate(items) for b in items[n + 1 :]]
    if not pairs:
        return 0.0
    return math.fsum(1.0 - jaccard(set(genres.get(a, ())), set(genres.get(b, ()))) for a, b in pairs) / len(
        pairs
    )
