"""Triton python-backend model ``encoder``, GPU form: TEXT -> EMBEDDING via the TensorRT plan.

Tokenises (fixed width ``max_seq_len``, the same tokenizer.json as the ranker) and runs
``ranker_encoder`` through BLS; same contract as ``model_repo/encoder``. Local files only.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer


def decode_texts(array):
    return [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]


def pad_tokens(encodings, width):
    ids = np.zeros((len(encodings), width), dtype=np.int64)
    mask = np.zeros((len(encodings), width), dtype=np.int64)
    for row, enc in enumerate(encodings):
        n = min(len(enc.ids), width)
        ids[row, :n] = enc.ids[:n]
        mask[row, :n] = 1
    return ids, mask


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        here = os.path.join(args["model_repository"], args["model_version"])
        self.encoder_model = params.get("encoder_model", "ranker_encoder")
        self.width = int(params.get("max_seq_len", "64"))
        self.tokenizer = Tokenizer.from_file(os.path.join(here, "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.width)

    async def embed(self, texts):
        ids, mask = pad_tokens(self.tokenizer.encode_batch(texts), self.width)
        request = pb_utils.InferenceRequest(
            model_name=self.encoder_model,
            requested_output_names=["embedding"],
            inputs=[pb_utils.Tensor("input_ids", ids), pb_utils.Tensor("attention_mask", mask)],
            preferred_memory=pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0),
        )
        response = await request.async_exec()
        if response.has_error():
            raise RuntimeError(f"{self.encoder_model}: {response.error().message()}")
        return pb_utils.get_output_tensor_by_name(response, "embedding").as_numpy().astype(np.float32)

    async def execute(self, requests):
        # Dynamic batching hands over several requests: one encoder call (<= 64 rows), answer each.
        texts_per_request = [decode_texts(pb_utils.get_input_tensor_by_name(r, "TEXT").as_numpy()) for r in requests]
        try:
            embeddings = await self.embed([t for texts in texts_per_request for t in texts])
        except Exception as exc:  # one failure answers every request in the batch with the error
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))) for _ in requests]
        responses, start = [], 0
        for texts in texts_per_request:
            out = pb_utils.Tensor("EMBEDDING", embeddings[start : start + len(texts)])
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            start += len(texts)
        return responses
