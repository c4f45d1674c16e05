"""The ranker's configuration in one place: seeds, sizes, training knobs and artifact paths."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODELS_DIR = Path(os.environ.get("STREAMREC_MODELS_DIR", ROOT / "models")) / "ranker"
MODEL_REPO = ROOT / "model_repo"
RANKER_DIR = MODEL_REPO / "ranker"
ENCODER_DIR = MODEL_REPO / "encoder"  # the retrieval encoder: the pretrained fp32 export
REPORTS_DIR = ROOT / "reports"
CACHE_DIR = MODELS_DIR / "cache"

# Files inside model_repo/ranker/<version>/ (the generated ones are git-ignored).
ONNX_FP32 = "encoder.onnx"
ONNX_INT8 = "encoder.int8.onnx"
TOKENIZER = "tokenizer.json"
HEAD = "head.json"  # small (< 5 MB): committed
MANIFEST = "build.json"


@dataclass(frozen=True)
class RankerConfig:
    seed: int = 0
    max_seq_len: int = 64
    version: str = "1"
    # head: MLP over the 8 behaviour features + the text cosine, listwise softmax loss
    head_hidden: int = 16
    head_epochs: int = 400
    head_lr: float = 0.02
    head_weight_decay: float = 1e-4
    cold_starts: bool = True  # also a training query at each user's first event (no history)
    train_shifts: int = 5  # training queries per user: the 5 events before the held-out last one
    # full mode: contrastive fine-tuning of the encoder (in-batch negatives), then the head
    full_steps: int = 200
    full_batch: int = 32
    full_lr: float = 3e-5
    full_temperature: float = 0.05
    # evaluation
    quick_users: int = 150
    cold_user_history: int = 30  # fewer training interactions than this: a cold user
    cold_item_count: int = 10  # target seen fewer times than this before the query: a cold item


CONFIG = RankerConfig()
