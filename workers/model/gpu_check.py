"""Runs the GPU repository's python models without a GPU: a stand-in ``triton_python_backend_utils``
whose BLS calls to ``ranker_encoder`` are answered by the fp32 ONNX export (the graph the TensorRT
plan is built from), so the python side - tokenising, fixed-width padding, chunking, caches, head,
per-request errors - is checked against the in-process scores (``workers.model.check score``).

    python -m workers.model.gpu_check [--version 1]     # prints one JSON line
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import shutil
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import numpy as np

from workers.model import head as head_mod
from workers.model.config import HEAD, ONNX_FP32, RANKER_DIR, ROOT, TOKENIZER

GPU_REPO = ROOT / "deploy" / "gpu" / "model_repo"


class _Tensor:
    def __init__(self, name: str, value: np.ndarray) -> None:
        self._name, self._value = name, np.asarray(value)

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._value


class _Error:
    def __init__(self, message: str) -> None:
        self._message = message

    def message(self) -> str:
        return self._message


class _Response:
    def __init__(self, output_tensors: list[_Tensor] | None = None, error: _Error | None = None) -> None:
        self.outputs, self.error_ = output_tensors or [], error

    def has_error(self) -> bool:
        return self.error_ is not None

    def error(self) -> _Error | None:
        return self.error_


def fake_pb_utils(encoder: Any, calls: list[tuple[int, ...]]) -> types.ModuleType:
    """The slice of ``triton_python_backend_utils`` the GPU models use; BLS runs ``encoder``."""
    pb = types.ModuleType("triton_python_backend_utils")

    class InferenceRequest:
        def __init__(
            self, model_name: str, requested_output_names: list[str], inputs: list[_Tensor], **_: Any
        ):
            self.model_name, self.inputs = model_name, {t.name(): t.as_numpy() for t in inputs}
            self.outputs = requested_output_names

        def exec(self) -> _Response:
            ids, mask = self.inputs["input_ids"], self.inputs["attention_mask"]
            assert ids.dtype == mask.dtype == np.int64 and ids.shape == mask.shape
            assert self.model_name == "ranker_encoder" and self.outputs == ["embedding"]
            calls.append(tuple(ids.shape))
            (vecs,) = encoder.run(["embedding"], {"input_ids": ids, "attention_mask": mask})
            return _Response([_Tensor("embedding", vecs)])

        async def async_exec(self) -> _Response:
            return self.exec()

    pb.Tensor = _Tensor  # type: ignore[attr-defined]
    pb.TritonError = _Error  # type: ignore[attr-defined]
    pb.InferenceResponse = _Response  # type: ignore[attr-defined]
    pb.InferenceRequest = InferenceRequest  # type: ignore[attr-defined]
    pb.PreferredMemory = lambda *a: a  # type: ignore[attr-defined]
    pb.TRITONSERVER_MEMORY_CPU = 0  # type: ignore[attr-defined]
    pb.get_input_tensor_by_name = lambda r, n: r[n]  # type: ignore[attr-defined]
    pb.get_output_tensor_by_name = lambda r, n: next(t for t in r.outputs if t.name() == n)  # type: ignore[attr-defined]
    return pb


def load_model(model: str, version_dir: Path, config_text: str) -> Any:
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    spec = importlib.util.spec_from_file_location(f"gpu_{model}", GPU_REPO / model / "1" / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = json_format.MessageToDict(
        text_format.Parse(config_text, model_config_pb2.ModelConfig()), preserving_proto_field_name=True
    )
    instance = module.TritonPythonModel()
    instance.initialize(
        {
            "model_config": json.dumps(config),
            "model_repository": str(version_dir.parent),
            "model_version": version_dir.name,
        }
    )
    return instance


def check(version: str) -> dict[str, Any]:
    import onnxruntime as ort

    from workers.model.check import PARITY_TEXTS
    from workers.model.encoder import OnnxEncoder

    source = RANKER_DIR / version
    session = ort.InferenceSession(str(source / ONNX_FP32), providers=["CPUExecutionProvider"])
    calls: list[tuple[int, ...]] = []
    sys.modules["triton_python_backend_utils"] = fake_pb_utils(session, calls)
    head = head_mod.load(source / HEAD)
    n_features = len(head["w1"]) - 1
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        out: dict[str, Any] = {}
        for model in ("ranker", "encoder"):
            version_dir = Path(tmp) / model / "1"
            version_dir.mkdir(parents=True)
            shutil.copy(source / TOKENIZER, version_dir / TOKENIZER)
            shutil.copy(source / HEAD, version_dir / HEAD)
            text = (GPU_REPO / model / "config.pbtxt").read_text()
            if model == "ranker":  # small chunks, so one batch needs several concurrent BLS calls
                text = text.replace(
                    '"encoder_batch" value: { string_value: "256" }',
                    '"encoder_batch" value: { string_value: "4" }',
                )
            instance = load_model(model, version_dir, text)
            if model == "ranker":
                out.update(check_ranker(instance, source, head, n_features, rng, calls))
            else:
                texts = np.array([[t.encode()] for t in PARITY_TEXTS], dtype=object)
                (resp,) = asyncio.run(instance.execute([{"TEXT": _Tensor("TEXT", texts)}]))
                ref = OnnxEncoder(source / ONNX_FP32, source / TOKENIZER).embed(PARITY_TEXTS)
                out["encoder_max_abs"] = float(np.abs(resp.outputs[0].as_numpy() - ref).max())
    out["bls_shapes"] = sorted(set(calls))
    return out


def check_ranker(
    instance: Any, source: Path, head: dict[str, Any], n_features: int, rng: Any, calls: list
) -> dict[str, Any]:
    from workers.model.check import PARITY_TEXTS
    from workers.model.encoder import OnnxEncoder

    def request(query: str, items: list[str], features: np.ndarray) -> dict[str, _Tensor]:
        return {
            "QUERY": _Tensor("QUERY", np.array([[query.encode()]] * len(items), dtype=object)),
            "ITEM": _Tensor("ITEM", np.array([[t.encode()] for t in items], dtype=object)),
            "FEATURES": _Tensor("FEATURES", features.astype(np.float32)),
        }

    rows = [
        (PARITY_TEXTS[q % 2], PARITY_TEXTS[(q + i) % len(PARITY_TEXTS)]) for q in range(3) for i in range(9)
    ]
    feats = rng.random((len(rows), n_features)).astype(np.float32)
    good = [request(rows[s][0], [r[1] for r in rows[s : s + 9]], feats[s : s + 9]) for s in (0, 9, 18)]
    bad_nan = request("q", ["a"], np.full((1, n_features), np.nan))
    bad_rows = request("q", ["a", "b"], np.zeros((3, n_features)))
    responses = asyncio.run(instance.execute([good[0], bad_nan, good[1], bad_rows, good[2]]))
    got = np.concatenate([responses[i].outputs[0].as_numpy().reshape(-1) for i in (0, 2, 4)])
    enc = OnnxEncoder(source / ONNX_FP32, source / TOKENIZER)
    q = enc.embed([r[0] for r in rows])
    d = enc.embed([r[1] for r in rows])
    ref = head_mod.forward(head, head_mod.inputs(feats, np.sum(q * d, axis=1)))
    cached = asyncio.run(instance.execute([good[0]]))[0].outputs[0].as_numpy().reshape(-1)
    return {
        "ranker_max_abs": float(np.abs(got - ref).max()),
        "ranker_errors": [responses[i].has_error() for i in range(5)],
        "ranker_cached_max_abs": float(np.abs(cached - got[:9]).max()),
        "bls_calls": len(calls),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.model.gpu_check")
    parser.add_argument("--version", default="1")
    args = parser.parse_args(argv)
    print(json.dumps(check(args.version)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
