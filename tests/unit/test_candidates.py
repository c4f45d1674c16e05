"""The candidate stage: sources, exclusions, anchors, ordering by the fallback blend, and the cap."""

from __future__ import annotations

import numpy as np
import pytest

from stream.candidates import CandidateParams, CandidateSet, gather, top_genres
from stream.catalog import CatalogIndex
from stream.features import FEATURE_NAMES, fallback_scores, feature_matrix
from stream.itemstats import ItemStats
from stream.profile import Profile, RecentItem, recent_distinct
from stream.records import Item

T0 = 1_700_000_000.0
COL = {name: i for i, name in enumerate(FEATURE_NAMES)}


def build_catalog(n_filler: int = 0) -> CatalogIndex:
    catalog = CatalogIndex()
    specs = [
        ("sw", "Star Wars", ["Action", "Sci-Fi"]),
        ("esb", "Empire Strikes Back", ["Action", "Sci-Fi"]),
        ("ts", "Toy Story", ["Animation", "Comedy"]),
        ("fargo", "Fargo", ["Crime", "Drama"]),
        ("alien", "Alien", ["Horror", "Sci-Fi"]),
        ("heat", "Heat", ["Action", "Crime"]),
    ]
    specs += [(f"f{n:03d}", f"Filler {n}", ["Drama"]) for n in range(n_filler)]
    for item_id, title, cats in specs:
        catalog.upsert(Item(item_id=item_id, title=title, categories=cats, updated_at=T0))
    return catalog


def profile(*events: tuple[str, str], affinities: dict[str, float] | None = None) -> Profile:
    recent = tuple(RecentItem(i, T0 + n, t) for n, (i, t) in enumerate(events))
    return Profile(
        user_id="u",
        recent_items=recent,
        purchased=frozenset(i for i, t in events if t == "purchase"),
        affinities=affinities or {},
        affinity_ts=T0,
    )


def stats_lookup(table: dict[str, ItemStats]):  # type: ignore[no-untyped-def]
    return table.get


def run(
    p: Profile,
    query: str = "",
    catalog: CatalogIndex | None = None,
    stats: dict[str, ItemStats] | None = None,
    popularity: dict[str, int] | None = None,
    trending: dict[str, int] | None = None,
    query_vec: np.ndarray | None = None,
    params: CandidateParams | None = None,
) -> CandidateSet:
    return gather(
        p,
        query,
        query_vec,
        catalog if catalog is not None else build_catalog(),
        stats_lookup(stats or {}),
        popularity or {},
        trending or {},
        now=T0 + 100,
        params=params,
    )


def ids(cands: CandidateSet) -> list[str]:
    return [c.signals.item_id for c in cands.candidates]


def by_id(cands: CandidateSet, item_id: str):  # type: ignore[no-untyped-def]
    row = ids(cands).index(item_id)
    return cands.candidates[row], cands.features[row]


POPULARITY = {"sw": 50, "esb": 40, "ts": 30, "fargo": 20, "alien": 10, "heat": 5}


def test_helpers_top_genres_and_recent_distinct() -> None:
    p = profile(("a", "view"), ("b", "view"), ("a", "click"), ("c", "view"))
    assert recent_distinct(p, 10) == ["c", "a", "b"]
    assert recent_distinct(p, 2) == ["c", "a"]
    q = profile(affinities={"Drama": 2.0, "Action": 3.0, "Comedy": 2.0, "War": 0.5})
    assert top_genres(q, T0, 3) == ["Action", "Comedy", "Drama"]  # ties by name


def test_purchased_items_are_excluded_from_every_source() -> None:
    p = profile(("esb", "view"), ("sw", "purchase"))
    stats = {"esb": ItemStats("esb", total=5, cooc={"sw": 3.0, "alien": 1.0}, near={"sw": 3.0})}
    cands = run(p, query="star wars", stats=stats, popularity=POPULARITY, trending={"sw": 9, "ts": 1})
    assert "sw" not in ids(cands)
    assert "alien" in ids(cands)


def test_items_missing_from_the_catalog_are_never_candidates() -> None:
    p = profile(("esb", "view"))
    stats = {"esb": ItemStats("esb", total=5, cooc={"deleted": 4.0}, near={"deleted": 4.0})}
    cands = run(p, stats=stats, popularity={"deleted": 100, "ts": 1}, trending={"deleted": 100})
    assert "deleted" not in ids(cands)
    assert "ts" in ids(cands)


