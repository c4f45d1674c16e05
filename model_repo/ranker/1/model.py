"""Triton python-backend model ``ranker``: bi-encoder cosine (ONNX Runtime) + behaviour features -> MLP.

Per batch: QUERY and ITEM texts are deduplicated, item (and query) embeddings come from LRU caches,
and only the texts not cached go through the encoder, as one length-sorted batch. A 50-candidate
request for a known catalog therefore costs about one encoder forward (the query). Weights are
local files in this version folder (written by ``python -m workers.model.build``).
"""

import json
import os
from collections import OrderedDict

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer

EMBED_DIM = 384


def decode_texts(array):
    return [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]


def head_forward(head, x):
    h = np.maximum(x @ head["w1"] + head["b1"], 0.0)
    return (h @ head["w2"] + head["b2"]).astype(np.float32)


def load_head(path, n_features):
    with open(path, encoding="utf-8") as fh:
        body = json.load(fh)
    head = {k: np.asarray(body[k], dtype=np.float32) for k in ("w1", "b1", "w2")}
    head["b2"] = np.float32(body["b2"])
    if head["w1"].shape[0] != n_features + 1:
        raise ValueError(f"head expects {head['w1'].shape[0]} inputs, the model gives {n_features + 1}")
    return head


def input_width(config, name):
    """The per-row width of input ``name`` (FEATURES: len(stream.features.FEATURE_NAMES))."""
    return next(int(i["dims"][0]) for i in config["input"] if i["name"] == name)


class LRU:
    def __init__(self, capacity):
        self.capacity = capacity
        self.data = OrderedDict()

    def get(self, key):
        value = self.data.get(key)
        if value is not None:
            self.data.move_to_end(key)
        return value

    def put(self, key, value):
        self.data[key] = value
        self.data.move_to_end(key)
        while len(self.data) > self.capacity:
            self.data.popitem(last=False)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        here = os.path.join(args["model_repository"], args["model_version"])
        self.max_len = int(params.get("max_seq_len", "64"))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(params.get("intra_op_threads", "2"))
        opts.inter_op_num_threads = 1
        # ORT's pool threads spin-wait after each run by default. Runs here come every few ms on cores
        # shared with the worker and Kafka, so a spinning thread held most of a core for ~1.5 ms of
        # compute per query (docs/performance.md, fifth session); waking on demand costs microseconds.
        opts.add_session_config_entry("session.intra_op.allow_spinning", params.get("allow_spinning", "0"))
        onnx_path = os.path.join(here, params.get("onnx_file", "encoder.int8.onnx"))
        self.session = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(os.path.join(here, "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_len)
        # int8 dynamic quantisation scales activations per batch: one text per run keeps a text's
        # embedding independent of its batch neighbours (and equal to the offline evaluation's).
        default_chunk = "1" if "int8" in params.get("onnx_file", "encoder.int8.onnx") else "64"
        self.chunk = int(params.get("embed_batch", default_chunk))
        self.n_features = input_width(config, "FEATURES")
        self.head = load_head(os.path.join(here, "head.json"), self.n_features)
        self.items = LRU(int(params.get("item_cache_size", "8192")))
        self.queries = LRU(int(params.get("query_cache_size", "1024")))

    def embed(self, texts):
        out = np.zeros((len(texts), EMBED_DIM), dtype=np.float32)
        encs = self.tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encs[i].ids))
        for start in range(0, len(order), self.chunk):
            rows = order[start : start + self.chunk]
            width = max(len(encs[i].ids) for i in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                n = len(encs[i].ids)
                ids[r, :n] = encs[i].ids
                mask[r, :n] = 1
            (vecs,) = self.session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})
            out[rows] = vecs
        return out

    def lookup(self, texts, cache):
        """Embeddings for ``texts`` (deduplicated; cached ones skip the encoder)."""
        unique = list(dict.fromkeys(texts))
        found = {t: cache.get(t) for t in unique}
        missing = [t for t, v in found.items() if v is None]
        if missing:
            for text, vec in zip(missing, self.embed(missing)):
                cache.put(text, vec)
                found[text] = vec
        return np.stack([found[t] for t in texts])

    def score(self, queries, items, features):
        q = self.lookup(queries, self.queries)
        d = self.lookup(items, self.items)
        cosine = np.sum(q * d, axis=1, keepdims=True)
        x = np.concatenate([features.astype(np.float32), cosine], axis=1)
        return head_forward(self.head, x)

    def execute(self, requests):
        responses = [None] * len(requests)
        parsed = []
        for n, request in enumerate(requests):
            try:
                queries = decode_texts(pb_utils.get_input_tensor_by_name(request, "QUERY").as_numpy())
                items = decode_texts(pb_utils.get_input_tensor_by_name(request, "ITEM").as_numpy())
                features = pb_utils.get_input_tensor_by_name(request, "FEATURES").as_numpy()
                features = features.reshape(-1, self.n_features)
                if not len(queries) == len(items) == len(features):
                    raise ValueError(f"QUERY/ITEM/FEATURES rows differ: {len(queries)}/{len(items)}/{len(features)}")
                if not np.all(np.isfinite(features)):
                    raise ValueError("FEATURES holds NaN or inf")
                parsed.append((n, queries, items, features))
            except Exception as exc:
                responses[n] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))
        if parsed:
            try:
                scores = self.score(
                    [q for _, qs, _, _ in parsed for q in qs],
                    [i for _, _, its, _ in parsed for i in its],
                    np.concatenate([f for _, _, _, f in parsed]),
                )
            except Exception as exc:  # one failure answers every request of the batch with it
                for n, *_ in parsed:
                    responses[n] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))
                return responses
            start = 0
            for n, qs, _, _ in parsed:
                out = pb_utils.Tensor("SCORE", scores[start : start + len(qs)].reshape(-1, 1))
                responses[n] = pb_utils.InferenceResponse(output_tensors=[out])
                start += len(qs)
        return responses

    def finalize(self):
        self.session = None
