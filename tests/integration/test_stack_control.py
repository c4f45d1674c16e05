"""`streamrec stack up/status/down` on a private stack (own ports, own run dir): status tells the truth,
also after `kill -9` of either server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.settings import ROOT, Settings
from workers.stack import control, kafka, triton
from workers.supervisor import free_port

IDENTITY_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            out.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("Y", x * 2)]))
        return out
"""

IDENTITY_CONFIG = """
name: "double"
backend: "python"
max_batch_size: 8
input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""


@pytest.fixture
def private_stack(stack: Settings, tmp_path: Path) -> Iterator[Settings]:
    repo = tmp_path / "model_repo" / "double"
    (repo / "1").mkdir(parents=True)
    (repo / "config.pbtxt").write_text(IDENTITY_CONFIG)
    (repo / "1" / "model.py").write_text(IDENTITY_MODEL)
    settings = stack.model_copy(
        update={
            "kafka_port": free_port(),
            "kafka_controller_port": free_port(),
            "triton_http_port": free_port(),
            "triton_grpc_port": free_port(),
            "triton_metrics_port": free_port(),
            "web_port": free_port(),
            "run_dir": tmp_path / "run",
            "model_repo": tmp_path / "model_repo",
        }
    )
    yield settings
    control.down(settings)


def _env(settings: Settings) -> dict[str, str]:
    keys = (
        "kafka_port",
        "kafka_controller_port",
        "triton_http_port",
        "triton_grpc_port",
        "triton_metrics_port",
        "web_port",
        "run_dir",
        "model_repo",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    env.update({f"STREAMREC_{k.upper()}": str(getattr(settings, k)) for k in keys})
    return env


def _status(settings: Settings) -> tuple[int, dict[str, dict[str, object]]]:
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("streamrec")), "stack", "status", "--json"],
        env=_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.returncode, json.loads(proc.stdout)


def _kill9(pid: int | None) -> None:
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def test_status_tells_the_truth_after_kill_9_of_either_server(private_stack: Settings) -> None:
    rc, report = _status(private_stack)
    assert rc == 1 and not report["kafka"]["up"] and not report["triton"]["up"]

    timings = control.up(private_stack)
    assert timings["kafka"] > 0 and timings["triton"] > 0
    rc, report = _status(private_stack)
    assert rc == 0
    assert report == {
        "kafka": {"up": True, "bootstrap": f"127.0.0.1:{private_stack.kafka_port}"},
        "triton": {
            "up": True,
            "grpc": f"127.0.0.1:{private_stack.triton_grpc_port}",
            "http": f"127.0.0.1:{private_stack.triton_http_port}",
            "metrics": f"127.0.0.1:{private_stack.triton_metrics_port}",
        },
    }

    _kill9(kafka.process(private_stack).pid())
    rc, report = _status(private_stack)
    assert rc == 1 and report["kafka"]["up"] is False and report["triton"]["up"] is True

    kafka.start(private_stack)  # restarts on the same storage
    _kill9(triton.process(private_stack).pid())
    rc, report = _status(private_stack)
    assert rc == 1 and report["kafka"]["up"] is True and report["triton"]["up"] is False

    triton.start(private_stack)
    assert _status(private_stack)[0] == 0
    control.down(private_stack)
    rc, report = _status(private_stack)
    assert rc == 1 and not report["kafka"]["up"] and not report["triton"]["up"]
