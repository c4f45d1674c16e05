"""ONNX export parity with the torch encoder, checked in the model environment (a subprocess).

The app environment has no torch; these tests run ``python -m workers.model.check parity`` with the
model environment's Python so CI really exercises the export.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from stream.features import N_FEATURES
from stream.settings import ROOT
from workers.model.runner import ModelEnvMissing, model_env_vars, model_python


def _model_python() -> str:
    try:
        return str(model_python())
    except ModelEnvMissing as exc:
        pytest.skip(str(exc))


def run_module(*args: str, timeout: int = 280) -> str:
    out = subprocess.run(
        [_model_python(), "-m", *args],
        capture_output=True,
        text=True,
        env=model_env_vars(),
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def test_onnx_matches_torch(tmp_path: Path) -> None:
    result = json.loads(run_module("workers.model.check", "parity", "--out", str(tmp_path)))
    assert result["fp32_max_abs"] < 1e-4  # fp32 export: same function
    assert result["padding_max_abs"] < 1e-4  # batching with padding does not change a text's vector
    assert result["int8_min_cosine"] > 0.85  # int8: close, not equal (quality checked in bench/ranker.py)


def test_served_head_matches_training_head() -> None:
    """model_repo/ranker/1/model.py's numpy head equals workers.model.head (the stub cannot import it)."""
    import ast

    from workers.model import head as head_mod

    source = (ROOT / "model_repo" / "ranker" / "1" / "model.py").read_text()
    tree = ast.parse(source)
    wanted = {"head_forward", "load_head"}
    nodes: list[ast.stmt] = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    namespace: dict = {"np": np, "json": json}
    exec(compile(ast.Module(body=nodes, type_ignores=[]), "model.py", "exec"), namespace)
    path = ROOT / "model_repo" / "ranker" / "1" / "head.json"
    if not path.exists():
        pytest.skip("no head.json")
    x = np.random.default_rng(0).random((20, N_FEATURES + 1), dtype=np.float32)
    served = namespace["head_forward"](namespace["load_head"](path, N_FEATURES), x)
    np.testing.assert_allclose(served, head_mod.forward(head_mod.load(path), x), atol=1e-6)
