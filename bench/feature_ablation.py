"""Experiment: would extra behaviour features (or another candidate cut) lift the ranker's NDCG@10?

    PYTHONPATH=. $STREAMREC_MODEL_ENV/bin/python bench/feature_ablation.py [--seeds 0,1,2]

One leave-last-out replay in which ``stream.candidates`` builds a *wide* feature matrix: the 8
``FEATURE_NAMES`` columns first, then the candidates below (from the same ``Signals``). The
candidate cut still uses the 8-column fallback blend, so candidate sets are exactly the pipeline's.
The replay also keeps each query's whole pre-cut pool, to measure candidate recall@50 under other
cut blends. Then, per variant and seed, a head is trained as ``workers.model.train`` does (cheap
mode, ONNX int8 embeddings for queries and items) and scored on the 943 test queries; the paired
standard error of the per-query NDCG difference against the 8-feature head says what is noise.
Nothing here changes the pipeline (the patch lives in this process only).
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time
from typing import Any

import numpy as np

import stream.candidates as candidates_mod
from stream.features import FEATURE_NAMES, RAW_FEATURES
from workers.evaluation import metrics
from workers.evaluation import replay as replay_mod
from workers.evaluation.cases import item_texts, make_plan
from workers.model import head as head_mod
from workers.model import train as train_mod
from workers.model.config import CONFIG, ONNX_INT8, RANKER_DIR, TOKENIZER
from workers.model.encoder import OnnxEncoder
from workers.movielens import load_interactions, load_items

EXTRA = (
    "log_covisit",  # log1p(raw recency-weighted co-visitation): not divided by the set's best
    "log_knn",  # log1p(10 * raw item-kNN)
    "log_trending",  # log1p(windowed count)
    "trend_share",  # windowed / (all-time + 1): the item's trend slope
    "pop_rank",  # the item's popularity percentile among the candidates
    "covisit_rank",  # percentile of co-visitation among the candidates
    "knn_rank",  # percentile of item-kNN among the candidates
    "log_pop",  # log1p(all-time count) / 7, not relative to the catalog's largest
    "affinity_raw",  # genre affinity, not divided by the set's best
    "lift_covisit",  # log1p(covisit) - log1p(popularity)
    "lift_knn",  # log1p(10 knn) - log1p(popularity) / 2
    "n_sources",  # how many of covisit / knn / trending are non-zero
)
VARIANTS: dict[str, tuple[tuple[str, ...], int]] = {
    "8 features (as served), hidden 16": ((), 16),
    "8 features, hidden 32": ((), 32),
    "+ log_covisit, log_knn": (("log_covisit", "log_knn"), 16),
    "+ ranks (pop, covisit, knn)": (("pop_rank", "covisit_rank", "knn_rank"), 16),
    "+ trend (log_trending, trend_share)": (("log_trending", "trend_share"), 16),
    "+ all 12, hidden 32": (EXTRA, 32),
}
CUT_BLENDS: dict[str, dict[str, float]] = {
    "fallback blend (as served)": {
        "covisit": 0.8,
        "knn": 1.0,
        "affinity": 0.3,
        "trending": 0.2,
        "popularity": 0.3,
    },
    "covisit only": {"covisit": 1.0},
    "knn only": {"knn": 1.0},
    "tuned on train queries": {
        "covisit": 1.2,
        "knn": 1.15,
        "affinity": 0.7,
        "trending": 0.2,
        "popularity": 0.1,
        "log_knn": 0.4,
        "trend_share": -0.2,
        "pop_rank": 0.2,
    },
}


def _percentile(v: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(v, kind="stable"), kind="stable") / max(len(v) - 1, 1)


def wide_features(
    ids: list[str], raw: np.ndarray, popularity: np.ndarray, cold_user: bool, max_popularity: float
) -> np.ndarray:
    """``stream.candidates.pool_features`` with the ``EXTRA`` columns after the served ones; keeps the
    pool (its ids and matrix) for ``replay``. ``raw`` holds the ``RAW_FEATURES`` columns."""
    if not ids:
        return np.zeros((0, len(FEATURE_NAMES) + len(EXTRA)), np.float32)
    # Copied before the served features are built: normalised_features divides ``raw`` in place.
    cov, knn, aff, tr = (
        raw[:, RAW_FEATURES.index(f)].copy() for f in ("covisit", "knn", "affinity", "trending")
    )
    pop = popularity
    base = ORIGINAL_POOL_FEATURES(ids, raw, popularity, cold_user, max_popularity)
    extra = [
        np.log1p(cov),
        np.log1p(knn * 10),
        np.log1p(tr),
        tr / (pop + 1.0),
        _percentile(pop),
        _percentile(cov),
        _percentile(knn),
        np.log1p(pop) / 7.0,
        aff,
        np.log1p(cov) - np.log1p(pop),
        np.log1p(knn * 10) - np.log1p(pop) / 2,
        (cov > 0).astype(float) + (knn > 0) + (tr > 0),
    ]
    wide = np.concatenate([base, np.stack(extra, axis=1).astype(np.float32)], axis=1)
    POOL["ids"], POOL["matrix"] = list(ids), wide
    return wide


ORIGINAL_POOL_FEATURES = candidates_mod.pool_features
ORIGINAL_BLEND = candidates_mod.fallback_scores
POOL: dict[str, Any] = {}
COLUMNS = (*FEATURE_NAMES, *EXTRA)


def replay() -> tuple[list[str], list[replay_mod.Case], list[tuple[int, np.ndarray]]]:
    """The leave-last-out cases with wide features, and each query's (target row, pre-cut pool)."""
    candidates_mod.pool_features = wide_features
    candidates_mod.fallback_scores = lambda f: ORIGINAL_BLEND(f[:, : len(FEATURE_NAMES)])  # type: ignore[assignment]
    pools: list[tuple[int, np.ndarray]] = []
    original_query = replay_mod.Replay.query

    def query(self: replay_mod.Replay, *args: Any) -> replay_mod.Case:
        case = original_query(self, *args)
        ids = POOL["ids"]
        pools.append(
            (ids.index(case.target) if case.target in ids else -1, POOL["matrix"].astype(np.float16))
        )
        return case

    replay_mod.Replay.query = query  # type: ignore[method-assign,assignment]
    try:
        items = load_items()
        state, cases = replay_mod.replay(
            make_plan("leave_last_out", load_interactions(seed=CONFIG.seed)), items
        )
    finally:
        replay_mod.Replay.query = original_query  # type: ignore[method-assign]
        candidates_mod.pool_features = ORIGINAL_POOL_FEATURES
        candidates_mod.fallback_scores = ORIGINAL_BLEND
    return state.ids, cases, pools