def test_query_source_and_lexical_feature() -> None:
    cands = run(profile(), query="toy story", popularity=POPULARITY)
    cand, feats = by_id(cands, "ts")
    assert "query" in cand.sources
    assert cand.signals.lexical > 0
    assert feats[COL["lexical"]] == pytest.approx(1.0)  # the only lexical match is the set's best
    _, other = by_id(cands, "sw")
    assert other[COL["lexical"]] == 0.0
    assert ids(cands)[0] == "ts"  # the match outranks more popular items


def test_semantic_source_from_the_query_vector() -> None:
    catalog = build_catalog()
    catalog.set_vector("fargo", np.array([1.0, 0.0], dtype=np.float32))
    catalog.set_vector("heat", np.array([0.0, 1.0], dtype=np.float32))
    cands = run(profile(), query="snowy crime", catalog=catalog, query_vec=np.array([0.8, 0.6], np.float32))
    fargo, f_feats = by_id(cands, "fargo")
    heat, h_feats = by_id(cands, "heat")
    assert "query" in fargo.sources and "query" in heat.sources
    assert f_feats[COL["semantic"]] == pytest.approx(0.8)
    assert h_feats[COL["semantic"]] == pytest.approx(0.6)


def test_negative_cosine_does_not_make_a_query_candidate_or_negative_feature() -> None:
    catalog = build_catalog()
    catalog.set_vector("fargo", np.array([-1.0, 0.0], dtype=np.float32))
    cands = run(
        profile(),
        query="zzz",
        catalog=catalog,
        query_vec=np.array([1.0, 0.0], np.float32),
        popularity=POPULARITY,
    )
    cand, feats = by_id(cands, "fargo")
    assert "query" not in cand.sources
    assert feats[COL["semantic"]] == 0.0


def test_covisit_anchor_is_the_recent_item() -> None:
    # History: fargo (older) then sw (newest). sw co-occurs with esb; fargo with heat.
    p = profile(("fargo", "view"), ("sw", "view"))
    stats = {
        "sw": ItemStats("sw", total=4, cooc={"esb": 2.0}, near={"esb": 2.0}),
        "fargo": ItemStats("fargo", total=4, cooc={"heat": 2.0}, near={"heat": 2.0}),
    }
    cands = run(p, stats=stats, popularity={"esb": 1, "heat": 1, "sw": 4, "fargo": 4})
    esb, esb_feats = by_id(cands, "esb")
    heat, heat_feats = by_id(cands, "heat")
    assert "behaviour" in esb.sources
    assert esb.anchor == "sw"
    assert heat.anchor == "fargo"
    # knn = weight * cooc / sqrt(total_a * total_b): sw is newest (weight 1), fargo next (0.85).
    assert esb.signals.knn == pytest.approx(2.0 / np.sqrt(4 * 1))
    assert heat.signals.knn == pytest.approx(0.85 * 2.0 / np.sqrt(4 * 1))
    assert esb.signals.covisit == pytest.approx(2.0)
    assert heat.signals.covisit == pytest.approx(0.85 * 2.0)
    assert esb_feats[COL["knn"]] == pytest.approx(1.0)
    assert heat_feats[COL["knn"]] == pytest.approx(0.85)
    assert ids(cands).index("esb") < ids(cands).index("heat")


def test_anchor_is_the_strongest_contributor_when_two_recent_items_share_a_neighbour() -> None:
    p = profile(("fargo", "view"), ("sw", "view"))
    stats = {
        "sw": ItemStats("sw", total=4, cooc={"heat": 1.0}, near={}),
        "fargo": ItemStats("fargo", total=4, cooc={"heat": 4.0}, near={"heat": 4.0}),
    }
    cands = run(p, stats=stats, popularity={"heat": 4})
    heat, _ = by_id(cands, "heat")
    # sw: 1 * (1/4 + 0) = 0.25; fargo: 0.85 * (4/4 + 4/4) = 1.7 → fargo.
    assert heat.anchor == "fargo"
    assert heat.signals.knn == pytest.approx(1.0 * 1 / 4 + 0.85 * 4 / 4)
    assert heat.signals.covisit == pytest.approx(0.85 * 4.0)


