"""The in-memory catalog index: BM25, embeddings, genres, upsert/remove."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream.catalog import BM25_B, BM25_K1, CatalogIndex, tokenize
from stream.records import Item
from stream.text import item_text, user_text

T0 = 1_700_000_000.0


def item(item_id: str, title: str, *categories: str, text: str = "", **attributes: object) -> Item:
    return Item(
        item_id=item_id,
        title=title,
        categories=list(categories),
        text=text,
        attributes=attributes,  # type: ignore[arg-type]
        updated_at=T0,
    )


def unit(*values: float) -> np.ndarray:
    v = np.array(values, dtype=np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def catalog() -> CatalogIndex:
    index = CatalogIndex()
    index.upsert(item("sw", "Star Wars (1977)", "Action", "Sci-Fi", year=1977))
    index.upsert(item("esb", "The Empire Strikes Back (1980)", "Action", "Sci-Fi", year=1980))
    index.upsert(item("ts", "Toy Story (1995)", "Animation", "Comedy", year=1995))
    index.upsert(item("fargo", "Fargo (1996)", "Crime", "Drama", year=1996))
    return index


def test_tokenize_lowercases_splits_and_drops_stopwords() -> None:
    assert tokenize("The Lord of the Rings: Return-of-the King (2003)") == [
        "lord",
        "rings",
        "return",
        "king",
        "2003",
    ]
    assert tokenize("a an the of") == []


def test_item_text_format() -> None:
    it = item("sw", "Star Wars (1977)", "Action", "Sci-Fi", text="Space.", year=1977)
    assert item_text(it) == "Star Wars (1977). Action, Sci-Fi. 1977. Space.."
    assert item_text(item("x", "Plain")) == "Plain."


def test_user_text_puts_the_query_first() -> None:
    assert user_text("  star   wars ", ["A", "B"], ["Drama", "War", "Comedy", "Extra"]) == (
        "search: star wars | watched: B; A | likes: Drama, War, Comedy"
    )
    assert user_text("", [], []) == "popular items"


def test_len_contains_get(catalog: CatalogIndex) -> None:
    assert len(catalog) == 4
    assert "sw" in catalog
    assert "nope" not in catalog
    assert catalog.get("ts") is not None
    assert catalog.get("nope") is None


def test_bm25_ranks_the_title_match_first(catalog: CatalogIndex) -> None:
    scores = catalog.bm25("toy story")
    assert set(scores) == {"ts"}
    scores = catalog.bm25("star wars action")
    assert max(scores, key=scores.__getitem__) == "sw"
    assert set(scores) == {"sw", "esb"}  # "action" matches both; only sw matches "star wars"
    assert scores["sw"] > scores["esb"] > 0


def test_bm25_no_match_and_empty(catalog: CatalogIndex) -> None:
    assert catalog.bm25("zzz") == {}
    assert catalog.bm25("the of") == {}
    assert CatalogIndex().bm25("anything") == {}


def test_bm25_value_matches_the_formula() -> None:
    index = CatalogIndex()
    index.upsert(item("a", "apple apple banana"))  # tokens: apple apple banana → len 3
    index.upsert(item("b", "banana cherry"))  # len 2
    scores = index.bm25("apple")
    n_docs, df, tf, dl, avgdl = 2, 1, 2, 3, 2.5
    idf = math.log(1 + (n_docs - df + 0.5) / (df + 0.5))
    expected = idf * tf * (BM25_K1 + 1) / (tf + BM25_K1 * (1 - BM25_B + BM25_B * dl / avgdl))
    assert scores == pytest.approx({"a": expected})
    # A term in every document still scores above zero (the +1 inside the log).
    assert all(v > 0 for v in index.bm25("banana").values())


def test_remove_takes_the_item_out_of_postings_vectors_and_categories(catalog: CatalogIndex) -> None:
    catalog.set_vector("sw", unit(1, 0))
    catalog.set_vector("esb", unit(0, 1))
    assert catalog.cosine(unit(1, 0))["sw"] == pytest.approx(1.0)
    catalog.remove("sw")
    assert "sw" not in catalog
    assert len(catalog) == 3
    assert "sw" not in catalog.bm25("star wars action")
    assert catalog.bm25("star") == {}
    assert not catalog.has_vector("sw")
    assert set(catalog.cosine(unit(1, 0))) == {"esb"}
    assert catalog.in_category("Sci-Fi") == {"esb"}
    catalog.remove("sw")  # removing twice is harmless


def test_remove_keeps_bm25_statistics_consistent(catalog: CatalogIndex) -> None:
    fresh = CatalogIndex()
    for item_id in ("esb", "ts", "fargo"):
        fresh.upsert(catalog.items[item_id])
    catalog.remove("sw")
    # Same documents → same scores, so document count and total length were updated on removal.
    for query in ("empire strikes action", "fargo drama", "1995 comedy"):
        assert catalog.bm25(query) == pytest.approx(fresh.bm25(query))


def test_upsert_replaces_the_old_version(catalog: CatalogIndex) -> None:
    catalog.set_vector("ts", unit(1, 1))
    catalog.upsert(item("ts", "Toy Soldiers (1991)", "Action", year=1991))
    assert len(catalog) == 4
    assert catalog.get("ts").title == "Toy Soldiers (1991)"  # type: ignore[union-attr]
    assert "ts" not in catalog.bm25("story")
    assert "ts" in catalog.bm25("soldiers")
    assert "ts" not in catalog.in_category("Animation")
    assert "ts" in catalog.in_category("Action")
    # A new version has no embedding until one is set for it.
    assert not catalog.has_vector("ts")
    assert "ts" in catalog.missing_vectors()


def test_upsert_same_item_twice_gives_the_same_scores(catalog: CatalogIndex) -> None:
    before = catalog.bm25("star wars action")
    catalog.upsert(catalog.items["sw"])
    assert catalog.bm25("star wars action") == pytest.approx(before)


def test_in_category(catalog: CatalogIndex) -> None:
    assert catalog.in_category("Action") == {"sw", "esb"}
    assert catalog.in_category("Western") == set()


def test_cosine_on_normalised_vectors(catalog: CatalogIndex) -> None:
    assert catalog.cosine(unit(1, 0)) == {}
    catalog.set_vector("sw", unit(1, 0))
    catalog.set_vector("esb", unit(1, 1))
    catalog.set_vector("ts", unit(-1, 0))
    sims = catalog.cosine(unit(1, 0))
    assert sims == pytest.approx({"sw": 1.0, "esb": 1 / math.sqrt(2), "ts": -1.0}, abs=1e-6)
    assert sorted(catalog.missing_vectors()) == ["fargo"]
    # Changing a vector invalidates the cached matrix.
    catalog.set_vector("sw", unit(0, 1))
    assert catalog.cosine(unit(1, 0))["sw"] == pytest.approx(0.0, abs=1e-6)
    catalog.set_vector("ts", None)
    assert set(catalog.cosine(unit(1, 0))) == {"sw", "esb"}
