"""Checks the tests run in the model environment (the app environment has no torch/ONNX Runtime).

python -m workers.model.check parity [--out DIR]   export to DIR; torch vs ONNX fp32/int8 agreement
python -m workers.model.check score [--version 1] [--onnx FILE]
                                                    rows (JSON on stdin) -> in-process scores (stdout)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from workers.model import head as head_mod
from workers.model.config import HEAD, ONNX_INT8, RANKER_DIR, TOKENIZER

PARITY_TEXTS = [
    "watched: Star Wars (1977); Fargo (1996); Contact (1997) | likes: Drama, Sci-Fi, Comedy",
    "Toy Story (1995). Animation, Children's, Comedy. 1995.",
    "search: space opera | watched: Alien (1979)",
    "popular items",
    "Shawshank Redemption, The (1994). Drama. 1994.",
    "x " * 200,  # longer than max_seq_len: truncation must agree
]


def parity(out_dir: Path) -> dict:
    from workers.model.encoder import OnnxEncoder, TorchEncoder, export_onnx, pretrained_path, quantize_int8

    export_onnx(None, out_dir / "encoder.onnx")
    quantize_int8(out_dir / "encoder.onnx", out_dir / "encoder.int8.onnx")
    tok = pretrained_path() / TOKENIZER
    ref = TorchEncoder().embed(PARITY_TEXTS)
    fp32 = OnnxEncoder(out_dir / "encoder.onnx", tok).embed(PARITY_TEXTS)
    int8 = OnnxEncoder(out_dir / "encoder.int8.onnx", tok).embed(PARITY_TEXTS)
    # batch-of-one equals batch-of-many (padding must not leak into the pooled vector)
    single = np.stack([OnnxEncoder(out_dir / "encoder.onnx", tok).embed([t])[0] for t in PARITY_TEXTS[:2]])
    return {
        "fp32_max_abs": float(np.abs(ref - fp32).max()),
        "int8_min_cosine": float(np.sum(ref * int8, axis=1).min()),
        "padding_max_abs": float(np.abs(single - fp32[:2]).max()),
    }


def score(version: str, onnx_file: str) -> list[float]:
    from workers.model.encoder import OnnxEncoder

    rows = json.load(sys.stdin)
    version_dir = RANKER_DIR / version
    enc = OnnxEncoder(version_dir / onnx_file, version_dir / TOKENIZER)
    head = head_mod.load(version_dir / HEAD)
    q = enc.embed([r["query"] for r in rows])
    d = enc.embed([r["item"] for r in rows])
    features = np.asarray([r["features"] for r in rows], dtype=np.float32)
    return head_mod.forward(head, head_mod.inputs(features, np.sum(q * d, axis=1))).tolist()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.model.check")
    parser.add_argument("what", choices=("parity", "score"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--version", default="1")
    parser.add_argument("--onnx", default=ONNX_INT8)
    args = parser.parse_args(argv)
    if args.what == "parity":
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(parity(args.out or Path(tmp))))
    else:
        print(json.dumps(score(args.version, args.onnx)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
