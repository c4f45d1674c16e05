"""The agents through ``agent.test_context()``: raw bytes in, tables and (patched) output topics out.

``put()`` on a sink-less agent returns once the stream has *received* the value, before the
``take_events`` batch it lands in is processed, so each test waits for the effect it expects
(``wait_for``) instead of assuming it happened when ``put()`` returned. Tables are module-level:
every test uses fresh user and item ids.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast
from unittest import mock

import numpy as np
import orjson
import pytest
from faust.types import TP
from faust.types.tuples import ConsumerMessage

import stream.app
from stream import runtime
from stream.agents import erasure, events, items, maintenance, queries, topics
from stream.agents import feedback as feedback_agent
from stream.app import settings
from stream.commits import InFlightSafeConsumer
from stream.itemstats import BUCKET_S, ItemStats, decode_message
from stream.profile import Profile
from stream.records import (
    DeadLetter,
    ErasureConfirmation,
    Impression,
    Item,
    Recommendation,
    TrainingExample,
    parse,
)
from stream.tables import feedback, item_stats, item_vectors, open_impressions, profiles
from stream.tables import items as items_table
from stream.topics import key_partition
from workers.ranker_client import RankerUnavailable, RankRequest, RankResult

TS = time.time() - 5.0  # event time: "now", inside the accepted timestamp range


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def wait_for(condition: Callable[[], Any], within: float = 3.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


async def settle(seconds: float = 0.15) -> None:
    """Give the agent time to process whatever it has (used only to check that nothing happens)."""
    await asyncio.sleep(seconds)


@dataclass
class Outputs:
    """What agents sent, per output topic, as (key, value) pairs."""

    sent: dict[str, list[tuple[bytes | None, bytes]]] = field(default_factory=dict)
    partitions: dict[str, list[int | None]] = field(default_factory=dict)  # the explicit ones, in order

    def __getitem__(self, name: str) -> list[tuple[bytes | None, bytes]]:
        return self.sent.setdefault(name, [])

    def dead_letters(self) -> list[DeadLetter]:
        return [parse(DeadLetter, v) for _, v in self["dead-letters"]]

    def recommendations(self) -> list[Recommendation]:
        return [parse(Recommendation, v) for _, v in self["recommendations"]]


OUTPUT_TOPICS = {
    "dead-letters": topics.dead_letters_topic,
    "recommendations": topics.recommendations_topic,
    "item-activity": topics.item_activity_topic,
    "queries": topics.queries_topic,
    "user-erasure-confirmations": topics.erasure_confirmations_topic,
    "impressions": topics.impressions_topic,
    "training-examples": topics.training_examples_topic,
}


@pytest.fixture
def outputs() -> Iterator[Outputs]:
    out = Outputs()

    def recorder(name: str) -> Callable[..., None]:
        def send_soon(
            *, key: bytes | None = None, value: bytes, partition: int | None = None, **_: Any
        ) -> None:
            out[name].append((key, value))
            out.partitions.setdefault(name, []).append(partition)

        return send_soon

    with contextlib.ExitStack() as stack:
        for name, topic in OUTPUT_TOPICS.items():
            stack.enter_context(mock.patch.object(topic, "send_soon", side_effect=recorder(name)))
            # Nothing may reach the (unstarted) producer any other way.
            stack.enter_context(mock.patch.object(topic, "send", side_effect=AssertionError(f"{name}.send")))
        yield out


def event_bytes(event_id: str, user_id: str, item_id: str, type_: str = "view", ts: float = TS) -> bytes:
    return orjson.dumps(
        {"event_id": event_id, "user_id": user_id, "item_id": item_id, "type": type_, "ts": ts}
    )


def stored_profile(user_id: str) -> Profile | None:
    raw = profiles.get(user_id)
    return Profile.from_dict(raw) if raw else None


def activities_sent(outputs: Outputs) -> dict[str, list[dict[str, Any]]]:
    by_item: dict[str, list[dict[str, Any]]] = {}
    partitions = outputs.partitions.get("item-activity", [])
    for (key, value), partition in zip(outputs["item-activity"], partitions, strict=True):
        for item_id, rows in decode_message(key, orjson.loads(value)).items():
            # Each item's rows go to the partition its key hashes to: one writer per item.
            assert partition == key_partition(item_id.encode(), topics.item_activity_topic.partitions)
            by_item.setdefault(item_id, []).extend(
                {"activity_id": a, "ts": ts, "count": c, "co_items": [list(p) for p in co]}
                for a, ts, c, co in rows
            )
    return by_item


# --- events ---------------------------------------------------------------------------------------------


async def test_events_update_the_profile_and_emit_item_activity(outputs: Outputs) -> None:
    user, a, b = fresh("u"), fresh("a"), fresh("b")
    runtime.catalog.upsert(Item(item_id=a, title="A", categories=["Drama"], updated_at=TS))
    rows_sent = runtime.metrics.item_activity_rows.labels(stage="sent")
    sent_before = rows_sent._value.get()
    try:
        async with events.ingest_events.test_context() as agent:
            await agent.put(value=event_bytes("e1-" + user, user, a, "view", TS), key=user.encode())
            await agent.put(value=event_bytes("e2-" + user, user, b, "purchase", TS + 1), key=user.encode())
            profile = await wait_for(lambda: (p := stored_profile(user)) and p.counts.get("purchase") and p)
    finally:
        runtime.catalog.remove(a)
    assert profile.counts == {"view": 1, "purchase": 1}
    assert [(r.item_id, r.type) for r in profile.recent_items] == [(a, "view"), (b, "purchase")]
    assert profile.purchased == frozenset({b})
    assert profile.affinities == pytest.approx({"Drama": 1.0})  # a is in the catalog; b is not
    sent = activities_sent(outputs)
    # e1: a counted (no history). e2: b counted and paired with a at distance 1, mirrored onto a.
    assert [(x["activity_id"], x["count"], x["co_items"]) for x in sent[a]] == [
        ("e1-" + user, True, []),
        ("e2-" + user, False, [[b, 1]]),
    ]
    assert [(x["activity_id"], x["count"], x["co_items"]) for x in sent[b]] == [
        ("e2-" + user, True, [[a, 1]])
    ]
    assert rows_sent._value.get() - sent_before == 3
    assert outputs["dead-letters"] == []


async def test_malformed_event_is_dead_lettered_and_the_next_one_processed(outputs: Outputs) -> None:
    user, item = fresh("u"), fresh("i")
    bad = b'{"event_id": "x", "user_id": "' + user.encode() + b'", "type": "view"'  # truncated JSON
    async with events.ingest_events.test_context() as agent:
        await agent.put(value=bad, key=user.encode())
        await agent.put(value=event_bytes("ok-" + user, user, item), key=user.encode())
        profile = await wait_for(lambda: stored_profile(user))
    assert profile.counts == {"view": 1}
    [letter] = outputs.dead_letters()
    assert letter.topic == settings.topic("events")
    assert letter.key == user
    assert letter.reason.startswith("not valid JSON/UTF-8")
    assert base64.b64decode(letter.raw) == bad
    assert letter.received_at == pytest.approx(time.time(), abs=60)
    [(key, _)] = outputs["dead-letters"]
    assert key == user.encode()  # the dead letter keeps the original key


@pytest.mark.parametrize(
    ("value", "reason_start"),
    [
        (b"\xff\xfe", "not valid JSON/UTF-8"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"event_id": "e"}', "user_id: Field required"),
        (orjson.dumps({"event_id": "e", "user_id": "U", "item_id": "i", "type": "like", "ts": TS}), "type:"),
    ],
)
async def test_each_kind_of_bad_event_is_dead_lettered(
    outputs: Outputs, value: bytes, reason_start: str
) -> None:
    async with events.ingest_events.test_context() as agent:
        await agent.put(value=value, key=b"U")
        letters = await wait_for(outputs.dead_letters)
    assert len(letters) == 1
    assert letters[0].reason.startswith(reason_start), letters[0].reason
    assert base64.b64decode(letters[0].raw) == value


async def test_key_mismatch_is_dead_lettered_and_no_profile_written(outputs: Outputs) -> None:
    user, other = fresh("u"), fresh("v")
    async with events.ingest_events.test_context() as agent:
        await agent.put(value=event_bytes("e-" + user, user, "i"), key=other.encode())
        [letter] = await wait_for(outputs.dead_letters)
    assert "does not match user_id" in letter.reason
    assert stored_profile(user) is None
    assert stored_profile(other) is None
    assert outputs["item-activity"] == []


async def test_replayed_event_is_applied_once(outputs: Outputs) -> None:
    user, item = fresh("u"), fresh("i")
    raw = event_bytes("dup-" + user, user, item, "click")
    async with events.ingest_events.test_context() as agent:
        await agent.put(value=raw, key=user.encode())
        await wait_for(lambda: stored_profile(user))
        await agent.put(value=raw, key=user.encode())
        await agent.put(value=raw, key=user.encode())
        await agent.put(value=event_bytes("next-" + user, user, item, "view"), key=user.encode())
        profile = await wait_for(lambda: (p := stored_profile(user)) and p.counts.get("view") and p)
    assert profile.counts == {"click": 1, "view": 1}
    assert len(activities_sent(outputs)[item]) == 2  # one per distinct event


async def test_redelivery_after_a_restart_is_skipped_exactly(outputs: Outputs) -> None:
    # Each test_context numbers its messages from offset 0, like a consumer restarting from the last
    # committed offset: the second pass redelivers offsets the profile has already applied.
    user, a, b = fresh("u"), fresh("a"), fresh("b")
    first = [event_bytes(f"e{n}-{user}", user, item, "click", TS + n) for n, item in enumerate([a, b, a])]
    async with events.ingest_events.test_context() as agent:
        for raw in first:
            await agent.put(value=raw, key=user.encode())
        applied = await wait_for(lambda: (p := stored_profile(user)) and p.counts.get("click") == 3 and p)
    assert applied.events_offset == 2
    sent_before = len(outputs["item-activity"])
    async with events.ingest_events.test_context() as agent:
        for raw in first:
            await agent.put(value=raw, key=user.encode())
        # A new event after the replayed ones (offset 3) proves the replays went through the agent.
        await agent.put(value=event_bytes(f"e3-{user}", user, b, "view", TS + 3), key=user.encode())
        after = await wait_for(lambda: (p := stored_profile(user)) and p.counts.get("view") and p)
    assert after.counts == {"click": 3, "view": 1}
    assert after.events_offset == 3
    assert after.recent_items[:3] == applied.recent_items
    # Downstream, only the new event produced activities: no item is counted twice.
    new_ids = {
        row[0]
        for k, v in outputs["item-activity"][sent_before:]
        for rows in decode_message(k, orjson.loads(v)).values()
        for row in rows
    }
    assert new_ids == {f"e3-{user}"}


async def test_an_event_after_one_passed_over_is_held_and_applied_in_order(outputs: Outputs) -> None:
    # Faust handed offset 100 of this partition to the stream and the stream skipped it (as around
    # a recovery): 101 must wait, unacked, until 100 is fetched again, or 100 would be applied after
    # it and the profile's offset check would skip it.
    user, a, b = fresh("u"), fresh("a"), fresh("b")
    consumer = cast(InFlightSafeConsumer, stream.app.app.consumer)
    tp = TP(settings.topic("events"), 7)
    skipped = ConsumerMessage(tp.topic, tp.partition, 100, 0.0, 0, None, b"k", b"v", None)
    consumer._delivered[tp].add(skipped)
    held_before = runtime.metrics.held_events._value.get()
    try:
        async with events.ingest_events.test_context() as agent:
            agent.sent_offset = 101
            late = await agent.put(
                value=event_bytes(f"b-{user}", user, b, "click", TS + 1), key=user.encode(), partition=7
            )
            await wait_for(lambda: runtime.metrics.held_events._value.get() == held_before + 1)
            await settle()
            assert stored_profile(user) is None
            assert not late.message.acked  # a commit stops below it
            agent.sent_offset = 100  # the seek back: 100 and 101 come again
            for item, n in ((a, 0), (b, 1)):
                await agent.put(
                    value=event_bytes(f"{item[0]}-{user}", user, item, "click", TS + n),
                    key=user.encode(),
                    partition=7,
                )
            profile = await wait_for(lambda: (p := stored_profile(user)) and p.counts.get("click") == 2 and p)
    finally:
        consumer._delivered.pop(tp, None)
        consumer._frontier.pop(tp, None)
    assert [r.item_id for r in profile.recent_items] == [a, b]
    assert profile.events_offset == 101


async def test_refresh_on_click_is_debounced(outputs: Outputs) -> None:
    user = fresh("u")
    patched = settings.model_copy(update={"refresh_on_event": True, "refresh_debounce_s": 30.0})
    with mock.patch.object(events, "settings", patched):
        async with events.ingest_events.test_context() as agent:
            await agent.put(value=event_bytes("c1-" + user, user, "i1", "click", TS), key=user.encode())
            await agent.put(value=event_bytes("c2-" + user, user, "i2", "click", TS + 10), key=user.encode())
            await agent.put(value=event_bytes("v3-" + user, user, "i3", "view", TS + 40), key=user.encode())
            await agent.put(
                value=event_bytes("p4-" + user, user, "i4", "purchase", TS + 41), key=user.encode()
            )
            await wait_for(lambda: (p := stored_profile(user)) and p.counts.get("purchase"))
    requests = [orjson.loads(v) for k, v in outputs["queries"] if k == user.encode()]
    # c1 asks; c2 is within 30 s of it; the view never asks; p4 is 41 s after c1.
    assert [r["request_id"] for r in requests] == [f"refresh-c1-{user}", f"refresh-p4-{user}"]
    assert all(r["user_id"] == user and r["text"] == "" for r in requests)


async def test_no_refresh_requests_by_default(outputs: Outputs) -> None:
    assert settings.refresh_on_event is False
    user = fresh("u")
    async with events.ingest_events.test_context() as agent:
        await agent.put(value=event_bytes("c-" + user, user, "i1", "click"), key=user.encode())
        await wait_for(lambda: stored_profile(user))
    assert outputs["queries"] == []


# --- queries --------------------------------------------------------------------------------------------


class FakeRanker:
    def __init__(self, error: BaseException | None = None, version: str = "9") -> None:
        self.error = error
        self.version = version
        self.rank_calls = 0
        self.recoveries = 0

    async def embed(self, texts: Any, deadline: float) -> np.ndarray:
        raise RankerUnavailable("breaker_open")

    async def rank(self, requests: list[RankRequest], deadline: float, version: str = "") -> RankResult:
        self.rank_calls += 1
        if self.error is not None:
            raise self.error
        # Reverse of the fallback order, so the output shows whose order was used.
        return RankResult([np.arange(len(r.item_texts), dtype=np.float32) for r in requests], self.version)


@pytest.fixture
def world() -> Iterator[list[str]]:
    """Ten items in the shared catalog index and snapshot; removed again afterwards."""
    ids = [fresh(f"m{n}") for n in range(10)]
    saved = (runtime.snapshot.popularity, runtime.snapshot.trending)
    for n, item_id in enumerate(ids):
        runtime.catalog.upsert(Item(item_id=item_id, title=f"Movie {n}", categories=["Drama"], updated_at=TS))
    runtime.snapshot.popularity = {item_id: 100 - n for n, item_id in enumerate(ids)}
    runtime.snapshot.trending = {}
    try:
        yield ids
    finally:
        for item_id in ids:
            runtime.catalog.remove(item_id)
        runtime.snapshot.popularity, runtime.snapshot.trending = saved


def query_bytes(request_id: str, user_id: str, text: str = "", k: int = 3, ts: float = TS) -> bytes:
    return orjson.dumps({"request_id": request_id, "user_id": user_id, "text": text, "ts": ts, "k": k})


async def test_each_valid_query_gets_exactly_one_fallback_recommendation(
    outputs: Outputs, world: list[str]
) -> None:
    users = [fresh("u") for _ in range(3)]
    fake = FakeRanker(error=RankerUnavailable("breaker_open"))
    with mock.patch.object(runtime.recommender, "client", fake):
        async with queries.answer_queries.test_context() as agent:
            for n, user in enumerate(users):
                await agent.put(value=query_bytes(f"r{n}-{user}", user, k=3), key=user.encode())
            recs = await wait_for(lambda: len(outputs["recommendations"]) >= 3 and outputs.recommendations())
            await settle()
    recs = outputs.recommendations()
    assert sorted(r.request_id for r in recs) == sorted(f"r{n}-{u}" for n, u in enumerate(users))
    for rec in recs:
        assert rec.fallback is True
        assert rec.model.name == "fallback-blend"
        assert [i.item_id for i in rec.items] == world[:3]  # most popular first
        assert [i.rank for i in rec.items] == [1, 2, 3]
    assert [k for k, _ in outputs["recommendations"]] == [r.user_id.encode() for r in recs]
    assert b"__faust" not in outputs["recommendations"][0][1]


async def test_a_query_handed_over_again_is_answered_once(outputs: Outputs, world: list[str]) -> None:
    # Faust's recovery can process a partition, then seek it back to the committed offset: the same
    # queries arrive again in the same process (stream.answered).
    user, other = fresh("u"), fresh("u")
    repeated = runtime.metrics.repeated_queries
    before = repeated._value.get()
    with mock.patch.object(runtime.recommender, "client", FakeRanker(error=RankerUnavailable("deadline"))):
        async with queries.answer_queries.test_context() as agent:
            await agent.put(value=query_bytes("r-" + user, user, text="noir"), key=user.encode())
            await wait_for(outputs.recommendations)
            for _ in range(2):
                await agent.put(value=query_bytes("r-" + user, user, text="noir"), key=user.encode())
            await agent.put(value=query_bytes("r-" + other, other), key=other.encode())
            await wait_for(lambda: len(outputs["recommendations"]) >= 2)
            await settle()
    assert sorted(r.request_id for r in outputs.recommendations()) == sorted(["r-" + user, "r-" + other])
    assert repeated._value.get() == before + 2


async def test_ranker_scores_order_the_recommendation(outputs: Outputs, world: list[str]) -> None:
    user = fresh("u")
    fake = FakeRanker(version="9")
    with mock.patch.object(runtime.recommender, "client", fake):
        async with queries.answer_queries.test_context() as agent:
            await agent.put(value=query_bytes("r-" + user, user, k=3), key=user.encode())
            [rec] = await wait_for(outputs.recommendations)
    assert rec.fallback is False
    assert rec.model.version == "9"
    assert rec.model.name == settings.ranker_model
    # 10 candidates in blend order (world order); the fake scores the last one highest.
    assert [i.item_id for i in rec.items] == world[::-1][:3]


async def test_query_text_is_recorded_in_the_profile(outputs: Outputs, world: list[str]) -> None:
    user = fresh("u")
    with mock.patch.object(runtime.recommender, "client", FakeRanker(error=RankerUnavailable("deadline"))):
        async with queries.answer_queries.test_context() as agent:
            await agent.put(value=query_bytes("r-" + user, user, text="  movie   5 "), key=user.encode())
            [rec] = await wait_for(outputs.recommendations)
    profile = stored_profile(user)
    assert profile is not None
    assert [q for q, _ in profile.recent_queries] == ["movie 5"]
    assert rec.items[0].item_id == world[5]  # the title match wins the blend
    assert rec.items[0].reason == "matches 'movie 5'"  # shown as stored: whitespace normalised


async def test_query_without_text_writes_no_profile(outputs: Outputs, world: list[str]) -> None:
    user = fresh("u")
    with mock.patch.object(runtime.recommender, "client", FakeRanker(error=RankerUnavailable("deadline"))):
        async with queries.answer_queries.test_context() as agent:
            await agent.put(value=query_bytes("r-" + user, user), key=user.encode())
            await wait_for(outputs.recommendations)
    assert stored_profile(user) is None


async def test_bad_query_is_dead_lettered_and_the_good_one_answered(
    outputs: Outputs, world: list[str]
) -> None:
    user = fresh("u")
    with mock.patch.object(runtime.recommender, "client", FakeRanker(error=RankerUnavailable("deadline"))):
        async with queries.answer_queries.test_context() as agent:
            await agent.put(value=query_bytes("bad-" + user, user, k=0), key=user.encode())
            await agent.put(value=query_bytes("good-" + user, user), key=user.encode())
            [rec] = await wait_for(outputs.recommendations)
            await settle()
    assert rec.request_id == "good-" + user
    [letter] = outputs.dead_letters()
    assert letter.topic == settings.topic("queries")
    assert letter.reason.startswith("k:")
    assert len(outputs["recommendations"]) == 1


async def test_refresh_request_is_marked_as_event_triggered(outputs: Outputs, world: list[str]) -> None:
    user = fresh("u")
    with mock.patch.object(runtime.recommender, "client", FakeRanker(error=RankerUnavailable("deadline"))):
        async with queries.answer_queries.test_context() as agent:
            await agent.put(value=query_bytes("refresh-e1-" + user, user), key=user.encode())
            [rec] = await wait_for(outputs.recommendations)
    assert rec.trigger == "event"


async def test_internal_error_dead_letters_the_batch_and_the_agent_survives(
    outputs: Outputs, world: list[str]
) -> None:
    user = fresh("u")
    fake = FakeRanker(error=RuntimeError("boom"))
    with mock.patch.object(runtime.recommender, "client", fake):
        async with queries.answer_queries.test_context() as agent:
            await agent.put(value=query_bytes("r1-" + user, user), key=user.encode())
            [letter] = await wait_for(outputs.dead_letters)
            assert letter.reason.startswith("internal error while recommending: RuntimeError('boom')")
            assert base64.b64decode(letter.raw) == query_bytes("r1-" + user, user)
            fake.error = RankerUnavailable("deadline")
            await agent.put(value=query_bytes("r2-" + user, user), key=user.encode())
            [rec] = await wait_for(outputs.recommendations)
    assert rec.request_id == "r2-" + user
    assert outputs["recommendations"] and len(outputs.dead_letters()) == 1


# --- erasure --------------------------------------------------------------------------------------------


async def test_erasure_removes_the_profile_and_confirms(outputs: Outputs) -> None:
    user, keep = fresh("u"), fresh("k")
    profiles.data[user] = Profile(user_id=user).to_dict()
    profiles.data[keep] = Profile(user_id=keep).to_dict()
    async with erasure.erase_users.test_context() as agent:
        request = orjson.dumps({"user_id": user, "request_id": "del-1", "ts": TS})
        await agent.put(value=request, key=user.encode())
        [(key, value)] = await wait_for(lambda: outputs["user-erasure-confirmations"])
    assert profiles.get(user) is None
    assert stored_profile(keep) is not None
    confirmation = parse(ErasureConfirmation, value)
    assert key == user.encode()
    assert (confirmation.user_id, confirmation.request_id, confirmation.tables) == (
        user,
        "del-1",
        ["profiles", "feedback", "open-impressions"],
    )
    assert confirmation.erased_at == pytest.approx(time.time(), abs=60)


async def test_erasure_of_an_unknown_user_still_confirms(outputs: Outputs) -> None:
    user = fresh("u")
    async with erasure.erase_users.test_context() as agent:
        await agent.put(value=orjson.dumps({"user_id": user}), key=user.encode())
        [(_, value)] = await wait_for(lambda: outputs["user-erasure-confirmations"])
    assert parse(ErasureConfirmation, value).request_id is None


async def test_bad_erasure_request_is_dead_lettered(outputs: Outputs) -> None:
    user = fresh("u")
    profiles.data[user] = Profile(user_id=user).to_dict()
    async with erasure.erase_users.test_context() as agent:
        await agent.put(value=orjson.dumps({"user_id": user}), key=b"someone-else")
        [letter] = await wait_for(outputs.dead_letters)
    assert "does not match user_id" in letter.reason
    assert letter.topic == settings.topic("user-erasure")
    assert stored_profile(user) is not None  # nobody was erased
    assert outputs["user-erasure-confirmations"] == []


# --- items and item activity ------------------------------------------------------------------------------


def item_bytes(item_id: str, title: str = "Title", ts: float = TS) -> bytes:
    return orjson.dumps({"item_id": item_id, "title": title, "categories": ["Drama"], "updated_at": ts})


async def test_items_are_stored_and_embedded(outputs: Outputs) -> None:
    a, b = fresh("it"), fresh("it")
    embedded: list[list[str]] = []

    async def embed(texts: list[str], deadline: float) -> np.ndarray:
        embedded.append(list(texts))
        return np.full((len(texts), 3), 0.5, dtype=np.float32)

    with mock.patch.object(runtime.ranker_client, "embed", embed):
        async with items.ingest_items.test_context() as agent:
            await agent.put(value=item_bytes(a, "Alpha"), key=a.encode())
            await agent.put(value=item_bytes(b, "Beta"), key=b.encode())
            await wait_for(lambda: item_vectors.get(a) and item_vectors.get(b))
    assert (items_table.get(a) or {})["title"] == "Alpha"
    assert item_vectors.get(a) == {"updated_at": TS, "vector": [0.5, 0.5, 0.5]}
    assert sorted(t for call in embedded for t in call) == ["Alpha. Drama.", "Beta. Drama."]


async def test_embedding_is_retried_until_triton_answers(outputs: Outputs) -> None:
    a = fresh("it")
    attempts: list[float] = []

    async def embed(texts: list[str], deadline: float) -> np.ndarray:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise RankerUnavailable("connection")
        return np.ones((len(texts), 2), dtype=np.float32)

    with mock.patch.object(runtime.ranker_client, "embed", embed):
        async with items.ingest_items.test_context() as agent:
            await agent.put(value=item_bytes(a), key=a.encode())
            await wait_for(lambda: item_vectors.get(a), within=5.0)
    assert len(attempts) == 2
    assert attempts[1] - attempts[0] >= 0.45  # backed off before retrying


async def test_item_tombstone_removes_item_and_vector(outputs: Outputs) -> None:
    a = fresh("it")
    items_table.data[a] = {"item_id": a}
    item_vectors.data[a] = {"updated_at": TS, "vector": [1.0]}
    async with items.ingest_items.test_context() as agent:
        await agent.put(value=None, key=a.encode())
        await wait_for(lambda: items_table.get(a) is None and item_vectors.get(a) is None)
    assert outputs["dead-letters"] == []


async def test_invalid_item_is_dead_lettered_not_stored(outputs: Outputs) -> None:
    a = fresh("it")
    with mock.patch.object(runtime.ranker_client, "embed", side_effect=AssertionError("nothing to embed")):
        async with items.ingest_items.test_context() as agent:
            await agent.put(value=orjson.dumps({"item_id": a, "title": "", "updated_at": TS}), key=a.encode())
            [letter] = await wait_for(outputs.dead_letters)
    assert letter.reason.startswith("title:")
    assert items_table.get(a) is None


async def test_item_activity_folds_into_item_stats_idempotently(outputs: Outputs) -> None:
    x, y = fresh("x"), fresh("y")
    batch1 = orjson.dumps(
        [
            {"activity_id": "a1", "item_id": x, "ts": TS, "count": True, "co_items": [[y, 1]]},
            {"activity_id": "a2", "item_id": x, "ts": TS, "count": True, "co_items": [[y, 9]]},
        ]
    )
    async with items.apply_item_activity.test_context() as agent:
        await agent.put(value=batch1, key=x.encode())
        await agent.put(value=batch1, key=x.encode())  # replayed
        await agent.put(value=b"not json", key=x.encode())
        await wait_for(outputs.dead_letters)
        items.pending_stats.flush()
        stats = await wait_for(lambda: (raw := item_stats.get(x)) and ItemStats.from_dict(raw))
    assert stats.total == 2
    assert stats.cooc == {y: 2.0}
    assert stats.near == {y: 1.0}
    assert stats.buckets == {int(TS // BUCKET_S): 2}
    [letter] = outputs.dead_letters()
    assert letter.reason == "item-activity message is not valid JSON"


async def test_packed_item_activity_folds_each_item_and_a_stray_item_is_dead_lettered(
    outputs: Outputs,
) -> None:
    n = topics.item_activity_topic.partitions
    x, y = fresh("x"), fresh("y")
    while key_partition(y.encode(), n) != key_partition(x.encode(), n):
        y = fresh("y")
    stray = fresh("z")
    while key_partition(stray.encode(), n) == key_partition(x.encode(), n):
        stray = fresh("z")
    partition = key_partition(x.encode(), n)
    packed = {x: [["p1", TS, True, [[y, 1]]]], y: [["p1", TS, False, [[x, 1]]]]}
    rows_applied = runtime.metrics.item_activity_rows.labels(stage="applied")
    applied_before = rows_applied._value.get()
    async with items.apply_item_activity.test_context() as agent:
        await agent.put(value=orjson.dumps(packed), partition=partition)
        await agent.put(value=orjson.dumps(packed), partition=partition)  # sent twice: caught by its id
        await agent.put(value=orjson.dumps({stray: [["p2", TS, True, []]]}), partition=partition)
        [letter] = await wait_for(outputs.dead_letters)
        items.pending_stats.flush()
        got_x = await wait_for(lambda: (raw := item_stats.get(x)) and ItemStats.from_dict(raw))
        got_y = await wait_for(lambda: (raw := item_stats.get(y)) and ItemStats.from_dict(raw))
    assert (got_x.total, got_x.cooc) == (1, {y: 1.0})
    assert (got_y.total, got_y.cooc) == (0, {x: 1.0})
    assert repr(stray) in letter.reason and f"partition {partition}" in letter.reason
    assert item_stats.get(stray) is None
    # Both copies' rows went through the fold (the second changed nothing); the stray's none.
    assert rows_applied._value.get() - applied_before == 4


def pending_gauge() -> float | None:
    return runtime.metrics.registry.get_sample_value("streamrec_item_stats_pending")


async def test_item_statistics_are_written_a_delay_after_they_change_and_hold_the_commit(
    outputs: Outputs,
) -> None:
    n = topics.item_activity_topic.partitions
    x, y, z = fresh("x"), fresh("y"), fresh("z")
    tp = TP(topics.item_activity_topic.get_topic_name(), key_partition(x.encode(), n))
    writes = runtime.metrics.item_stats_writes._value
    writes_before = writes.get()
    async with items.apply_item_activity.test_context() as agent:
        await agent.put(value=orjson.dumps({x: [["w1", TS, True, [[y, 1]]]]}), partition=tp.partition)
        first = await wait_for(lambda: items.pending_stats.get(x))
        assert item_stats.get(x) is None  # folded, not written yet
        assert pending_gauge() >= 1
        floor = stream.app.app.commit_floor(tp)
        assert floor is not None  # a commit stays below the message that changed it
        await agent.put(value=orjson.dumps({x: [["w2", TS, True, [[z, 9]]]]}), partition=tp.partition)
        # The second message folds onto the pending value: the table still holds nothing.
        second = await wait_for(lambda: (s := items.pending_stats.get(x)) is not first and s)
        assert stream.app.app.commit_floor(tp) == floor  # its first unwritten change still counts
        items.write_due_stats(time.monotonic() + settings.item_stats_write_delay_s)
    assert (second.total, second.cooc, second.near) == (2, {y: 1.0, z: 1.0}, {y: 1.0})
    assert ItemStats.from_dict(item_stats.get(x)) == second
    assert items.pending_stats.get(x) is None
    assert writes.get() - writes_before >= 1


async def test_item_statistics_past_the_pending_bound_are_written_with_their_batch(outputs: Outputs) -> None:
    x, y = fresh("x"), fresh("y")
    patched = settings.model_copy(update={"item_stats_pending_max": 0})
    with mock.patch.object(items, "settings", patched):
        async with items.apply_item_activity.test_context() as agent:
            await agent.put(value=orjson.dumps([["b1", TS, True, [[y, 1]]]]), key=x.encode())
            raw = await wait_for(lambda: item_stats.get(x))
    assert ItemStats.from_dict(raw).total == 1
    assert items.pending_stats.get(x) is None


async def test_pending_item_statistics_of_revoked_partitions_are_forgotten(outputs: Outputs) -> None:
    n = topics.item_activity_topic.partitions
    x, y = fresh("x"), fresh("y")
    while key_partition(y.encode(), n) == key_partition(x.encode(), n):
        y = fresh("y")
    px, py = key_partition(x.encode(), n), key_partition(y.encode(), n)
    async with items.apply_item_activity.test_context() as agent:
        await agent.put(value=orjson.dumps({x: [["r1", TS, True, []]]}), partition=px)
        await agent.put(value=orjson.dumps({y: [["r2", TS, True, []]]}), partition=py)
        await wait_for(lambda: items.pending_stats.get(x) and items.pending_stats.get(y))
        topic = topics.item_activity_topic.get_topic_name()
        await stream.app.app.on_partitions_revoked.send({TP(topic, px)})
    assert items.pending_stats.get(x) is None  # its next owner folds its messages again
    assert items.pending_stats.get(y) is not None
    items.pending_stats.flush()
    assert item_stats.get(x) is None and ItemStats.from_dict(item_stats.get(y)).total == 1


# --- the item view and the maintenance timers ------------------------------------------------------------
# ``@app.timer`` returns wrappers (task around timer loop) that run forever; unwrapped, it is one tick.
refresh_snapshot_once = inspect.unwrap(maintenance.refresh_snapshot)


def test_item_view_follows_items_vectors_and_tombstones() -> None:
    from stream.catalog import CatalogIndex
    from stream.follower import ItemView
    from stream.recommend import Snapshot

    view = ItemView(CatalogIndex(), Snapshot())
    a, b = fresh("it"), fresh("it")
    view.apply("item-vectors", a, {"updated_at": TS, "vector": [1.0, 0.0]})  # a vector before its item
    view.apply("items", a, Item(item_id=a, title="Alpha", updated_at=TS).model_dump(mode="json"))
    view.apply("items", b, Item(item_id=b, title="Beta", updated_at=TS).model_dump(mode="json"))
    view.apply("item-vectors", b, {"updated_at": TS - 1, "vector": [0.0, 1.0]})  # a stale vector
    assert a in view.catalog and b in view.catalog
    assert view.catalog.has_vector(a)
    assert not view.catalog.has_vector(b)
    view.apply("items", b, Item(item_id=b, title="Beta 2", updated_at=TS - 1).model_dump(mode="json"))
    assert view.catalog.has_vector(b), "the item caught up with its vector"
    view.apply("items", a, None)
    assert a not in view.catalog and not view.catalog.has_vector(a)
    view.apply("item-stats", b, {"item_id": b, "total": 7, "cooc": {a: 2.0}})
    assert view.snapshot.popularity[b] == 7
    stats = view.item_stats(b)
    assert stats is not None and stats.cooc == {a: 2.0}
    view.apply("item-stats", b, None)
    assert view.item_stats(b) is None and b not in view.snapshot.popularity


async def test_refresh_snapshot_counts_trending_in_the_window() -> None:
    old, new = fresh("old"), fresh("new")
    latest = 500_000
    window_buckets = int(settings.trending_window_s // BUCKET_S)
    saved_stats = dict(runtime.item_view.stats)
    saved = (dict(runtime.snapshot.popularity), runtime.snapshot.trending, runtime.snapshot.watermark)
    try:
        runtime.item_view.apply(
            "item-stats", old, {"item_id": old, "total": 50, "buckets": {str(latest - window_buckets): 50}}
        )
        runtime.item_view.apply(
            "item-stats", new, {"item_id": new, "total": 3, "buckets": {str(latest): 2, str(latest - 1): 1}}
        )
        await refresh_snapshot_once()
        assert runtime.snapshot.popularity[old] == 50
        assert runtime.snapshot.popularity[new] == 3
        assert runtime.snapshot.trending.get(new) == 3
        assert old not in runtime.snapshot.trending  # its only bucket is just outside the window
        assert runtime.snapshot.watermark >= (latest + 1) * BUCKET_S
    finally:
        runtime.item_view.stats.clear()
        runtime.item_view.stats.update(saved_stats)
        runtime.snapshot.popularity, runtime.snapshot.trending, runtime.snapshot.watermark = saved


# --- the feedback join ------------------------------------------------------------------------------------


async def test_a_click_on_a_recommendation_becomes_a_positive_example_when_its_window_closes(
    outputs: Outputs, world: list[str]
) -> None:
    user = fresh("u")
    with mock.patch.object(runtime.recommender, "client", FakeRanker(error=RankerUnavailable("deadline"))):
        async with queries.answer_queries.test_context() as agent:
            await agent.put(value=query_bytes("rq-" + user, user, k=4), key=user.encode())
            [rec] = await wait_for(outputs.recommendations)
    [(key, raw)] = outputs["impressions"]
    imp = parse(Impression, raw)
    assert key == user.encode()
    assert [(i.item_id, i.rank) for i in imp.items] == [(i.item_id, i.rank) for i in rec.items]
    clicked = rec.items[1].item_id

    click = {"event_id": "c-" + user, "user_id": user, "item_id": clicked, "type": "click", "ts": TS + 1}
    async with events.ingest_events.test_context() as agent:
        await agent.put(value=orjson.dumps({**click, "request_id": rec.request_id}), key=user.encode())
        await agent.put(value=event_bytes("o-" + user, user, world[9], "click", TS + 2), key=user.encode())
        await wait_for(lambda: (s := feedback.get(user)) and s["open"][0]["outcomes"])
    assert outputs["training-examples"] == []  # the window is still open
    # The user's state names what was shown; what training needs waits under the request id.
    assert feedback.get(user)["open"][0]["shown"] == [i.item_id for i in rec.items]
    assert open_impressions.get(rec.request_id)["items"][1]["features"] == imp.items[1].features

    window_end = TS + settings.feedback_window_s + settings.feedback_grace_s
    feedback_agent.sweep(window_end - 1, assigned={0, 1, 2, 3})  # other tests' windows may close
    mine = [parse(TrainingExample, v) for _, v in outputs["training-examples"]]
    assert [e for e in mine if e.user_id == user] == []
    feedback_agent.sweep(window_end + 1, assigned={0, 1, 2, 3})
    examples = [
        e for _, v in outputs["training-examples"] if (e := parse(TrainingExample, v)).user_id == user
    ]
    assert {e.item_id: (e.label, e.outcome) for e in examples} == {
        i.item_id: (int(i.item_id == clicked), "click" if i.item_id == clicked else "none") for i in rec.items
    }
    assert {e.request_id for e in examples} == {rec.request_id}
    assert feedback.get(user) is None  # nothing left open: the user's join state is gone
    assert open_impressions.get(rec.request_id) is None  # and the payload with it


async def test_erasure_removes_open_impressions_and_their_payloads(outputs: Outputs) -> None:
    user = fresh("u")
    with mock.patch.object(runtime.recommender, "client", FakeRanker(error=RankerUnavailable("deadline"))):
        async with queries.answer_queries.test_context() as agent:
            await agent.put(value=query_bytes("rq-" + user, user, k=4), key=user.encode())
            [rec] = await wait_for(outputs.recommendations)
    assert open_impressions.get(rec.request_id) is not None
    async with erasure.erase_users.test_context() as agent:
        await agent.put(value=orjson.dumps({"user_id": user, "request_id": "del-" + user}), key=user.encode())
        await wait_for(lambda: outputs["user-erasure-confirmations"])
    assert feedback.get(user) is None
    assert open_impressions.get(rec.request_id) is None
    feedback_agent.sweep(time.time() + 10 * settings.feedback_window_s, assigned={0, 1, 2, 3})
    assert [v for _, v in outputs["training-examples"] if parse(TrainingExample, v).user_id == user] == []


async def test_an_impression_evicted_as_soon_as_it_opens_still_becomes_examples(
    outputs: Outputs, world: list[str]
) -> None:
    """With the user's state full, a query older than every open one is closed at once: its payload
    must be there for the examples (the oldest goes first, even when it is the newest to arrive)."""
    user = fresh("u")
    one_open = feedback_agent.join.Window(settings.feedback_window_s, settings.feedback_grace_s, max_open=1)
    with (
        mock.patch.object(runtime.recommender, "client", FakeRanker(error=RankerUnavailable("deadline"))),
        mock.patch.object(feedback_agent, "WINDOW", one_open),
    ):
        async with queries.answer_queries.test_context() as agent:
            await agent.put(value=query_bytes("new-" + user, user, k=4, ts=TS + 100), key=user.encode())
            await agent.put(value=query_bytes("old-" + user, user, k=4, ts=TS), key=user.encode())
            await wait_for(lambda: len(outputs.recommendations()) == 2)
    examples = [
        e for _, v in outputs["training-examples"] if (e := parse(TrainingExample, v)).user_id == user
    ]
    assert {e.request_id for e in examples} == {"old-" + user}
    assert len(examples) == 4
    assert open_impressions.get("old-" + user) is None
    assert [o["request_id"] for o in feedback.get(user)["open"]] == ["new-" + user]
