"""Triton python-backend model ``encoder``: MiniLM-L6 sentence embeddings with ONNX Runtime (fp32).

TEXT in, the L2-normalised mean-pooled 384-d embedding out (the export in workers/model/encoder.py
includes pooling and normalisation). Tokenisation happens here, once. The files in this version
folder come from ``python -m workers.model.build`` (pretrained weights, local files only).
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer


def decode_texts(array):
    return [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]


def pad(encodings):
    width = max((len(e.ids) for e in encodings), default=1) or 1
    ids = np.zeros((len(encodings), width), dtype=np.int64)
    mask = np.zeros((len(encodings), width), dtype=np.int64)
    for row, enc in enumerate(encodings):
        ids[row, : len(enc.ids)] = enc.ids
        mask[row, : len(enc.ids)] = 1
    return ids, mask


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        here = os.path.join(args["model_repository"], args["model_version"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(params.get("intra_op_threads", "2"))
        opts.inter_op_num_threads = 1
        # ORT's pool threads spin-wait after each run by default. Runs here come every few ms on cores
        # shared with the worker and Kafka, so a spinning thread held most of a core for ~1.5 ms of
        # compute per query (docs/performance.md, fifth session); waking on demand costs microseconds.
        opts.add_session_config_entry("session.intra_op.allow_spinning", params.get("allow_spinning", "0"))
        self.session = ort.InferenceSession(
            os.path.join(here, params.get("onnx_file", "encoder.onnx")), opts, providers=["CPUExecutionProvider"]
        )
        self.tokenizer = Tokenizer.from_file(os.path.join(here, "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=int(params.get("max_seq_len", "64")))

    def embed(self, texts):
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        ids, mask = pad(self.tokenizer.encode_batch(texts))
        (vectors,) = self.session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})
        return vectors.astype(np.float32)

    def execute(self, requests):
        # Dynamic batching hands over several requests: run them as one batch, answer each.
        texts_per_request = [decode_texts(pb_utils.get_input_tensor_by_name(r, "TEXT").as_numpy()) for r in requests]
        try:
            embeddings = self.embed([t for texts in texts_per_request for t in texts])
        except Exception as exc:  # one failure answers every request in the batch with it
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))) for _ in requests]
        responses, start = [], 0
        for texts in texts_per_request:
            out = pb_utils.Tensor("EMBEDDING", embeddings[start : start + len(texts)])
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            start += len(texts)
        return responses
