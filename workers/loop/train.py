"""Retraining the ranker's head from logged examples: pure numpy, so it runs (and is unit-tested) in
the app environment as well as inside the model environment's ``workers.loop.retrain``.

A request is one group: the items shown for it, their logged features, the text cosine the served
encoder gives (user text, item text) and their labels. The head is fine-tuned from the served one
with a listwise softmax: for every clicked item, its softmax probability against the request's
shown-and-not-clicked items, weighted by 1 / propensity of the click (capped), so clicks that
exploration made unlikely count more without one lucky click dominating.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.features import N_FEATURES
from workers.model import head as head_mod

PARAMS = ("w1", "b1", "w2", "b2")


@dataclass(frozen=True)
class TrainParams:
    epochs: int = 300
    lr: float = 0.005
    # Pull towards the served head: a few hundred examples must not undo what the offline
    # training learned from MovieLens, only adjust it.
    l2_to_base: float = 1e-3
    ips_cap: float = 10.0
    holdout: float = 0.2
    k: int = 10
    seed: int = 0


@dataclass(frozen=True)
class Group:
    """One request's shown items: inputs (features + cosine), labels, propensities, logged ranks."""

    request_id: str
    shown_at: float
    x: np.ndarray  # (n, N_FEATURES + 1), head_mod.INPUTS order
    labels: np.ndarray  # (n,) bool
    propensity: np.ndarray  # (n,)
    ranks: np.ndarray  # (n,) the rank it was shown at

    @property
    def has_positive(self) -> bool:
        return bool(self.labels.any())


@dataclass(frozen=True)
class Metrics:
    mrr: float
    ndcg: float
    groups: int

    def as_dict(self, k: int) -> dict[str, float]:
        return {"mrr": round(self.mrr, 6), f"ndcg@{k}": round(self.ndcg, 6), "groups": self.groups}


@dataclass(frozen=True)
class Gate:
    publish: bool
    reason: str


def build_groups(rows: Sequence[Mapping[str, Any]], cosines: np.ndarray) -> list[Group]:
    """Rows (the JSONL written by ``workers.loop.examples``) and their cosines -> groups by request."""
    if len(rows) != len(cosines):
        raise ValueError(f"{len(rows)} rows but {len(cosines)} cosines")
    by_request: dict[str, list[int]] = {}
    for n, row in enumerate(rows):
        by_request.setdefault(str(row["request_id"]), []).append(n)
    groups = []
    for request_id, members in by_request.items():
        members.sort(key=lambda n: int(rows[n]["rank"]))
        features = np.asarray([rows[n]["features"] for n in members], dtype=np.float32)
        if features.shape[1:] != (N_FEATURES,):
            raise ValueError(
                f"request {request_id}: features of width {features.shape[1:]}, not {N_FEATURES}"
            )
        groups.append(
            Group(
                request_id=request_id,
                shown_at=min(float(rows[n]["shown_at"]) for n in members),
                x=head_mod.inputs(features, cosines[members]),
                labels=np.asarray([int(rows[n]["label"]) >= 1 for n in members]),
                propensity=np.asarray([float(rows[n]["propensity"]) for n in members], dtype=np.float64),
                ranks=np.asarray([int(rows[n]["rank"]) for n in members]),
            )
        )
    return groups


def time_split(groups: Sequence[Group], holdout: float) -> tuple[list[Group], list[Group]]:
    """(older requests, the newest ``holdout`` share): evaluation never sees a request older than
    any training request, as a model published now is judged on what comes next."""
    ordered = sorted(groups, key=lambda g: (g.shown_at, g.request_id))
    n_hold = min(len(ordered) - 1, math.ceil(len(ordered) * holdout)) if len(ordered) > 1 else 0
    cut = len(ordered) - n_hold
    return ordered[:cut], ordered[cut:]


def ips_weight(propensity: float | np.ndarray, cap: float) -> np.ndarray:
    return np.minimum(1.0 / np.maximum(np.asarray(propensity, dtype=np.float64), 1e-9), cap)


@dataclass(frozen=True)
class _Batch:
    x: np.ndarray  # (G, W, F)
    valid: np.ndarray  # (G, W)
    term_group: np.ndarray  # (T,) one term per positive
    term_mask: np.ndarray  # (T, W): that positive + its group's negatives
    term_pos: np.ndarray  # (T,)
    term_weight: np.ndarray  # (T,) normalised IPS weights


def _batch(groups: Sequence[Group], cap: float) -> _Batch:
    usable = [g for g in groups if g.has_positive and not g.labels.all()]
    if not usable:
        raise ValueError("no training request with both a positive and a shown-not-clicked item")
    width = max(len(g.labels) for g in usable)
    n_in = usable[0].x.shape[1]
    x = np.zeros((len(usable), width, n_in), dtype=np.float64)
    valid = np.zeros((len(usable), width), dtype=bool)
    t_group, t_pos, t_weight, t_mask = [], [], [], []
    for gi, g in enumerate(usable):
        n = len(g.labels)
        x[gi, :n] = g.x
        valid[gi, :n] = True
        negatives = np.zeros(width, dtype=bool)
        negatives[:n] = ~g.labels
        for pos in np.flatnonzero(g.labels):
            mask = negatives.copy()
            mask[pos] = True
            t_group.append(gi)
            t_pos.append(pos)
            t_mask.append(mask)
            t_weight.append(float(ips_weight(g.propensity[pos], cap)))
    weights = np.asarray(t_weight)
    return _Batch(
        x=x,
        valid=valid,
        term_group=np.asarray(t_group),
        term_mask=np.asarray(t_mask),
        term_pos=np.asarray(t_pos),
        term_weight=weights / weights.sum(),
    )


