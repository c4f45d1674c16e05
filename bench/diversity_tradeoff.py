"""Experiment: what does MMR diversity cost in relevance? NDCG@10 and intra-list diversity per lambda.

    PYTHONPATH=. $STREAMREC_MODEL_ENV/bin/python bench/diversity_tradeoff.py [--quick] [--lambdas 1,0.7]

The protocol is ``streamrec eval``'s (leave-last-out, ``workers.evaluation.cases.load_cases``): the
pipeline's own candidate sets, scored by the served ranker (``make_encoder("auto")``: the ONNX int8
encoder when built, and ``model_repo/ranker/<version>/head.json``), ordered as the harness orders
them (score, then its seeded tie keys). Each test query is scored once; each lambda then re-ranks
that list with ``stream.diversity.diversify``, the function the worker calls after ``rerank``, and
with the similarity the worker builds: ``ItemSimilarity`` over the vectors of the ``encoder`` model
(ONNX fp32, what fills the ``item-vectors`` table) and the items' genres. A target outside the
candidate set is a miss at every lambda, as in the harness. The NDCG cost is the mean of the
per-query paired differences against lambda = 1.0, with its standard error.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from stream.diversity import ItemSimilarity, diversify, intra_list_diversity
from stream.records import RecommendedItem
from workers.evaluation import metrics
from workers.evaluation.cases import item_texts, load_cases
from workers.evaluation.harness import embed_cases, evaluate, test_cases
from workers.model import head as head_mod
from workers.model.config import CONFIG, HEAD, RANKER_DIR

LAMBDAS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.3)


@dataclass
class Ranked:
    """One test query's candidate list in the harness's order, and where its target is."""

    items: list[RecommendedItem]
    target: str


@dataclass
class LambdaResult:
    ndcg: np.ndarray  # per query
    recall: np.ndarray
    ild: np.ndarray  # per query with >= 2 shown items (embedding/genre similarity, as online)
    ild_genres: np.ndarray  # the same lists by genre Jaccard only: readable without embeddings
    shown: set[str]


def paired_difference(base: ArrayLike, other: ArrayLike) -> tuple[float, float]:
    """Mean of ``other - base`` over paired queries and its standard error (0.0 with one pair)."""
    b, o = np.asarray(base, np.float64), np.asarray(other, np.float64)
    if b.size == 0 or b.shape != o.shape:
        raise ValueError(f"need paired, non-empty lists, got {b.size} and {o.size}")
    d = o - b
    se = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else 0.0
    return float(d.mean()), se


def relative_change(base: ArrayLike, other: ArrayLike) -> tuple[float, float]:
    """``mean(other) / mean(base) - 1`` and its standard error by the delta method for a ratio of
    paired means: both means move together, so the SE is that of ``mean(other - (1 + r) * base)``
    over ``mean(base)``, smaller than treating the two lists as independent."""
    b, o = np.asarray(base, np.float64), np.asarray(other, np.float64)
    if b.size == 0 or b.shape != o.shape:
        raise ValueError(f"need paired, non-empty lists, got {b.size} and {o.size}")
    mean_b = float(b.mean())
    if mean_b == 0.0:
        raise ValueError("base mean is 0: a relative change is undefined")
    ratio = float(o.mean()) / mean_b
    resid = o - ratio * b
    se = float(resid.std(ddof=1) / math.sqrt(b.size)) / abs(mean_b) if b.size > 1 else 0.0
    return ratio - 1.0, se


def ranked_lists(quick: bool, version: str) -> tuple[list[str], list[Ranked], ItemSimilarity, dict[str, Any]]:
    """Scores every test query once, as ``workers.evaluation.harness.evaluate`` does for streamrec."""
    from workers.evaluation.run import make_encoder

    version_dir = RANKER_DIR / version
    head = head_mod.load(version_dir / HEAD)
    items, ids, cases = load_cases("leave_last_out", quick_users=CONFIG.quick_users if quick else None)
    tests = test_cases(cases)
    texts = item_texts(items, ids)
    enc, tag = make_encoder("auto", version_dir)
    side = embed_cases(enc, tests, texts, tag)
    # The worker's similarity reads catalog vectors from the ``encoder`` model (fp32 ONNX), not
    # the ranker's int8 encoder; embed_cases caches the catalog under its tag, shared with eval.
    fp32, fp32_tag = make_encoder("onnx", version_dir)
    vectors = embed_cases(fp32, [], texts, fp32_tag).items
    vec_of = {item_id: vectors[n] for n, item_id in enumerate(ids)}

    def genres_of(item_id: str) -> list[str]:
        item = items.get(item_id)
        return item.categories if item is not None else []

    similarity = ItemSimilarity(vec_of.get, genres_of)

    index = {item_id: n for n, item_id in enumerate(ids)}
    out = []
    for qn, case in enumerate(tests):
        if not case.candidates:
            out.append(Ranked([], case.target))
            continue
        cand_idx = [index[i] for i in case.candidates]
        cosine = side.items[cand_idx] @ side.queries[qn]
        scores = head_mod.forward(head, head_mod.inputs(case.features, cosine)).astype(np.float64)
        keys = metrics.tie_keys(len(ids), CONFIG.seed, qn)[cand_idx]
        order = np.lexsort((keys, -scores))
        out.append(
            Ranked(
                [
                    # rounded as stream.rerank does: diversify sees the scores the worker sees
                    RecommendedItem(
                        item_id=case.candidates[r], score=round(float(scores[r]), 6), rank=p, reason="-"
                    )
                    for p, r in enumerate(order, start=1)
                ],
                case.target,
            )
        )
    harness = evaluate(tests, ids, side, head)["all"]["streamrec"]
    meta = {"harness": harness, "encoder": tag, "encoder_vectors": fp32_tag, "genres_of": genres_of}
    return ids, out, similarity, meta


def run_lambda(
    lists: list[Ranked], lam: float, similarity: ItemSimilarity, genres: ItemSimilarity
) -> LambdaResult:
    k = metrics.K
    ndcg, recall, ild, ild_g = [], [], [], []
    shown: set[str] = set()
    for case in lists:
        top = [i.item_id for i in diversify(case.items, k, lam, similarity)[:k]] if case.items else []
        rank = top.index(case.target) + 1 if case.target in top else math.inf
        ndcg.append(metrics.ndcg(rank))
        recall.append(metrics.recall(rank))
        if len(top) >= 2:
            ild.append(intra_list_diversity(top, similarity))
            ild_g.append(intra_list_diversity(top, genres))
        shown.update(top)
    return LambdaResult(np.array(ndcg), np.array(recall), np.array(ild), np.array(ild_g), shown)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help=f"the eval's seeded {CONFIG.quick_users} users")
    parser.add_argument("--lambdas", default=",".join(str(x) for x in LAMBDAS))
    parser.add_argument("--version", default=CONFIG.version)
    args = parser.parse_args(argv)
    lambdas = [float(x) for x in args.lambdas.split(",")]
    if 1.0 not in lambdas:
        lambdas.insert(0, 1.0)  # the reference every cost is measured against

    started = time.perf_counter()
    ids, lists, similarity, meta = ranked_lists(args.quick, args.version)
    scored_s = time.perf_counter() - started
    genres = ItemSimilarity(lambda _: None, meta["genres_of"])  # Jaccard only: no vectors
    results = {lam: run_lambda(lists, lam, similarity, genres) for lam in lambdas}
    base = results[1.0]
    # λ = 1 must reproduce `streamrec eval` exactly, or this is not its protocol.
    harness = meta["harness"]
    agree = (
        abs(float(base.ndcg.mean()) - harness["ndcg@10"]) < 1e-9
        and len(base.shown) / len(ids) == harness["coverage"]
    )

    rows = {}
    print(
        f"leave_last_out, {len(lists)} test queries{' (quick)' if args.quick else ''}; ranker {meta['encoder']}; "
        f"scored in {scored_s:.0f}s; lambda 1.0 == streamrec eval: {agree} "
        f"(eval NDCG@10 {harness['ndcg@10']:.4f}, coverage {harness['coverage']:.4f})"
    )
    print(
        "| lambda | NDCG@10 | Recall@10 | ILD@10 | ILD@10 (genres) | coverage@10 | NDCG diff ± SE | NDCG cost ± SE |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for lam, r in results.items():
        diff, diff_se = paired_difference(base.ndcg, r.ndcg)
        rel, rel_se = relative_change(base.ndcg, r.ndcg)
        rows[str(lam)] = {
            "ndcg@10": round(float(r.ndcg.mean()), 4),
            "recall@10": round(float(r.recall.mean()), 4),
            "ild@10": round(float(r.ild.mean()), 4),
            "ild_genres@10": round(float(r.ild_genres.mean()), 4),
            "coverage@10": round(len(r.shown) / len(ids), 4),
            "ndcg_diff": round(diff, 4),
            "ndcg_diff_se": round(diff_se, 4),
            "ndcg_rel": round(rel, 4),
            "ndcg_rel_se": round(rel_se, 4),
        }
        v = rows[str(lam)]
        print(
            f"| {lam:.1f} | {v['ndcg@10']:.4f} | {v['recall@10']:.4f} | {v['ild@10']:.4f} | "
            f"{v['ild_genres@10']:.4f} | {v['coverage@10']:.3f} | {diff:+.4f} ± {diff_se:.4f} | "
            f"{100 * rel:+.1f} % ± {100 * rel_se:.1f} |"
        )
    seconds = round(time.perf_counter() - started, 1)
    print(f"{seconds}s in all")
    summary = {
        "queries": len(lists),
        "quick": args.quick,
        "matches_eval": agree,
        "encoder": meta["encoder"],
        "seconds": seconds,
        "lambdas": rows,
    }
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
