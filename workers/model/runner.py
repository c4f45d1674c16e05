"""Runs a model-environment module (torch, ONNX Runtime) from the app environment, which has neither.

The CLI wires ``streamrec train`` / ``streamrec eval`` to::

    run_in_model_env("workers.model.train", ["--mode", "cheap"])
    run_in_model_env("workers.evaluation.run", ["--json", "--quick"])
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from stream.settings import get_settings

ROOT = Path(__file__).resolve().parents[2]


class ModelEnvMissing(RuntimeError):
    pass


def model_python() -> Path:
    env = get_settings().model_env
    python = env / "bin" / "python" if env else None
    if python is None or not python.exists():
        raise ModelEnvMissing(
            "model environment not found: run deploy/bootstrap.sh (or set STREAMREC_MODEL_ENV)"
        )
    return python


def model_env_vars() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": f"{ROOT}:{path}" if path else str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
    }


def run_in_model_env(module: str, args: list[str]) -> int:
    """``$STREAMREC_MODEL_ENV/bin/python -m module *args`` from the repository root; its exit status.

    stdout/stderr are inherited, so ``streamrec eval --json`` prints the module's JSON unchanged.
    """
    if not module.replace(".", "").replace("_", "").isalnum():
        raise ValueError(f"not a module name: {module!r}")
    cmd = [str(model_python()), "-m", module, *args]
    return subprocess.run(cmd, cwd=ROOT, env=model_env_vars(), check=False).returncode
