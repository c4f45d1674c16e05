"""The canary's probe batch: rows of (user text, item text, features) and, when the model env computed
them, the served encoder's cosines, so the expected score of a head is ``head.forward`` exactly."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream.features import N_FEATURES
from workers.model import head as head_mod

# Used when no retrain wrote a probe from its own data (e.g. publishing a head trained elsewhere).
DEFAULT_QUERIES = (
    "watched: Star Wars (1977); Return of the Jedi (1983) | likes: Action, Sci-Fi",
    "search: romantic comedy | likes: Comedy, Romance",
    "popular items",
    "watched: Fargo (1996); Pulp Fiction (1994) | likes: Crime, Thriller, Drama",
)
DEFAULT_ITEMS = (
    "Empire Strikes Back, The (1980) (1980). Action, Adventure, Sci-Fi, War. 1980.",
    "Sleepless in Seattle (1993) (1993). Comedy, Romance. 1993.",
    "Toy Story (1995) (1995). Animation, Children's, Comedy. 1995.",
    "Reservoir Dogs (1992) (1992). Crime, Thriller. 1992.",
)


@dataclass(frozen=True)
class Probe:
    queries: list[str]
    items: list[str]
    features: np.ndarray  # (n, N_FEATURES) float32
    cosines: np.ndarray | None = None  # (n,) from the served encoder, when known

    def expected(self, head: dict[str, object]) -> np.ndarray | None:
        if self.cosines is None:
            return None
        return head_mod.forward(head, head_mod.inputs(self.features, self.cosines))

    def to_json(self) -> dict[str, object]:
        return {
            "queries": self.queries,
            "items": self.items,
            "features": self.features.tolist(),
            "cosines": None if self.cosines is None else self.cosines.tolist(),
        }

    @classmethod
    def from_json(cls, body: dict[str, object]) -> Probe:
        cos = body.get("cosines")
        return cls(
            queries=[str(q) for q in body["queries"]],  # type: ignore[attr-defined]
            items=[str(i) for i in body["items"]],  # type: ignore[attr-defined]
            features=np.asarray(body["features"], dtype=np.float32).reshape(-1, N_FEATURES),
            cosines=None if cos is None else np.asarray(cos, dtype=np.float32),
        )

    @classmethod
    def load(cls, path: Path) -> Probe:
        return cls.from_json(json.loads(Path(path).read_text()))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json()) + "\n")


def default_probe() -> Probe:
    """Every query against every item, features spread over [0, 1] so the head's hidden units vary."""
    pairs = [(q, i) for q in DEFAULT_QUERIES for i in DEFAULT_ITEMS]
    grid = np.linspace(0.0, 1.0, len(pairs) * N_FEATURES, dtype=np.float32).reshape(len(pairs), N_FEATURES)
    features = np.asarray(np.random.default_rng(0).permutation(grid.reshape(-1)), dtype=np.float32)
    return Probe(
        queries=[q for q, _ in pairs],
        items=[i for _, i in pairs],
        features=features.reshape(len(pairs), N_FEATURES),
    )