def test_cold_user_gets_trending_and_popular() -> None:
    cands = run(Profile(user_id="new"), popularity=POPULARITY, trending={"alien": 7})
    assert set(ids(cands)) == set(POPULARITY)
    alien, _ = by_id(cands, "alien")
    assert "trending" in alien.sources
    sw, _ = by_id(cands, "sw")
    assert "popular" in sw.sources
    assert (cands.features[:, COL["cold_user"]] == 1.0).all()
    assert cands.top_genres == []


def test_warm_user_is_not_marked_cold() -> None:
    cands = run(profile(("sw", "view")), popularity=POPULARITY)
    assert (cands.features[:, COL["cold_user"]] == 0.0).all()


def test_affinity_source_uses_top_genres_most_popular_members() -> None:
    p = profile(("x", "view"), affinities={"Crime": 3.0, "Comedy": 1.0})
    cands = run(p, popularity=POPULARITY, params=CandidateParams(top_genres=1, per_source=2, limit=50))
    assert cands.top_genres == ["Crime"]
    # per_source // 2 = 1 member of Crime: fargo (20) beats heat (5).
    fargo, feats = by_id(cands, "fargo")
    assert "affinity" in fargo.sources
    assert feats[COL["affinity"]] == pytest.approx(1.0)  # Crime is the only liked genre: the set's best
    heat, _ = by_id(cands, "heat")
    assert "affinity" not in heat.sources  # it came in as "popular" filler only
    # affinity signal: sum of the item's genre affinities / sqrt(number of genres).
    assert fargo.signals.affinity == pytest.approx(3.0 / np.sqrt(2), rel=1e-4)


def test_output_is_capped_and_sorted_by_the_fallback_blend() -> None:
    catalog = build_catalog(n_filler=80)
    popularity = {i: (n % 17) + 1 for n, i in enumerate(catalog.items)}
    trending = {i: n % 5 for n, i in enumerate(catalog.items)}
    params = CandidateParams(limit=25)
    cands = run(profile(("sw", "view")), query="filler drama", catalog=catalog,
                popularity=popularity, trending=trending, params=params)  # fmt: skip
    assert len(cands.candidates) == 25
    assert cands.features.shape == (25, len(FEATURE_NAMES))
    assert cands.fallback.shape == (25,)
    np.testing.assert_allclose(cands.fallback, fallback_scores(cands.features), rtol=1e-6)
    assert all(a >= b for a, b in zip(cands.fallback, cands.fallback[1:], strict=False))
    # Ties are broken by item id.
    for r in range(24):
        if cands.fallback[r] == cands.fallback[r + 1]:
            assert ids(cands)[r] < ids(cands)[r + 1]


def test_cap_keeps_the_best_not_the_first_gathered() -> None:
    # The query alone gathers 30 items, so with limit 30 and 10 no filler source runs and both runs
    # gather the same set: the capped list must then be the best-scored prefix of the uncapped one.
    catalog = build_catalog(n_filler=30)
    trending = {f"f{n:03d}": (n * 7) % 11 for n in range(30)}
    full = run(profile(("sw", "view")), query="filler", catalog=catalog, trending=trending,
               params=CandidateParams(limit=30))  # fmt: skip
    capped = run(profile(("sw", "view")), query="filler", catalog=catalog, trending=trending,
                 params=CandidateParams(limit=10))  # fmt: skip
    assert len(full.candidates) == 30
    assert ids(capped) == ids(full)[:10]
    np.testing.assert_array_equal(capped.features, full.features[:10])
    # The most trending fillers (7 * n % 11 == 10 → n = 3, 14, 25) lead; the first gathered (f000) does not.
    assert ids(capped)[:3] == ["f003", "f014", "f025"]


def test_deterministic_for_equal_inputs() -> None:
    catalog = build_catalog(n_filler=40)
    popularity = dict.fromkeys(catalog.items, 3)  # all tied: order comes from ids only
    p = profile(("sw", "view"))
    a = run(p, query="drama", catalog=catalog, popularity=popularity)
    b = run(p, query="drama", catalog=catalog, popularity=popularity)
    assert ids(a) == ids(b)
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.fallback, b.fallback)
    assert [c.sources for c in a.candidates] == [c.sources for c in b.candidates]