def _params(head: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(head[k], dtype=np.float64) for k in PARAMS}


def loss_and_grad(params: Mapping[str, np.ndarray], batch: _Batch) -> tuple[float, dict[str, np.ndarray]]:
    """The weighted listwise softmax loss and its gradient (backpropagation through the 2-layer MLP)."""
    pre = batch.x @ params["w1"] + params["b1"]  # (G, W, H)
    hidden = np.maximum(pre, 0.0)
    scores = hidden @ params["w2"] + params["b2"]  # (G, W)
    logits = np.where(batch.term_mask, scores[batch.term_group], -np.inf)  # (T, W)
    logits = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    rows = np.arange(len(batch.term_pos))
    loss = float(-(batch.term_weight * np.log(probs[rows, batch.term_pos] + 1e-300)).sum())
    d_logits = probs
    d_logits[rows, batch.term_pos] -= 1.0
    d_logits *= batch.term_weight[:, None]
    d_scores = np.zeros_like(scores)
    np.add.at(d_scores, batch.term_group, d_logits)
    d_scores *= batch.valid
    d_hidden = d_scores[..., None] * params["w2"]
    d_pre = d_hidden * (pre > 0)
    n_in = batch.x.shape[-1]
    grads = {
        "w1": batch.x.reshape(-1, n_in).T @ d_pre.reshape(-1, d_pre.shape[-1]),
        "b1": d_pre.sum(axis=(0, 1)),
        "w2": (hidden * d_scores[..., None]).sum(axis=(0, 1)),
        "b2": np.asarray(d_scores.sum()),
    }
    return loss, grads


def fine_tune(
    base_head: Mapping[str, Any], groups: Sequence[Group], params: TrainParams = TrainParams()
) -> tuple[dict[str, Any], dict[str, float]]:
    """Adam from the base head's weights; returns (weights for ``head.save``, training info)."""
    batch = _batch(groups, params.ips_cap)
    base = _params(base_head)
    theta = {k: v.copy() for k, v in base.items()}
    m = {k: np.zeros_like(v) for k, v in theta.items()}
    v2 = {k: np.zeros_like(v) for k, v in theta.items()}
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    first_loss = loss = loss_and_grad(theta, batch)[0]
    for step in range(1, params.epochs + 1):
        loss, grads = loss_and_grad(theta, batch)
        for k in PARAMS:
            g = grads[k] + params.l2_to_base * (theta[k] - base[k])
            m[k] = beta1 * m[k] + (1 - beta1) * g
            v2[k] = beta2 * v2[k] + (1 - beta2) * g * g
            m_hat = m[k] / (1 - beta1**step)
            v_hat = v2[k] / (1 - beta2**step)
            theta[k] = theta[k] - params.lr * m_hat / (np.sqrt(v_hat) + eps)
    weights = {
        "w1": theta["w1"].tolist(),
        "b1": theta["b1"].tolist(),
        "w2": theta["w2"].tolist(),
        "b2": float(theta["b2"]),
    }
    info = {
        "terms": float(len(batch.term_pos)),
        "groups": float(len(batch.x)),
        "loss_first": round(first_loss, 6),
        "loss_last": round(loss, 6),
    }
    return weights, info


def _ranking(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """1-based rank of each row; ties broken at random, so a constant head scores as chance, not as
    if every positive came first."""
    order = np.lexsort((rng.random(len(scores)), -scores))
    ranks = np.empty(len(scores), dtype=np.int64)
    ranks[order] = np.arange(1, len(scores) + 1)
    return ranks


def rank_metrics(ranks: np.ndarray, labels: np.ndarray, k: int) -> tuple[float, float]:
    """(reciprocal rank of the best-placed positive, NDCG@k of the positives) for one request."""
    pos = ranks[labels]
    rr = 1.0 / float(pos.min())
    dcg = float(sum(1.0 / math.log2(r + 1) for r in pos if r <= k))
    ideal = float(sum(1.0 / math.log2(i + 1) for i in range(1, min(len(pos), k) + 1)))
    return rr, dcg / ideal


def evaluate(head: Mapping[str, Any] | None, groups: Iterable[Group], k: int = 10, seed: int = 0) -> Metrics:
    """MRR and NDCG@k of the positives over the requests with at least one; ``head=None`` scores the
    order that was actually shown (the logged ranks)."""
    rng = np.random.default_rng(seed)
    rrs, ndcgs = [], []
    for g in groups:
        if not g.has_positive:
            continue
        scores = -g.ranks.astype(np.float64) if head is None else head_mod.forward(dict(head), g.x)
        rr, ndcg = rank_metrics(_ranking(np.asarray(scores, dtype=np.float64), rng), g.labels, k)
        rrs.append(rr)
        ndcgs.append(ndcg)
    if not rrs:
        return Metrics(mrr=0.0, ndcg=0.0, groups=0)
    return Metrics(mrr=float(np.mean(rrs)), ndcg=float(np.mean(ndcgs)), groups=len(rrs))


def decide(base: Metrics, new: Metrics, tolerance: float) -> Gate:
    """Publish only when the new head is not worse than the served one on held-out MRR."""
    if new.groups == 0:
        return Gate(False, "no held-out request with a positive: nothing to judge the new head on")
    if new.mrr >= base.mrr - tolerance:
        return Gate(True, f"held-out MRR {new.mrr:.4f} >= base {base.mrr:.4f} - tolerance {tolerance}")
    return Gate(False, f"held-out MRR {new.mrr:.4f} < base {base.mrr:.4f} - tolerance {tolerance}")
