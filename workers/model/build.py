"""Builds everything ``model_repo/ranker/<version>/`` needs, idempotently (run before ``stack up``).

    python -m workers.model.build [--version 1] [--encoder-dir DIR] [--head PATH] [--force]

* ``head.json``: kept if present (version 1's is committed); else copied from ``--head`` or
  ``models/ranker/cheap/head.json``; else trained now in cheap mode (about a minute on 2 cores).
* ``encoder.onnx`` (fp32) exported from the pretrained MiniLM (or ``--encoder-dir``, a fine-tuned
  one) and ``encoder.int8.onnx`` (ONNX Runtime dynamic quantisation), ``tokenizer.json``.
* ``build.json`` records the source digest; an unchanged source skips the export.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from pathlib import Path

from workers.model.config import (
    ENCODER_DIR,
    HEAD,
    MANIFEST,
    MODELS_DIR,
    ONNX_FP32,
    ONNX_INT8,
    RANKER_DIR,
    TOKENIZER,
)

BUILD_FORMAT = 1  # bump when the export itself changes


def digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in Path(path).iterdir() if p.suffix in {".json", ".safetensors", ".txt"}):
        h.update(f.name.encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    h.update(str(BUILD_FORMAT).encode())
    return h.hexdigest()[:16]


def ensure_head(version_dir: Path, head: Path | None) -> str:
    dst = version_dir / HEAD
    if head is not None:
        shutil.copy(head, dst)
        return f"copied {head}"
    if dst.exists():
        return "kept"
    trained = MODELS_DIR / "cheap" / HEAD
    if not trained.exists():
        from workers.model import train

        train.main(["--mode", "cheap"])
    shutil.copy(trained, dst)
    return f"copied {trained}"


def build(version: str, encoder_dir: Path | None, head: Path | None, force: bool) -> dict:
    from workers.model.encoder import export_onnx, pretrained_path, quantize_int8

    started = time.perf_counter()
    version_dir = RANKER_DIR / version
    version_dir.mkdir(parents=True, exist_ok=True)
    source = Path(encoder_dir) if encoder_dir else pretrained_path()
    key = digest(source)
    manifest_path = version_dir / MANIFEST
    old = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    outputs = [version_dir / n for n in (ONNX_FP32, ONNX_INT8, TOKENIZER)]
    head_state = ensure_head(version_dir, head)
    if not force and old.get("source_digest") == key and all(p.exists() for p in outputs):
        return {**old, "head": head_state, "skipped": True}
    export_onnx(encoder_dir, version_dir / ONNX_FP32)
    quantize_int8(version_dir / ONNX_FP32, version_dir / ONNX_INT8)
    shutil.copy(source / TOKENIZER, version_dir / TOKENIZER)
    manifest = {
        "version": version,
        "source": str(source),
        "source_digest": key,
        "files": {p.name: p.stat().st_size for p in outputs},
        "seconds": round(time.perf_counter() - started, 1),
    }
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    return {**manifest, "head": head_state, "skipped": False}


def ensure_retrieval_encoder(version_dir: Path) -> str:
    """``model_repo/encoder/1/``: the pretrained fp32 export and its tokenizer (retrieval embeddings).

    Hard links when possible: the same 90 MB file serves both models.
    """
    target = ENCODER_DIR / "1"
    target.mkdir(parents=True, exist_ok=True)
    state = "kept"
    for name in (ONNX_FP32, TOKENIZER):
        src, dst = version_dir / name, target / name
        if (
            dst.exists()
            and dst.stat().st_size == src.stat().st_size
            and dst.stat().st_mtime >= src.stat().st_mtime
        ):
            continue
        dst.unlink(missing_ok=True)
        try:
            dst.hardlink_to(src)
        except OSError:
            shutil.copy2(src, dst)
        state = "linked"
    return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.model.build")
    parser.add_argument("--version", default="1")
    parser.add_argument(
        "--encoder-dir", type=Path, default=None, help="fine-tuned encoder (default: pretrained)"
    )
    parser.add_argument("--head", type=Path, default=None, help="head.json to install (default: keep/cheap)")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    result = build(args.version, args.encoder_dir, args.head, args.force)
    if args.encoder_dir is None:  # only the pretrained export serves retrieval
        result["retrieval_encoder"] = ensure_retrieval_encoder(RANKER_DIR / args.version)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
