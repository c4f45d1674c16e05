"""CI smoke: a tiny training run and the evaluation on a small slice, in the model environment.

Hermetic: artifacts and caches go to a temporary STREAMREC_MODELS_DIR.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from stream.settings import ROOT
from workers.model.runner import ModelEnvMissing, model_env_vars, model_python

KEYS = {"ndcg@10", "recall@10", "mrr", "candidate_recall@k", "coverage"}
METHODS = {"streamrec", "popularity", "covisitation", "item_knn", "zero_shot", "fallback"}


@pytest.mark.timeout(600)
def test_train_and_eval_smoke(tmp_path: Path) -> None:
    try:
        python = str(model_python())
    except ModelEnvMissing as exc:
        pytest.skip(str(exc))
    if not os.environ.get("STREAMREC_DATA_DIR") and not (ROOT / ".venv" / "streamrec-paths.env").exists():
        pytest.skip("MovieLens not installed")
    env = {**model_env_vars(), "STREAMREC_MODELS_DIR": str(tmp_path / "models")}

    def run(*args: str) -> str:
        out = subprocess.run(
            [python, "-m", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=280, check=False
        )
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout.strip().splitlines()[-1]

    head = tmp_path / "models" / "ranker" / "cheap" / "head.json"
    trained = json.loads(
        run("workers.model.train", "--mode", "cheap", "--steps", "20", "--limit-events", "4000")
    )
    assert trained["epochs"] == 20 and head.exists()
    table = json.loads(
        run(
            "workers.evaluation.run",
            "--json",
            "--quick",
            "--limit-events",
            "4000",
            "--encoder",
            "torch",
            "--head",
            str(head),
        )
    )
    assert set(table) == METHODS
    for metrics in table.values():
        assert set(metrics) == KEYS
        assert all(0.0 <= v <= 1.0 for v in metrics.values())
