"""``Warmup.primed``: what ``/ready`` reports as ``ranker_primed``, which the demo and the benches wait on."""

from __future__ import annotations

from stream.catalog import CatalogIndex
from stream.records import Item
from stream.runtime import Warmup


def catalog_of(*item_ids: str) -> CatalogIndex:
    index = CatalogIndex()
    for item_id in item_ids:
        index.upsert(Item(item_id=item_id, title=f"title {item_id}", updated_at=1.7e9))
    return index


def test_primed_once_every_catalog_item_went_through_the_ranker_it_has_now() -> None:
    catalog = catalog_of("a", "b")
    warmup = Warmup(primed_items={"a"}, recoveries=1, registry_generation=3)
    assert not warmup.primed(catalog, recoveries=1, registry_generation=3)
    warmup.primed_items.add("b")
    assert warmup.primed(catalog, recoveries=1, registry_generation=3)


def test_a_registry_change_or_a_ranker_recovery_makes_it_cold_before_the_timer_clears_it() -> None:
    # The prime timer clears ``primed_items`` on its next tick (up to 5 s later); until then the
    # primed items belong to the models Triton has just unloaded.
    catalog = catalog_of("a")
    warmup = Warmup(primed_items={"a"}, recoveries=1, registry_generation=3)
    assert not warmup.primed(catalog, recoveries=1, registry_generation=4)
    assert not warmup.primed(catalog, recoveries=2, registry_generation=3)


def test_an_empty_catalog_is_not_primed() -> None:
    assert not Warmup().primed(CatalogIndex(), recoveries=0, registry_generation=0)


def test_following_a_reload_starts_over_and_following_the_same_state_keeps_the_primed_items() -> None:
    catalog = catalog_of("a")
    warmup = Warmup(primed_items={"a"}, recoveries=1, registry_generation=3)
    warmup.follow(recoveries=1, registry_generation=3)
    assert warmup.primed(catalog, recoveries=1, registry_generation=3)
    warmup.follow(recoveries=1, registry_generation=4)
    assert warmup.primed_items == set() and warmup.is_for(recoveries=1, registry_generation=4)
    assert not warmup.primed(catalog, recoveries=1, registry_generation=4)
