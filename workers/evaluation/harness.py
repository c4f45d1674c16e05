"""Scores every method on the same replayed queries and the same seeded tie-break.

Full-catalog methods (popularity, covisitation, item_knn, zero_shot) rank every unconsumed item;
candidate methods (fallback, streamrec) rank the candidate stage's set and miss everything else.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from stream.features import fallback_scores
from workers.evaluation import metrics
from workers.evaluation.replay import Case
from workers.model import head as head_mod
from workers.model.config import CACHE_DIR, CONFIG

if TYPE_CHECKING:
    from workers.model.encoder import Encoder

BASELINES = ("popularity", "covisitation", "item_knn")
SEGMENTS = ("all", "cold_users", "cold_items")


@dataclass
class TextSide:
    """Query and item embeddings of one encoder form (rows of ``items`` follow the catalog ids)."""

    queries: np.ndarray
    items: np.ndarray


def embed_cases(encoder: Encoder, cases: list[Case], item_texts: list[str], tag: str) -> TextSide:
    """Embeds the queries and the catalog; the catalog is cached per encoder ``tag``."""
    digest = hashlib.sha256(("\n".join(item_texts) + tag).encode()).hexdigest()[:16]
    path = CACHE_DIR / f"items-{digest}.npy"
    if path.exists():
        item_vecs = np.load(path)
    else:
        item_vecs = encoder.embed(item_texts)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, item_vecs)
    return TextSide(encoder.embed([c.query for c in cases]), item_vecs)


def segments_of(case: Case) -> list[str]:
    out = ["all"]
    if case.n_history < CONFIG.cold_user_history:
        out.append("cold_users")
    if case.target_count < CONFIG.cold_item_count:
        out.append("cold_items")
    return out


def evaluate(
    cases: list[Case],
    ids: list[str],
    text: TextSide | None,
    head: dict[str, Any] | None,
    zero_shot: TextSide | None = None,
    seed: int = CONFIG.seed,
) -> dict[str, dict[str, dict[str, float]]]:
    """segment -> method -> metrics, over the ``test`` cases."""
    index = {item_id: n for n, item_id in enumerate(ids)}
    n = len(ids)
    tests = [c for c in cases if c.role == "test"]
    tallies: dict[str, dict[str, metrics.Tally]] = {s: {} for s in SEGMENTS}

    def full(scores: np.ndarray, case: Case) -> np.ndarray:
        out = scores.astype(np.float64).copy()
        out[case.seen] = -np.inf
        return out

    def on_candidates(values: np.ndarray, case: Case) -> np.ndarray:
        out = np.full(n, -np.inf)
        out[[index[i] for i in case.candidates]] = values
        return out

    for qn, case in enumerate(tests):
        target = index[case.target]
        keys = metrics.tie_keys(n, seed, qn)
        methods: dict[str, tuple[np.ndarray, bool | None]] = {}
        for name in BASELINES:
            methods[name] = (full(case.baselines[name], case), None)
        zs = zero_shot or text
        if zs is not None:
            methods["zero_shot"] = (full(zs.items @ zs.queries[qn], case), None)
        in_cands = case.target in case.candidates
        methods["fallback"] = (on_candidates(fallback_scores(case.features), case), in_cands)
        if text is not None and head is not None and case.candidates:
            cand_idx = [index[i] for i in case.candidates]
            cosine = text.items[cand_idx] @ text.queries[qn]
            scores = head_mod.forward(head, head_mod.inputs(case.features, cosine))
            methods["streamrec"] = (on_candidates(scores, case), in_cands)
        for name, (scores, cand_hit) in methods.items():
            rank = metrics.rank_of(scores, target, keys)
            hit = cand_hit if cand_hit is not None else rank <= metrics.CANDIDATE_K
            top = metrics.order(scores, keys)[: metrics.K]
            for seg in segments_of(case):
                tallies[seg].setdefault(name, metrics.Tally.empty()).add(rank, hit, top)
    return {seg: {m: t.summary(n) for m, t in by.items()} for seg, by in tallies.items()}


def test_cases(cases: list[Case]) -> list[Case]:
    return [c for c in cases if c.role == "test"]
