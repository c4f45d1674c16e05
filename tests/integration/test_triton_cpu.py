"""The served models use CPU only while they compute: no thread pool spinning between requests.

ONNX Runtime's pool threads spin-wait after each run by default. At 20 requests/s a spinning thread
held most of a core on the machine the worker and Kafka share (docs/performance.md, fifth session),
for ~1.5 ms of compute per request. Measured from /proc: the CPU of Triton and its model stubs
while requests come every 40 ms, against the wall time they span.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from stream.settings import Settings
from workers.stack import triton

REQUESTS = 30
GAP_S = 0.04
# Computing one small request is a few ms of the 40 ms gap; a spinning pool fills the gap instead.
MAX_BUSY_SHARE = 0.35


def _tree_cpu_s(root: int) -> float:
    """CPU seconds of ``root`` and its direct children (the python-backend stubs), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    pids = [root]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == root:
            pids.append(int(stat.parent.name))
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def _inputs(model: str, n: int) -> list[grpcclient.InferInput]:
    # A new text each time: the ranker caches query embeddings, and a cache hit computes nothing.
    text = np.array([[f"search: a film about number {n} | likes: Drama".encode()]], dtype=object)
    if model == "encoder":
        tensor = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
        tensor.set_data_from_numpy(text)
        return [tensor]
    item = np.array([[b"Toy Story (1995). Animation, Children's, Comedy. 1995."]], dtype=object)
    features = np.zeros((1, 8), dtype=np.float32)
    tensors = [
        grpcclient.InferInput("QUERY", [1, 1], "BYTES"),
        grpcclient.InferInput("ITEM", [1, 1], "BYTES"),
        grpcclient.InferInput("FEATURES", [1, 8], "FP32"),
    ]
    for tensor, value in zip(tensors, (text, item, features), strict=True):
        tensor.set_data_from_numpy(value)
    return tensors


@pytest.mark.parametrize("model", ["encoder", "ranker"])
def test_models_do_not_spin_between_requests(stack: Settings, model: str) -> None:
    pid = triton.process(stack).pid()
    assert pid is not None, "the stack's Triton is not running"
    client = grpcclient.InferenceServerClient(stack.triton_grpc_url)
    for n in range(3):  # first runs allocate; not what is measured
        client.infer(model, _inputs(model, -n - 1))
    cpu0, wall0 = _tree_cpu_s(pid), time.monotonic()
    for n in range(REQUESTS):
        client.infer(model, _inputs(model, n))
        time.sleep(GAP_S)
    cpu, wall = _tree_cpu_s(pid) - cpu0, time.monotonic() - wall0
    assert cpu < MAX_BUSY_SHARE * wall, (
        f"{model}: Triton used {cpu:.2f} s of CPU over {wall:.2f} s for {REQUESTS} single requests"
    )
