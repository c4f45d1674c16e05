"""The GPU model repository (deploy/gpu/model_repo/) agrees with the ONNX export and the CPU contract.

No GPU is needed: the configs are parsed as Triton parses them (``ModelConfig`` text format), the
TensorRT encoder's tensors are compared with the names ``workers/model/encoder.py`` exports (and,
where the ONNX file is built, with the file itself), the GPU ``ranker``/``encoder`` with the CPU
ones in model_repo/, and the plan build script with both.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from stream.features import N_FEATURES
from stream.settings import ROOT

GPU_REPO = ROOT / "deploy" / "gpu" / "model_repo"
CPU_REPO = ROOT / "model_repo"
BUILD_SCRIPT = ROOT / "deploy" / "tensorrt" / "build_plan.sh"
EXPORT_SOURCE = ROOT / "workers" / "model" / "encoder.py"
ONNX_FILE = CPU_REPO / "ranker" / "1" / "encoder.onnx"
DataType: Any = model_config_pb2.DataType


def _config(repo: Path, model: str) -> Any:
    return text_format.Parse((repo / model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def _params(config: Any) -> dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


def _tensors(tensors: Any) -> list[tuple[str, int, list[int]]]:
    return [(t.name, t.data_type, list(t.dims)) for t in tensors]


def _export_names() -> tuple[list[str], list[str]]:
    """input_names/output_names of the torch.onnx.export call in workers/model/encoder.py."""
    tree = ast.parse(EXPORT_SOURCE.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("onnx.export"):
            kwargs = {
                k.arg: ast.literal_eval(k.value)
                for k in node.keywords
                if k.arg in {"input_names", "output_names"}
            }
            return list(kwargs["input_names"]), list(kwargs["output_names"])
    raise AssertionError("no torch.onnx.export call in workers/model/encoder.py")


def _script_vars() -> dict[str, str]:
    found = re.findall(r'^([A-Z_0-9]+)="?([^\s$"]+)"?$', BUILD_SCRIPT.read_text(), flags=re.MULTILINE)
    return dict(found)


def _shape(text: str) -> tuple[int, int]:
    batch, seq = text.split("x")
    return int(batch), int(seq)


@pytest.fixture(scope="module")
def trt() -> Any:
    return _config(GPU_REPO, "ranker_encoder")


def test_trt_encoder_config(trt: Any) -> None:
    assert trt.name == "ranker_encoder"
    assert trt.platform == "tensorrt_plan"
    assert not trt.backend
    assert trt.max_batch_size > 0
    assert [(g.count, g.kind) for g in trt.instance_group] == [
        (2, model_config_pb2.ModelInstanceGroup.KIND_GPU)
    ]
    batching = trt.dynamic_batching
    assert trt.HasField("dynamic_batching")
    assert batching.max_queue_delay_microseconds > 0
    assert list(batching.preferred_batch_size)
    assert all(0 < b <= trt.max_batch_size for b in batching.preferred_batch_size)


def test_trt_encoder_tensors_match_the_onnx_export(trt: Any) -> None:
    inputs, outputs = _export_names()
    assert [t.name for t in trt.input] == inputs == ["input_ids", "attention_mask"]
    assert [t.name for t in trt.output] == outputs == ["embedding"]
    # Token ids and mask: int64 as exported, batch dim implicit, sequence dynamic.
    assert _tensors(trt.input) == [(name, DataType.TYPE_INT64, [-1]) for name in inputs]
    assert _tensors(trt.output) == [("embedding", DataType.TYPE_FP32, [384])]


def test_trt_encoder_matches_the_onnx_file_when_built(trt: Any) -> None:
    if not ONNX_FILE.exists():
        pytest.skip(f"{ONNX_FILE.relative_to(ROOT)} not built (python -m workers.model.build)")
    try:
        from workers.model.runner import ModelEnvMissing, model_env_vars, model_python

        python = model_python()
    except ModelEnvMissing as exc:
        pytest.skip(str(exc))
    code = (
        "import json, sys, onnx\n"
        "g = onnx.load(sys.argv[1], load_external_data=False).graph\n"
        "row = lambda t: [t.name, t.type.tensor_type.elem_type,"
        " [d.dim_param or d.dim_value for d in t.type.tensor_type.shape.dim]]\n"
        "print(json.dumps({'in': [row(t) for t in g.input], 'out': [row(t) for t in g.output]}))\n"
    )
    out = subprocess.run(
        [str(python), "-c", code, str(ONNX_FILE)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env=model_env_vars(),
    )
    graph = json.loads(out.stdout.strip().splitlines()[-1])
    int64, fp32 = 7, 1  # onnx.TensorProto.INT64 / FLOAT
    assert [(n, t) for n, t, _ in graph["in"]] == [(i.name, int64) for i in trt.input]
    assert [(n, t) for n, t, _ in graph["out"]] == [(o.name, fp32) for o in trt.output]
    for _, _, dims in graph["in"]:  # both axes dynamic: the build's optimisation profile may range them
        assert len(dims) == 2 and all(isinstance(d, str) for d in dims), dims
    # The exported graph leaves the embedding width symbolic (TensorRT infers 384 when it builds).
    out_dims = graph["out"][0][2]
    assert len(out_dims) == 2 and out_dims[1] in (
        trt.output[0].dims[0],
        *[d for d in out_dims if isinstance(d, str)],
    )


@pytest.mark.parametrize("model", ["ranker", "encoder"])
def test_gpu_python_models_keep_the_cpu_contract(model: str) -> None:
    gpu, cpu = _config(GPU_REPO, model), _config(CPU_REPO, model)
    assert gpu.name == cpu.name == model
    assert gpu.backend == "python"
    assert _tensors(gpu.input) == _tensors(cpu.input)
    assert _tensors(gpu.output) == _tensors(cpu.output)
    assert gpu.max_batch_size == cpu.max_batch_size
    assert gpu.HasField("dynamic_batching")
    params = _params(gpu)
    assert params["encoder_model"] == "ranker_encoder"
    assert params["max_seq_len"] == _params(cpu)["max_seq_len"]
    source = (GPU_REPO / model / "1" / "model.py").read_text()
    assert "pb_utils.InferenceRequest(" in source and "async_exec()" in source
    assert '"input_ids"' in source and '"attention_mask"' in source and '"embedding"' in source


def test_gpu_ranker_features_width_is_the_pipelines() -> None:
    (features,) = [t for t in _config(GPU_REPO, "ranker").input if t.name == "FEATURES"]
    assert list(features.dims) == [N_FEATURES]


def test_build_script_uses_the_same_names_and_profile(trt: Any) -> None:
    text = BUILD_SCRIPT.read_text()
    v = _script_vars()
    inputs, outputs = _export_names()
    assert [v["INPUT_IDS"], v["ATTENTION_MASK"]] == inputs
    assert [v["OUTPUT"]] == outputs
    mins, opts, maxs = _shape(v["MIN_SHAPE"]), _shape(v["OPT_SHAPE"]), _shape(v["MAX_SHAPE"])
    assert mins == (1, 8) and opts == (64, 64)
    assert all(a <= b <= c for a, b, c in zip(mins, opts, maxs, strict=True))
    assert maxs[0] == trt.max_batch_size
    seq = int(_params(_config(GPU_REPO, "ranker"))["max_seq_len"])
    assert mins[1] <= seq == maxs[1] == int(_params(_config(CPU_REPO, "ranker"))["max_seq_len"])
    assert int(_params(_config(GPU_REPO, "ranker"))["encoder_batch"]) <= trt.max_batch_size
    for flag in ("minShapes", "optShapes", "maxShapes"):
        assert f'"--{flag}=$INPUT_IDS:$' in text and ",$ATTENTION_MASK:$" in text
    assert "--fp16" in text and "--int8" in text and "--calib" in text
    assert '--saveEngine=$PLAN"' in text
    assert 'PLAN="$GPU_REPO/ranker_encoder/$VERSION/model.plan"' in text
    assert v["GPU_REPO"] == "deploy/gpu/model_repo"
    assert (ROOT / v["GPU_REPO"]) == GPU_REPO
    # The default-named plan file is what the tensorrt_plan platform loads.
    assert not trt.default_model_filename or trt.default_model_filename == "model.plan"


def test_gpu_repository_layout() -> None:
    models = sorted(p.name for p in GPU_REPO.iterdir() if (p / "config.pbtxt").exists())
    assert models == ["encoder", "ranker", "ranker_encoder"]
    for model in models:
        assert (GPU_REPO / model / "1").is_dir()
    ignored = (GPU_REPO / ".gitignore").read_text()
    for generated in ("model.plan", "tokenizer.json", "head.json"):
        assert generated in ignored


def test_gpu_python_models_score_like_in_process() -> None:
    """The GPU ranker/encoder model.py, with BLS answered by the fp32 ONNX export (model env)."""
    source = CPU_REPO / "ranker" / "1"
    if not all((source / name).exists() for name in ("encoder.onnx", "tokenizer.json", "head.json")):
        pytest.skip("model_repo/ranker/1 not built (python -m workers.model.build)")
    try:
        from workers.model.runner import ModelEnvMissing, model_env_vars, model_python

        python = model_python()
    except ModelEnvMissing as exc:
        pytest.skip(str(exc))
    out = subprocess.run(
        [str(python), "-m", "workers.model.gpu_check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
        env=model_env_vars(),
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ranker_max_abs"] < 1e-4  # fixed-width padding and chunked BLS: same scores
    assert result["ranker_cached_max_abs"] < 1e-6  # cached embeddings: same scores again
    assert result["ranker_errors"] == [False, True, False, True, False]  # only the malformed ones fail
    assert result["encoder_max_abs"] < 1e-4
    seq = int(_params(_config(GPU_REPO, "ranker"))["max_seq_len"])
    assert {width for _, width in result["bls_shapes"]} == {seq}  # one shape: requests batch together
    assert result["bls_calls"] >= 3  # items split into chunks of encoder_batch
