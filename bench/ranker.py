"""Ranker speed and quality per serving form, measured in one run (model environment).

    PYTHONPATH=. $STREAMREC_MODEL_ENV/bin/python bench/ranker.py [--seconds 2] [--full]

rows/s of the MiniLM encoder at seq len 64 (padded), batch 1/16/64, for torch eager, ONNX fp32
and ONNX int8 (from model_repo/ranker/<version>/, built by workers.model.build), then NDCG@10 of
the streamrec ranker with each form's embeddings on the quick evaluation slice (or all users with
--full), and the ratios. Also prints the cost a cross-encoder would pay per 50-candidate request.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import TYPE_CHECKING

from workers.evaluation.cases import item_texts, load_cases
from workers.evaluation.harness import embed_cases, evaluate, test_cases
from workers.evaluation.run import make_encoder
from workers.model import head as head_mod
from workers.model.config import CONFIG, HEAD, RANKER_DIR

if TYPE_CHECKING:
    from workers.model.encoder import Encoder

FORMS = ("torch", "onnx", "int8")
BATCHES = (1, 16, 64)
SEQ = 64


def rows_per_s(enc: Encoder, batch: int, seconds: float) -> float:
    text = "watched: Star Wars (1977); Fargo (1996); Contact (1997) | likes: Drama, Sci-Fi, Comedy"
    ids, mask = enc.tokens([text] * batch, pad_to=SEQ)
    enc.run(ids, mask)
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        enc.run(ids, mask)
        n += batch
    return n / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--full", action="store_true", help="NDCG on all users instead of the quick slice")
    parser.add_argument("--version", default=CONFIG.version)
    args = parser.parse_args()
    version_dir = RANKER_DIR / args.version
    head = head_mod.load(version_dir / HEAD)
    items, ids, cases = load_cases("leave_last_out", quick_users=None if args.full else CONFIG.quick_users)
    tests = test_cases(cases)
    texts = item_texts(items, ids)
    results: dict[str, dict[str, float]] = {}
    for form in FORMS:
        enc, tag = make_encoder(form, version_dir)
        speed = {f"batch{b}": round(rows_per_s(enc, b, args.seconds), 1) for b in BATCHES}
        side = embed_cases(enc, tests, texts, tag)
        ndcg = evaluate(tests, ids, side, head)["all"]["streamrec"]["ndcg@10"]
        results[form] = {**speed, "ndcg@10": round(ndcg, 4)}
        print(f"{form:6s} " + "  ".join(f"{k}={v}" for k, v in results[form].items()), flush=True)
    base = results["torch"]
    ratios = {
        form: {
            **{k: round(results[form][k] / base[k], 2) for k in (f"batch{b}" for b in BATCHES)},
            "ndcg_rel_diff": round(
                (results[form]["ndcg@10"] - base["ndcg@10"]) / max(base["ndcg@10"], 1e-9), 4
            ),
        }
        for form in FORMS[1:]
    }
    cross = {f: round(50 / results[f]["batch64"] * 1000, 1) for f in FORMS}
    bi = {f: round(1 / results[f]["batch1"] * 1000, 1) for f in FORMS}
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()} {platform.processor() or ''} threads=2".strip(),
                "queries": len(tests),
                "rows_per_s": results,
                "ratio_vs_torch": ratios,
                "ms_per_50_candidates_cross_encoder": cross,
                "ms_per_50_candidates_bi_encoder_cached_items": bi,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
