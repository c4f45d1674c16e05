"""``Recommender`` end to end with a fake ranker client: one packed call, scores, and the fallback."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from stream.catalog import CatalogIndex
from stream.features import N_FEATURES
from stream.itemstats import ItemStats
from stream.metrics import Metrics
from stream.profile import Profile, RecentItem
from stream.recommend import FALLBACK_MODEL, Recommender, Snapshot
from stream.records import Item, Query
from stream.settings import Settings, load_settings
from stream.text import item_text
from workers.ranker_client import RankerUnavailable, RankRequest, RankResult

T0 = 1_700_000_000.0
GENRES = ["Action", "Comedy", "Drama", "Horror", "Sci-Fi"]


class FakeRanker:
    """Duck-types ``RankerClient``: records calls; ``score`` maps a request to its scores."""

    def __init__(
        self,
        score: Any = None,
        version: str = "42",
        embed_error: str | None = None,
        rank_error: str | None = None,
        dim: int = 4,
    ) -> None:
        self.score = score
        self.version = version
        self.embed_error = embed_error
        self.rank_error = rank_error
        self.dim = dim
        self.recoveries = 0
        self.embed_calls: list[tuple[list[str], float]] = []
        self.rank_calls: list[tuple[list[RankRequest], float]] = []
        self.rank_versions: list[str] = []

    async def embed(self, texts: Sequence[str], deadline: float) -> np.ndarray:
        self.embed_calls.append((list(texts), deadline))
        if self.embed_error:
            raise RankerUnavailable(self.embed_error)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        out[:, 0] = 1.0
        return out

    async def rank(self, requests: Sequence[RankRequest], deadline: float, version: str = "") -> RankResult:
        self.rank_calls.append((list(requests), deadline))
        self.rank_versions.append(version)
        if self.rank_error:
            raise RankerUnavailable(self.rank_error)
        return RankResult([self.score(r) for r in requests], version or self.version)


def build_catalog() -> CatalogIndex:
    catalog = CatalogIndex()
    for n in range(30):
        genre = GENRES[n % len(GENRES)]
        catalog.upsert(
            Item(item_id=f"i{n:02d}", title=f"Movie {n} {genre}", categories=[genre], updated_at=T0)
        )
    return catalog


def make(client: FakeRanker, **overrides: Any) -> tuple[Recommender, Metrics, CatalogIndex]:
    settings: Settings = load_settings(_env_file=None, candidates_max=20, **overrides)
    catalog = build_catalog()
    popularity = {f"i{n:02d}": 100 - n for n in range(30)}  # i00 most popular
    snapshot = Snapshot(popularity=popularity, trending={"i05": 3, "i07": 9})
    stats = {"i10": ItemStats("i10", total=10, cooc={"i11": 4.0, "i12": 2.0}, near={"i11": 4.0})}
    metrics = Metrics.create()
    rec = Recommender(settings, catalog, stats.get, snapshot, client, metrics)  # type: ignore[arg-type]
    return rec, metrics, catalog


def buyer() -> Profile:
    """Purchased the two most popular items, recently viewed i10."""
    return Profile(
        user_id="u-1",
        recent_items=(
            RecentItem("i00", T0, "purchase"),
            RecentItem("i01", T0 + 1, "purchase"),
            RecentItem("i10", T0 + 2, "view"),
        ),
        purchased=frozenset({"i00", "i01"}),
        affinities={"Action": 2.0},
        affinity_ts=T0,
    )


def query(request_id: str = "r-1", text: str = "", k: int = 5, ts: float | None = None) -> Query:
    return Query(request_id=request_id, user_id="u-1", text=text, ts=ts or time.time(), k=k)


async def test_ranker_unavailable_falls_back_to_the_blend() -> None:
    client = FakeRanker(rank_error="breaker_open", embed_error="breaker_open")
    rec, metrics, _ = make(client)
    [out] = await rec.recommend([(query(k=7), buyer())])
    assert out.fallback is True
    assert out.model == FALLBACK_MODEL
    assert out.model.name == "fallback-blend"
    assert len(out.items) == 7
    ids = [i.item_id for i in out.items]
    assert not {"i00", "i01"} & set(ids)
    assert len(set(ids)) == 7
    assert [i.rank for i in out.items] == list(range(1, 8))
    scores = [i.score for i in out.items]
    assert scores == sorted(scores, reverse=True)
    # The behaviour neighbour of the recent item leads the blend.
    assert ids[0] == "i11"
    assert out.items[0].reason == "because you watched Movie 10 Action"
    assert metrics.registry.get_sample_value("streamrec_fallbacks_total", {"cause": "breaker_open"}) == 1.0


async def test_ranker_scores_decide_the_order_and_the_model_version() -> None:
    # Score each row by its position reversed: the blend's last candidate becomes first.
    client = FakeRanker(score=lambda r: np.arange(len(r.item_texts), dtype=np.float32), version="42")
    rec, metrics, catalog = make(client)
    [out] = await rec.recommend([(query(k=5), buyer())])
    assert out.fallback is False
    assert out.model.name == rec.settings.ranker_model
    assert out.model.version == "42"
    [(requests, _)] = client.rank_calls
    [request] = requests
    n = len(request.item_texts)
    # Highest score = last row, then the one before, ...
    expected_texts = [request.item_texts[r] for r in range(n - 1, n - 6, -1)]
    assert [item_text(catalog.items[i.item_id]) for i in out.items] == expected_texts
    assert [i.score for i in out.items] == [float(n - 1 - j) for j in range(5)]
    assert not {"i00", "i01"} & {i.item_id for i in out.items}
    assert (
        metrics.registry.get_sample_value("streamrec_model_version", {"model": rec.settings.ranker_model})
        == 42
    )
    assert metrics.registry.get_sample_value("streamrec_fallbacks_total", {"cause": "breaker_open"}) is None


async def test_rank_request_carries_user_text_item_texts_and_features() -> None:
    client = FakeRanker(score=lambda r: np.zeros(len(r.item_texts), np.float32))
    rec, _, catalog = make(client)
    await rec.recommend([(query(text="  action   movie ", k=3), buyer())])
    [(requests, _)] = client.rank_calls
    [request] = requests
    assert request.query_text.startswith("search: action movie | watched: ")
    assert "Movie 10 Action" in request.query_text
    assert request.query_text.endswith("likes: Action")
    assert request.features.shape == (len(request.item_texts), N_FEATURES)
    assert 0 < len(request.item_texts) <= rec.settings.candidates_max
    valid_texts = {item_text(item) for item in catalog.items.values()}
    assert set(request.item_texts) <= valid_texts


async def test_one_embed_and_one_rank_call_per_batch() -> None:
    client = FakeRanker(score=lambda r: np.linspace(1, 0, len(r.item_texts), dtype=np.float32))
    rec, _, _ = make(client)
    batch = [
        (query("r-1", text="drama", k=2), buyer()),
        (query("r-2", text="comedy", k=3), Profile(user_id="u-2")),
        (query("r-3", text="drama", k=4), Profile(user_id="u-3")),
        (query("r-4", text="", k=1), Profile(user_id="u-4")),
    ]
    out = await rec.recommend(batch)
    assert [r.request_id for r in out] == ["r-1", "r-2", "r-3", "r-4"]
    assert [len(r.items) for r in out] == [2, 3, 4, 1]
    assert len(client.embed_calls) == 1
    assert client.embed_calls[0][0] == ["comedy", "drama"]  # unique, sorted, non-empty
    assert len(client.rank_calls) == 1
    assert len(client.rank_calls[0][0]) == 4
    # Retrieval gets at most half the budget: its deadline comes before the ranking deadline.
    assert client.embed_calls[0][1] < client.rank_calls[0][1]
    assert client.rank_calls[0][1] <= time.monotonic() + rec.settings.ranker_deadline_ms / 1000.0


async def test_query_embedding_feeds_semantic_candidates() -> None:
    client = FakeRanker(score=lambda r: np.zeros(len(r.item_texts), np.float32))
    rec, _, catalog = make(client)
    vector = np.zeros(4, np.float32)
    vector[0] = 1.0
    catalog.set_vector("i29", vector)  # the least popular item, matched only by the embedding
    await rec.recommend([(query(text="zzzz", k=3), Profile(user_id="u-9"))])
    [(requests, _)] = client.rank_calls
    assert item_text(catalog.items["i29"]) in requests[0].item_texts


async def test_embedding_failure_alone_is_not_a_fallback() -> None:
    client = FakeRanker(score=lambda r: np.zeros(len(r.item_texts), np.float32), embed_error="deadline")
    rec, _, _ = make(client)
    [out] = await rec.recommend([(query(text="drama", k=3), buyer())])
    assert out.fallback is False
    assert len(out.items) == 3


async def test_no_requests_no_calls() -> None:
    client = FakeRanker()
    rec, _, _ = make(client)
    assert await rec.recommend([]) == []
    assert client.embed_calls == client.rank_calls == []


async def test_trigger_and_latency() -> None:
    client = FakeRanker(rank_error="deadline")
    rec, _, _ = make(client)
    sent = time.time() - 0.5
    [out] = await rec.recommend([(query(ts=sent), buyer())], trigger="event")
    assert out.trigger == "event"
    assert 500.0 <= out.latency_ms < 60_000
    assert out.produced_at >= sent + 0.5
    assert out.user_id == "u-1"
    [out] = await rec.recommend([(query(ts=sent), buyer())])
    assert out.trigger == "query"


async def test_fallback_is_deterministic() -> None:
    client = FakeRanker(rank_error="connection")
    rec, _, _ = make(client)
    q = query(k=10)
    [a] = await rec.recommend([(q, buyer())])
    [b] = await rec.recommend([(q, buyer())])
    assert [(i.item_id, i.score, i.reason) for i in a.items] == [
        (i.item_id, i.score, i.reason) for i in b.items
    ]


@pytest.mark.parametrize("k", [1, 20])
async def test_k_is_respected_up_to_the_candidate_count(k: int) -> None:
    client = FakeRanker(rank_error="triton_error")
    rec, _, _ = make(client)
    [out] = await rec.recommend([(query(k=k), buyer())])
    assert len(out.items) == min(k, rec.settings.candidates_max)