def cut_recall(blend: dict[str, float], pools: list[tuple[int, np.ndarray]], which: list[int]) -> float:
    """Share of queries whose target is in the top 50 of its pool under ``blend`` (ties: half)."""
    w = np.zeros(len(COLUMNS), np.float32)
    for name, value in blend.items():
        w[COLUMNS.index(name)] = value
    hits = 0
    for n in which:
        row, pool = pools[n]
        if row < 0:
            continue
        s = pool.astype(np.float32) @ w
        hits += (np.sum(s > s[row]) + 0.5 * (np.sum(s == s[row]) - 1)) < metrics.CANDIDATE_K
    return hits / len(which)


def per_query_ndcg(
    cases: list[replay_mod.Case],
    ids: list[str],
    q: np.ndarray,
    d: np.ndarray,
    cols: list[int],
    hidden: int,
    seed: int,
) -> np.ndarray:
    index = {item_id: n for n, item_id in enumerate(ids)}
    train = [n for n, c in enumerate(cases) if c.role == "train"]
    tests = [n for n, c in enumerate(cases) if c.role == "test"]
    narrowed = []
    for n in train:
        c = copy.copy(cases[n])
        c.features = cases[n].features[:, cols]
        narrowed.append(c)
    users = sorted({c.user_id for c in narrowed})
    val_users = set(random.Random(CONFIG.seed).sample(users, max(1, len(users) // 10)))
    groups = train_mod.groups(narrowed, ids, q[train], d)
    keep = [c.user_id not in val_users for c in narrowed if c.target in c.candidates]
    weights, _ = train_mod.train_head(
        [g for g, k in zip(groups, keep, strict=True) if k], CONFIG.head_epochs, seed, hidden
    )
    out = np.zeros(len(tests))
    for qn, n in enumerate(tests):
        case = cases[n]
        if case.target not in case.candidates:
            continue
        rows = [index[i] for i in case.candidates]
        scores = head_mod.forward(weights, head_mod.inputs(case.features[:, cols], d[rows] @ q[n])).astype(
            np.float64
        )
        keys = metrics.tie_keys(len(ids), CONFIG.seed, qn)[rows]
        p = case.candidates.index(case.target)
        rank = 1 + np.sum(scores > scores[p]) + np.sum((scores == scores[p]) & (keys < keys[p]))
        out[qn] = 1 / np.log2(rank + 1) if rank <= metrics.K else 0.0
    return out


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/feature_ablation.py")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.perf_counter()
    ids, cases, pools = replay()
    t_replay = time.perf_counter() - started
    enc = OnnxEncoder(RANKER_DIR / CONFIG.version / ONNX_INT8, RANKER_DIR / CONFIG.version / TOKENIZER)
    d = enc.embed(item_texts(load_items(), ids))
    q = enc.embed([c.query for c in cases])
    train = [n for n, c in enumerate(cases) if c.role == "train"]
    tests = [n for n, c in enumerate(cases) if c.role == "test"]
    cuts = {
        name: {"train": round(cut_recall(b, pools, train), 4), "test": round(cut_recall(b, pools, tests), 4)}
        for name, b in CUT_BLENDS.items()
    }
    reachable = float(np.mean([pools[n][0] >= 0 for n in tests]))
    print(
        f"pre-cut pool: {np.mean([p[1].shape[0] for p in pools]):.0f} items on average; target in it: {reachable:.3f}"
    )
    for name, r in cuts.items():
        print(f"cut by {name:32s} recall@50 train {r['train']:.4f} test {r['test']:.4f}")
    results: dict[str, Any] = {}
    base: np.ndarray | None = None
    for name, (extra, hidden) in VARIANTS.items():
        cols = list(range(len(FEATURE_NAMES))) + [COLUMNS.index(e) for e in extra]
        runs = [per_query_ndcg(cases, ids, q, d, cols, hidden, s) for s in seeds]
        mean = np.mean(runs, axis=0)
        base = mean if base is None else base
        diff = mean - base
        results[name] = {
            "ndcg@10_per_seed": [round(float(r.mean()), 4) for r in runs],
            "ndcg@10": round(float(mean.mean()), 4),
            "vs_8_features": round(float(diff.mean()), 4),
            "paired_se": round(float(diff.std(ddof=1) / np.sqrt(len(diff))), 4),
        }
        r = results[name]
        print(
            f"{name:38s} NDCG@10 {r['ndcg@10']:.4f} {r['ndcg@10_per_seed']}  diff {r['vs_8_features']:+.4f} ± {r['paired_se']:.4f}",
            flush=True,
        )
    print(
        json.dumps(
            {
                "queries": len(tests),
                "replay_s": round(t_replay, 1),
                "seconds": round(time.perf_counter() - started, 1),
                "target_in_precut_pool": round(reachable, 4),
                "cut_recall@50": cuts,
                "heads": results,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
