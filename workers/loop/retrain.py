"""The model-environment step of ``streamrec train --from-stream``: text cosines from the served
version's own int8 encoder, then the head fine-tune and the held-out comparison (``workers.loop.train``).

    python -m workers.loop.retrain fit --examples rows.jsonl --base-dir model_repo/ranker/1 --out DIR
    python -m workers.loop.retrain probe --base-dir model_repo/ranker/1 --out probe.json

``fit`` writes ``DIR/head.json`` (``workers.model.head.save``), ``DIR/result.json`` and
``DIR/probe.json`` (held-out rows with their cosines, for the publish canary). Progress goes to
stderr: the command's stdout carries only its JSON line.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from workers.loop import train
from workers.loop.probe import Probe, default_probe
from workers.model import head as head_mod
from workers.model.config import HEAD, ONNX_INT8, TOKENIZER


def served_params(version_dir: Path) -> dict[str, str]:
    """The ``parameters`` of the model's config.pbtxt (next to the version directory)."""
    text = (version_dir.parent / "config.pbtxt").read_text()
    pattern = r'key:\s*"([^"]+)"\s*value:\s*\{\s*string_value:\s*"([^"]*)"'
    return dict(re.findall(pattern, text))


class ServedEncoder:
    """What model.py does: its ONNX file, its max length, one text per run for int8 (dynamic
    quantisation scales per batch, so batching would change a text's embedding)."""

    def __init__(self, version_dir: Path) -> None:
        from workers.model.encoder import OnnxEncoder, Tokens

        params = served_params(version_dir)
        onnx_file = params.get("onnx_file", ONNX_INT8)
        self.encoder = OnnxEncoder(version_dir / onnx_file, version_dir / TOKENIZER)
        self.encoder.tokens = Tokens(version_dir / TOKENIZER, int(params.get("max_seq_len", "64")))
        self.chunk = int(params.get("embed_batch", "1" if "int8" in onnx_file else "64"))

    def cosines(self, queries: Sequence[str], items: Sequence[str]) -> np.ndarray:
        texts = list(dict.fromkeys([*queries, *items]))
        vecs = dict(zip(texts, self.encoder.embed(texts, batch_size=self.chunk), strict=True))
        return np.asarray([float(vecs[q] @ vecs[i]) for q, i in zip(queries, items, strict=True)], np.float32)


def read_rows(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def probe_from(rows: list[dict[str, Any]], cosines: np.ndarray, groups: list[train.Group], n: int) -> Probe:
    held = {g.request_id for g in groups}
    picked = [i for i, r in enumerate(rows) if r["request_id"] in held][:n]
    return Probe(
        queries=[rows[i]["context"] for i in picked],
        items=[rows[i]["item_text"] for i in picked],
        features=np.asarray([rows[i]["features"] for i in picked], dtype=np.float32),
        cosines=cosines[picked],
    )


def fit(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    params = train.TrainParams(
        epochs=args.epochs, lr=args.lr, ips_cap=args.ips_cap, holdout=args.holdout, k=args.k, seed=args.seed
    )
    rows = read_rows(args.examples)
    encoder = ServedEncoder(args.base_dir)
    cosines = encoder.cosines([r["context"] for r in rows], [r["item_text"] for r in rows])
    t_cos = time.perf_counter() - started
    groups = train.build_groups(rows, cosines)
    fit_groups, held = train.time_split(groups, params.holdout)
    base_head = head_mod.load(args.base_dir / HEAD)
    weights, info = train.fine_tune(base_head, fit_groups, params)
    new_head = {**base_head, **weights}
    base_m = train.evaluate(base_head, held, params.k, params.seed)
    new_m = train.evaluate(new_head, held, params.k, params.seed)
    logged = train.evaluate(None, held, params.k, params.seed)
    seconds = round(time.perf_counter() - started, 2)
    meta = {
        "mode": "from-stream",
        "base_version": args.base_dir.name,
        "examples": len(rows),
        "train_groups": int(info["groups"]),
        "holdout_groups": new_m.groups,
        "epochs": params.epochs,
        "loss_first": info["loss_first"],
        "loss_last": info["loss_last"],
        "seconds": seconds,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    head_mod.save(args.out / HEAD, weights, meta)
    probe_from(rows, cosines, held, 16).save(args.out / "probe.json")
    result = {
        "base_version": args.base_dir.name,
        "base": base_m.as_dict(params.k),
        "new": new_m.as_dict(params.k),
        "logged": logged.as_dict(params.k),
        "counts": {
            "examples": len(rows),
            "requests": len(groups),
            "train_requests": len(fit_groups),
            "holdout_requests": len(held),
            "train_groups": int(info["groups"]),
            "positives": int(sum(int(g.labels.sum()) for g in groups)),
        },
        "train": info,
        "params": {"epochs": params.epochs, "lr": params.lr, "ips_cap": params.ips_cap, "k": params.k},
        "seconds": {"cosines": round(t_cos, 2), "total": seconds},
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def probe(args: argparse.Namespace) -> dict[str, Any]:
    base = default_probe()
    cosines = ServedEncoder(args.base_dir).cosines(base.queries, base.items)
    out = Probe(base.queries, base.items, base.features, cosines)
    out.save(args.out)
    return {"probe": str(args.out), "rows": len(base.queries)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.loop.retrain")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_fit = sub.add_parser("fit", help="fine-tune the head on logged examples and compare on held-out")
    p_fit.add_argument("--examples", type=Path, required=True)
    p_fit.add_argument("--base-dir", type=Path, required=True)
    p_fit.add_argument("--out", type=Path, required=True)
    defaults = train.TrainParams()
    p_fit.add_argument("--epochs", type=int, default=defaults.epochs)
    p_fit.add_argument("--lr", type=float, default=defaults.lr)
    p_fit.add_argument("--ips-cap", type=float, default=defaults.ips_cap)
    p_fit.add_argument("--holdout", type=float, default=defaults.holdout)
    p_fit.add_argument("--k", type=int, default=defaults.k)
    p_fit.add_argument("--seed", type=int, default=defaults.seed)
    p_probe = sub.add_parser("probe", help="the default canary probe with the served encoder's cosines")
    p_probe.add_argument("--base-dir", type=Path, required=True)
    p_probe.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    result = fit(args) if args.cmd == "fit" else probe(args)
    print(json.dumps(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
