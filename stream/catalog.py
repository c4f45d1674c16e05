"""An in-memory search index over the item catalog: BM25, embeddings, and genres.

It is a derived cache rebuilt from the ``items`` and ``item-vectors`` global tables, never the
source of truth, so every worker can hold one.
"""

from __future__ import annotations

import heapq
import math
import re
from collections import defaultdict

import numpy as np

from stream.records import Item
from stream.text import item_text

_TOKEN = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "the",
        "of",
        "in",
        "on",
        "for",
        "to",
        "with",
        "from",
        "by",
        "at",
        "is",
        "it",
        "me",
        "my",
        "i",
    ]
)
BM25_K1 = 1.2
BM25_B = 0.75


def tokenize(text: str) -> list[str]:
    return [t for t in _TOKEN.findall(text.lower()) if t not in _STOPWORDS]


class CatalogIndex:
    def __init__(self) -> None:
        self.items: dict[str, Item] = {}
        # ``item_text`` of each item, built once here: the ranker reads it for every candidate of
        # every query, and an item only changes through ``upsert``.
        self._texts: dict[str, str] = {}
        self._postings: dict[str, dict[str, int]] = defaultdict(dict)
        self._doc_len: dict[str, int] = {}
        self._total_len = 0
        self._by_category: dict[str, set[str]] = defaultdict(set)
        self._vectors: dict[str, np.ndarray] = {}
        self._matrix: np.ndarray | None = None
        self._matrix_ids: list[str] = []

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.items

    def get(self, item_id: str) -> Item | None:
        return self.items.get(item_id)

    def upsert(self, item: Item) -> None:
        if item.item_id in self.items:
            self.remove(item.item_id)
        self.items[item.item_id] = item
        text = self._texts[item.item_id] = item_text(item)
        tokens = tokenize(text)
        for token in set(tokens):
            self._postings[token][item.item_id] = tokens.count(token)
        self._doc_len[item.item_id] = len(tokens)
        self._total_len += len(tokens)
        for category in item.categories:
            self._by_category[category].add(item.item_id)

    def remove(self, item_id: str) -> None:
        item = self.items.pop(item_id, None)
        if item is None:
            return
        for token in set(tokenize(self._texts.pop(item_id))):
            self._postings[token].pop(item_id, None)
        self._total_len -= self._doc_len.pop(item_id, 0)
        for category in item.categories:
            self._by_category[category].discard(item_id)
        self.set_vector(item_id, None)

    def text(self, item_id: str) -> str | None:
        """``stream.text.item_text`` of the item (None when it is not in the catalog)."""
        return self._texts.get(item_id)

    def newest(self, n: int) -> list[str]:
        """The ``n`` most recently updated items (ties by id), for cold starts."""
        return heapq.nsmallest(n, self.items, key=lambda i: (-self.items[i].updated_at, i))

    def in_category(self, category: str) -> set[str]:
        return self._by_category.get(category, set())

    # --- lexical ---
    def bm25(self, query: str) -> dict[str, float]:
        """BM25 score of every item sharing a term with ``query``."""
        n_docs = len(self.items)
        if not n_docs:
            return {}
        avgdl = self._total_len / n_docs
        scores: dict[str, float] = defaultdict(float)
        for term in set(tokenize(query)):
            postings = self._postings.get(term)
            if not postings:
                continue
            idf = math.log(1.0 + (n_docs - len(postings) + 0.5) / (len(postings) + 0.5))
            for item_id, tf in postings.items():
                norm = tf + BM25_K1 * (1 - BM25_B + BM25_B * self._doc_len[item_id] / avgdl)
                scores[item_id] += idf * tf * (BM25_K1 + 1) / norm
        return dict(scores)

    # --- embeddings ---
    def set_vector(self, item_id: str, vector: np.ndarray | None) -> None:
        if vector is None:
            self._vectors.pop(item_id, None)
        else:
            self._vectors[item_id] = np.asarray(vector, dtype=np.float32)
        self._matrix = None

    def vector(self, item_id: str) -> np.ndarray | None:
        return self._vectors.get(item_id)

    def has_vector(self, item_id: str) -> bool:
        return item_id in self._vectors

    def missing_vectors(self) -> list[str]:
        return [i for i in self.items if i not in self._vectors]

    def cosine(self, query_vec: np.ndarray) -> dict[str, float]:
        """Cosine of ``query_vec`` with every item that has a vector (vectors are L2-normalised)."""
        if not self._vectors:
            return {}
        if self._matrix is None:
            self._matrix_ids = list(self._vectors)
            self._matrix = np.stack([self._vectors[i] for i in self._matrix_ids])
        sims = self._matrix @ np.asarray(query_vec, dtype=np.float32)
        return dict(zip(self._matrix_ids, sims.tolist(), strict=True))
