"""The CLI's bridge to the model environment (no torch imported here)."""

from __future__ import annotations

import sys

import pytest

from workers.model import runner


def test_runs_a_module_in_the_model_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "model_python", lambda: sys.executable)
    assert runner.run_in_model_env("json.tool", ["--help"]) == 0
    assert "torch" not in sys.modules


def test_rejects_what_is_not_a_module_name() -> None:
    with pytest.raises(ValueError, match="not a module name"):
        runner.run_in_model_env("x; rm -rf /", [])
