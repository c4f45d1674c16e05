"""The fusion head: a tiny MLP over the behaviour features and the text cosine, stored as JSON.

The numpy forward here is what evaluation uses; ``model_repo/ranker/1/model.py`` carries the same
few lines (the Triton stub cannot import this package), and the integration test checks they agree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from stream.features import FEATURE_NAMES

INPUTS: tuple[str, ...] = (*FEATURE_NAMES, "text_cosine")


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(Path(path).read_text()))


def inputs(features: np.ndarray, cosine: np.ndarray) -> np.ndarray:
    return np.concatenate([features.astype(np.float32), cosine.reshape(-1, 1).astype(np.float32)], axis=1)


def forward(head: dict[str, Any], x: np.ndarray) -> np.ndarray:
    w1 = np.asarray(head["w1"], dtype=np.float32)
    b1 = np.asarray(head["b1"], dtype=np.float32)
    w2 = np.asarray(head["w2"], dtype=np.float32)
    b2 = np.float32(head["b2"])
    h = np.maximum(x.astype(np.float32) @ w1 + b1, 0.0)
    return (h @ w2 + b2).astype(np.float32)


def save(path: Path, weights: dict[str, Any], meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"inputs": list(INPUTS), **weights, "meta": meta}
    path.write_text(json.dumps(body, indent=1) + "\n")