def every_source(params: CandidateParams | None = None) -> tuple[CandidateSet, dict[str, int]]:
    """A world where every source contributes: query (both kinds), behaviour, genres, trending."""
    catalog = build_catalog(n_filler=20)
    for n, item_id in enumerate(catalog.items):
        catalog.set_vector(item_id, np.array([np.cos(n), np.sin(n)], dtype=np.float32))
    p = profile(("sw", "view"), ("fargo", "click"), affinities={"Drama": 4.0, "Action": 1.0})
    stats = {
        "sw": ItemStats("sw", total=9, cooc={"esb": 5.0, "f001": 2.0}, near={"esb": 5.0}),
        "fargo": ItemStats("fargo", total=3, cooc={"heat": 3.0}, near={"heat": 1.0}),
    }
    popularity = {i: 1000 * (n + 1) for n, i in enumerate(catalog.items)}
    cands = run(p, query="star drama", catalog=catalog, stats=stats, popularity=popularity,
                trending={"alien": 50, "f002": 3}, query_vec=np.array([1.0, 0.0], np.float32),
                params=params)  # fmt: skip
    return cands, popularity


def test_all_features_are_in_the_unit_interval() -> None:
    cands, _ = every_source()
    assert cands.features.dtype == np.float32
    assert (cands.features >= 0).all()
    assert (cands.features <= 1.0 + 1e-6).all()
    # Every normalised column reaches 1 for its best row.
    for name in ("lexical", "covisit", "knn", "affinity", "trending"):
        assert cands.features[:, COL[name]].max() == pytest.approx(1.0), name


def test_features_are_those_of_the_signals_kept() -> None:
    # The stage builds its matrix column by column and Signals records only for the rows it keeps;
    # offline training builds the matrix from Signals (feature_matrix). Both must agree exactly.
    cands, popularity = every_source(CandidateParams(limit=100))
    assert len(cands.candidates) > 20  # every gathered item kept: the normalisation sees the same rows
    signals = [c.signals for c in cands.candidates]
    expected = feature_matrix(signals, cold_user=False, max_popularity=max(popularity.values()))
    assert cands.features.tobytes() == expected.tobytes()
    assert cands.fallback.tobytes() == fallback_scores(expected).tobytes()
    assert all(isinstance(getattr(s, f), float) for s in signals for f in FEATURE_NAMES[:7])


def test_the_pool_features_seam_sees_the_whole_pool_before_the_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    # bench/feature_ablation.py widens the matrix here; if gather stopped calling the module-level
    # function, the ablation would silently measure the served features alone.
    import stream.candidates as candidates_mod

    seen: dict[str, object] = {}
    original = candidates_mod.pool_features

    def recording(ids, raw, popularity, cold_user, max_popularity):  # type: ignore[no-untyped-def]
        seen["ids"], seen["features"] = list(ids), original(ids, raw, popularity, cold_user, max_popularity)
        return seen["features"]

    monkeypatch.setattr(candidates_mod, "pool_features", recording)
    cands, _ = every_source(CandidateParams(limit=5))
    pool = seen["ids"]
    assert isinstance(pool, list) and len(pool) > len(cands.candidates) == 5
    rows = [pool.index(c.signals.item_id) for c in cands.candidates]
    assert cands.features.tobytes() == seen["features"][rows].tobytes()  # type: ignore[index]


def test_empty_world_gives_an_empty_set() -> None:
    cands = run(Profile(user_id="u"), catalog=CatalogIndex())
    assert cands.candidates == []
    assert cands.features.shape == (0, len(FEATURE_NAMES))
    assert cands.fallback.shape == (0,)


def test_cold_start_without_statistics_fills_with_the_newest_items() -> None:
    catalog = CatalogIndex()
    for n, item_id in enumerate(["a", "b", "c", "d", "e", "f"]):
        catalog.upsert(Item(item_id=item_id, title=f"T {item_id}", updated_at=T0 + n))
    # No popularity, no trending, no query: only the newest items can answer.
    cands = run(Profile(user_id="new"), catalog=catalog, params=CandidateParams(limit=3))
    assert set(ids(cands)) == {"d", "e", "f"}
    assert all(c.sources == frozenset({"new"}) for c in cands.candidates)
    # A purchased newest item is skipped and the list is still filled to the limit.
    buyer = Profile(user_id="b", recent_items=(RecentItem("f", T0, "purchase"),), purchased=frozenset({"f"}))
    cands = run(buyer, catalog=catalog, params=CandidateParams(limit=3))
    assert set(ids(cands)) == {"c", "d", "e"}
