"""MovieLens-100K from the recbole wheel (fetched by deploy/bootstrap.sh, never committed).

Interactions come ordered by timestamp with a *seeded shuffle* breaking ties: about half the events
share a user and a second with another event, and ordering those by item id would plant a spurious
signal (the held-out "last" item would be the largest id of its second).
"""

from __future__ import annotations

import csv
import os
import random
from dataclasses import dataclass
from pathlib import Path

from stream.records import Item

DEFAULT_DIR = Path.home() / ".cache" / "streamrec" / "data" / "ml-100k"


@dataclass(frozen=True, slots=True)
class Interaction:
    user_id: str
    item_id: str
    rating: float
    ts: float


def data_dir(path: Path | None = None) -> Path:
    found = path or Path(os.environ.get("STREAMREC_DATA_DIR", DEFAULT_DIR))
    if not (found / "ml-100k.inter").exists():
        raise FileNotFoundError(f"MovieLens-100K not found in {found}: run deploy/bootstrap.sh")
    return found


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", errors="replace", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [h.split(":", 1)[0] for h in next(reader)]
        return [dict(zip(header, row, strict=False)) for row in reader]


def load_items(path: Path | None = None) -> dict[str, Item]:
    items = {}
    for row in _rows(data_dir(path) / "ml-100k.item"):
        year = row.get("release_year", "").strip()
        title = row["movie_title"].strip() or f"item {row['item_id']}"
        if year.isdigit() and f"({year})" not in title:
            title = f"{title} ({year})"
        items[row["item_id"]] = Item(
            item_id=row["item_id"],
            title=title,
            categories=[g for g in row.get("class", "").split() if g and g != "unknown"],
            attributes={"year": int(year)} if year.isdigit() else {},
            updated_at=883_000_000.0,
        )
    return items


def load_interactions(path: Path | None = None, seed: int = 0) -> list[Interaction]:
    """All ratings in timestamp order; ties broken by a seeded shuffle (documented above)."""
    rows = [
        Interaction(r["user_id"], r["item_id"], float(r["rating"]), float(r["timestamp"]))
        for r in _rows(data_dir(path) / "ml-100k.inter")
    ]
    rng = random.Random(seed)
    keys = [rng.random() for _ in rows]
    order = sorted(range(len(rows)), key=lambda i: (rows[i].ts, keys[i]))
    return [rows[i] for i in order]
