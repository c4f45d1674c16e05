"""The texts the ranker reads: one builder for items and one for the user side (query + behaviour).

Training, offline evaluation and the live pipeline all build their texts here, so the model sees
the same strings everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from stream.records import Item

MAX_HISTORY_TITLES = 5
MAX_GENRES = 3


def item_text(item: Item) -> str:
    """``"Star Wars (1977). Action, Adventure, Sci-Fi. 1977."`` plus any description."""
    parts = [item.title.strip()]
    if item.categories:
        parts.append(", ".join(item.categories))
    year = item.attributes.get("year")
    if year not in (None, ""):
        parts.append(str(year))
    if item.text:
        parts.append(item.text.strip())
    return ". ".join(p for p in parts if p) + "."


def user_text(query: str, recent_titles: Sequence[str], top_genres: Iterable[str]) -> str:
    """Fuses the search query with the user's behaviour; the query comes first since it is the intent."""
    parts = []
    query = " ".join(query.split())
    if query:
        parts.append(f"search: {query}")
    titles = [t for t in recent_titles if t][-MAX_HISTORY_TITLES:]
    if titles:
        parts.append("watched: " + "; ".join(reversed(titles)))
    genres = list(top_genres)[:MAX_GENRES]
    if genres:
        parts.append("likes: " + ", ".join(genres))
    return " | ".join(parts) if parts else "popular items"
