"""A short human-readable reason for each recommended item, from its strongest evidence."""

from __future__ import annotations

import numpy as np

from stream.candidates import Candidate
from stream.catalog import CatalogIndex
from stream.features import FALLBACK_WEIGHTS, FEATURE_NAMES

MAX_QUERY_IN_REASON = 40


def reason(
    candidate: Candidate,
    features: np.ndarray,
    query: str,
    catalog: CatalogIndex,
    top_genres: list[str],
) -> str:
    """``features`` is the candidate's row (FEATURE_NAMES order)."""
    contributions = {
        name: float(features[i]) * max(FALLBACK_WEIGHTS[name], 0.1) for i, name in enumerate(FEATURE_NAMES)
    }
    contributions.pop("cold_user")
    strongest = max(contributions, key=lambda k: (contributions[k], k))
    item = catalog.get(candidate.signals.item_id)
    query = " ".join(query.split())
    shown_query = query if len(query) <= MAX_QUERY_IN_REASON else query[: MAX_QUERY_IN_REASON - 1] + "…"
    if strongest in ("lexical", "semantic") and query and contributions[strongest] > 0:
        return f"matches '{shown_query}'"
    if strongest in ("covisit", "knn") and candidate.anchor and contributions[strongest] > 0:
        anchor = catalog.get(candidate.anchor)
        title = anchor.title if anchor is not None else f"item {candidate.anchor}"
        return f"because you watched {title}"
    genres = [g for g in (item.categories if item else []) if g in top_genres]
    if strongest == "affinity" and genres:
        return f"you like {genres[0]}"
    if strongest == "trending" and contributions[strongest] > 0:
        genre = (item.categories[0] if item and item.categories else None) if not genres else genres[0]
        return f"trending in {genre}" if genre else "trending now"
    if genres:
        return f"popular in {genres[0]}"
    return "popular with everyone"
