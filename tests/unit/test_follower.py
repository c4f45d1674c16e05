"""The item view's statistics cache: parsed once per changelog record, never stale."""

from __future__ import annotations

from stream.catalog import CatalogIndex
from stream.follower import ItemView
from stream.itemstats import ItemStats
from stream.recommend import Snapshot


def stats_record(item_id: str, total: int) -> dict[str, object]:
    return ItemStats(item_id, total=total, cooc={"b": float(total)}).to_dict()


def test_item_stats_are_parsed_once_per_record_and_follow_every_change() -> None:
    view = ItemView(CatalogIndex(), Snapshot())
    assert view.item_stats("a") is None
    view.apply("item-stats", "a", stats_record("a", 3))
    first = view.item_stats("a")
    assert first == ItemStats("a", total=3, cooc={"b": 3.0})
    assert view.item_stats("a") is first  # the second read reuses the parse
    view.apply("item-stats", "a", stats_record("a", 4))
    assert view.item_stats("a") == ItemStats("a", total=4, cooc={"b": 4.0})
    assert view.snapshot.popularity["a"] == 4
    view.apply("item-stats", "a", None)  # a tombstone
    assert view.item_stats("a") is None
    assert "a" not in view.snapshot.popularity


def test_a_record_replaced_directly_in_the_view_is_not_served_from_the_cache() -> None:
    view = ItemView(CatalogIndex(), Snapshot())
    view.apply("item-stats", "a", stats_record("a", 3))
    assert view.item_stats("a") is not None
    view.stats["a"] = stats_record("a", 9)  # e.g. restored wholesale
    assert view.item_stats("a") == ItemStats("a", total=9, cooc={"b": 9.0})
    view.stats.clear()
    assert view.item_stats("a") is None
