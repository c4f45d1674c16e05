"""``streamrec eval``: every method on the same replayed queries; JSON of method -> metrics.

    python -m workers.evaluation.run --json [--quick] [--protocol leave_last_out|time_cut]
        [--encoder torch|onnx|int8|auto] [--version 1] [--report reports/eval.json]

stdout (with ``--json``) is exactly ``{method: {ndcg@10, recall@10, mrr, candidate_recall@k, coverage}}``
for the main protocol's "all" segment; the report file adds segments, query counts and settings.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workers.evaluation.cases import PROTOCOLS, item_texts, load_cases
from workers.evaluation.harness import embed_cases, evaluate, test_cases
from workers.model import head as head_mod
from workers.model.config import CONFIG, HEAD, MODELS_DIR, ONNX_FP32, ONNX_INT8, RANKER_DIR, TOKENIZER

if TYPE_CHECKING:
    from workers.model.encoder import Encoder

KEYS = ("ndcg@10", "recall@10", "mrr", "candidate_recall@k", "coverage")


def make_encoder(form: str, version_dir: Path, encoder_dir: Path | None = None) -> tuple[Encoder, str]:
    from workers.model.encoder import OnnxEncoder, TorchEncoder

    if form == "auto":
        form = "int8" if (version_dir / ONNX_INT8).exists() else "torch"
    if form == "torch":
        return TorchEncoder(encoder_dir), f"torch:{encoder_dir or 'pretrained'}"
    onnx = version_dir / (ONNX_INT8 if form == "int8" else ONNX_FP32)
    if not onnx.exists():
        raise SystemExit(f"{onnx} missing: run python -m workers.model.build")
    enc = OnnxEncoder(onnx, version_dir / TOKENIZER)
    return enc, f"{form}:{onnx.stat().st_mtime_ns}:b{enc.batch_size}"


def run_protocol(
    protocol: str,
    args: argparse.Namespace,
    enc: Encoder,
    tag: str,
    head: dict[str, Any] | None,
    zero_shot_enc: tuple[Encoder, str] | None,
) -> dict[str, Any]:
    started = time.perf_counter()
    items, ids, cases = load_cases(
        protocol, quick_users=CONFIG.quick_users if args.quick else None, limit_events=args.limit_events
    )
    tests = test_cases(cases)
    texts = item_texts(items, ids)
    side = embed_cases(enc, tests, texts, tag)
    zs = embed_cases(zero_shot_enc[0], tests, texts, zero_shot_enc[1]) if zero_shot_enc else None
    result = evaluate(tests, ids, side, head, zero_shot=zs)
    return {"segments": result, "queries": len(tests), "seconds": round(time.perf_counter() - started, 1)}


def head_for(protocol: str, args: argparse.Namespace, head: dict[str, Any]) -> dict[str, Any] | None:
    """The time-cut protocol needs a head trained before its cut: the default head's training
    queries (leave-last-out) include events after the cut, some of them the time-cut test events."""
    if protocol != "time_cut":
        return head
    path = args.time_cut_head or MODELS_DIR / "cheap-timecut" / HEAD
    return head_mod.load(path) if Path(path).exists() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streamrec eval")
    parser.add_argument("--json", action="store_true", help="print method -> metrics JSON on stdout")
    parser.add_argument("--quick", action="store_true", help=f"a fixed sample of {CONFIG.quick_users} users")
    parser.add_argument("--protocol", choices=(*PROTOCOLS, "both"), default="leave_last_out")
    parser.add_argument("--encoder", choices=("auto", "torch", "onnx", "int8"), default="auto")
    parser.add_argument("--encoder-dir", type=Path, default=None, help="fine-tuned torch encoder (full mode)")
    parser.add_argument("--version", default=CONFIG.version)
    parser.add_argument(
        "--head", type=Path, default=None, help=f"default: model_repo/ranker/<version>/{HEAD}"
    )
    parser.add_argument(
        "--time-cut-head",
        type=Path,
        default=None,
        help="head trained before the cut (train --time-cut); default models/ranker/cheap-timecut/head.json",
    )
    parser.add_argument("--limit-events", type=int, default=None, help="replay only the first N events")
    parser.add_argument("--report", type=Path, default=None, help="write the full report (segments) here")
    args = parser.parse_args(argv)

    version_dir = RANKER_DIR / args.version
    head = head_mod.load(args.head or version_dir / HEAD)
    enc, tag = make_encoder(args.encoder, version_dir, args.encoder_dir)
    zero_shot_enc = None
    if args.encoder_dir is not None:  # a fine-tuned encoder: zero_shot stays the pretrained one
        zero_shot_enc = make_encoder("torch", version_dir)
    protocols = PROTOCOLS if args.protocol == "both" else (args.protocol,)
    report = {
        "settings": {**vars(args), "encoder_tag": tag, "head_meta": head.get("meta", {})},
        "protocols": {
            p: run_protocol(p, args, enc, tag, head_for(p, args, head), zero_shot_enc) for p in protocols
        },
    }
    main_all = report["protocols"][protocols[0]]["segments"]["all"]
    table = {m: {k: round(v[k], 4) for k in KEYS} for m, v in main_all.items()}
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=1, default=str) + "\n")
    if args.json:
        sys.stdout.write(json.dumps(table) + "\n")
    else:
        for p, body in report["protocols"].items():
            for seg, by_method in body["segments"].items():
                print(f"{p} / {seg} ({body['queries']} queries, {body['seconds']}s)")
                for m, v in sorted(by_method.items(), key=lambda kv: -kv[1]["ndcg@10"]):
                    print(
                        f"  {m:13s} "
                        + "  ".join(f"{k}={v[k]:.4f}" for k in KEYS)
                        + f"  n={int(v['queries'])}"
                    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
