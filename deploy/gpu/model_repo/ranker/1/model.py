"""Triton python-backend model ``ranker``, GPU form: tokenise, embed with TensorRT via BLS, fuse.

Same contract and head as ``model_repo/ranker`` (QUERY, ITEM, FEATURES -> SCORE). QUERY and ITEM
texts are deduplicated per batch and their embeddings cached (LRU); only uncached texts are
tokenised (fixed width ``max_seq_len``) and sent to ``ranker_encoder`` (the TensorRT plan), in
chunks of at most its max_batch_size, concurrently (``async_exec``). Local files only.
"""

import asyncio
import json
import os
from collections import OrderedDict

import numpy as np
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
    return next(int(i["dims"][0]) for i in config["input"] if i["name"] == name)


def pad_tokens(encodings, width):
    """Fixed-width int64 ids and mask: same-shape BLS requests batch together in ranker_encoder."""
    ids = np.zeros((len(encodings), width), dtype=np.int64)
    mask = np.zeros((len(encodings), width), dtype=np.int64)
    for row, enc in enumerate(encodings):
        n = min(len(enc.ids), width)
        ids[row, :n] = enc.ids[:n]
        mask[row, :n] = 1
    return ids, mask


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
        self.encoder_model = params.get("encoder_model", "ranker_encoder")
        self.width = int(params.get("max_seq_len", "64"))
        self.chunk = int(params.get("encoder_batch", "256"))
        self.n_features = input_width(config, "FEATURES")
        self.tokenizer = Tokenizer.from_file(os.path.join(here, "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.width)
        self.head = load_head(os.path.join(here, "head.json"), self.n_features)
        self.items = LRU(int(params.get("item_cache_size", "8192")))
        self.queries = LRU(int(params.get("query_cache_size", "1024")))

    async def encode(self, ids, mask):
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

    async def embed(self, texts):
        ids, mask = pad_tokens(self.tokenizer.encode_batch(texts), self.width)
        parts = [
            self.encode(ids[s : s + self.chunk], mask[s : s + self.chunk])
            for s in range(0, len(texts), self.chunk)
        ]
        return np.concatenate(await asyncio.gather(*parts)).reshape(-1, EMBED_DIM)

    async def lookup(self, texts, cache):
        """Embeddings for ``texts`` (deduplicated; cached ones skip the encoder)."""
        unique = list(dict.fromkeys(texts))
        found = {t: cache.get(t) for t in unique}
        missing = [t for t, v in found.items() if v is None]
        if missing:
            for text, vec in zip(missing, await self.embed(missing), strict=True):
                cache.put(text, vec)
                found[text] = vec
        return np.stack([found[t] for t in texts])

    async def score(self, queries, items, features):
        q = await self.lookup(queries, self.queries)
        d = await self.lookup(items, self.items)
        cosine = np.sum(q * d, axis=1, keepdims=True)
        return head_forward(self.head, np.concatenate([features.astype(np.float32), cosine], axis=1))

    async def execute(self, requests):
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
                scores = await self.score(
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
