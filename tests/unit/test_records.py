"""The topic contracts: ``records.parse`` accepts valid messages and rejects everything else readably."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from stream.records import (
    MAX_CATEGORIES,
    MAX_ID_LEN,
    MAX_K,
    MAX_MESSAGE_BYTES,
    MAX_QUERY_LEN,
    MAX_TEXT_LEN,
    MAX_TITLE_LEN,
    MAX_TS,
    MIN_TS,
    DeadLetter,
    ErasureConfirmation,
    ErasureRequest,
    Event,
    EventType,
    InvalidMessage,
    Item,
    ModelInfo,
    Query,
    Recommendation,
    RecommendedItem,
    parse,
)

TS = 1_700_000_000.0


def event_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"event_id": "e-1", "user_id": "u-1", "item_id": "i-1", "type": "view", "ts": TS}
    body.update(overrides)
    return body


def item_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "item_id": "i-1",
        "title": "Star Wars (1977)",
        "text": "A space opera.",
        "categories": ["Action", "Sci-Fi"],
        "attributes": {"year": 1977, "rating": 8.6, "family": True, "studio": "Lucasfilm", "none": None},
        "updated_at": TS,
    }
    body.update(overrides)
    return body


def query_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"request_id": "r-1", "user_id": "u-1", "text": "space", "ts": TS, "k": 5}
    body.update(overrides)
    return body


def reason_of(model: type[Any], raw: bytes | None, **kwargs: Any) -> str:
    with pytest.raises(InvalidMessage) as info:
        parse(model, raw, **kwargs)
    reason = info.value.reason
    assert reason == str(info.value)
    assert reason.isprintable(), reason
    return reason


# --- valid messages -----------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", ["view", "click", "add_to_cart", "purchase"])
def test_parse_event_each_type(event_type: EventType) -> None:
    raw = orjson.dumps(event_body(type=event_type, session_id="s-1", request_id="r-9"))
    event = parse(Event, raw, b"u-1", key_field="user_id")
    assert event == Event(
        event_id="e-1",
        user_id="u-1",
        item_id="i-1",
        type=event_type,
        ts=TS,
        session_id="s-1",
        request_id="r-9",
    )


def test_parse_event_optional_fields_default_to_none_and_extra_fields_are_ignored() -> None:
    event = parse(Event, orjson.dumps(event_body(extra="ignored", nested={"a": 1})))
    assert event.session_id is None
    assert event.request_id is None
    assert not hasattr(event, "extra")


def test_parse_item_keeps_all_fields() -> None:
    item = parse(Item, orjson.dumps(item_body()), b"i-1", key_field="item_id")
    assert item.item_id == "i-1"
    assert item.title == "Star Wars (1977)"
    assert item.categories == ["Action", "Sci-Fi"]
    assert item.attributes == {
        "year": 1977,
        "rating": 8.6,
        "family": True,
        "studio": "Lucasfilm",
        "none": None,
    }
    assert item.updated_at == TS


def test_parse_item_minimal_has_empty_defaults() -> None:
    item = parse(Item, orjson.dumps({"item_id": "i-2", "title": "T", "updated_at": TS}))
    assert (item.text, item.categories, item.attributes) == ("", [], {})


def test_parse_query_and_default_k() -> None:
    query = parse(Query, orjson.dumps(query_body()), b"u-1", key_field="user_id")
    assert (query.request_id, query.user_id, query.text, query.k) == ("r-1", "u-1", "space", 5)
    body = query_body()
    del body["k"], body["text"]
    query = parse(Query, orjson.dumps(body))
    assert query.k == 10
    assert query.text == ""


def test_parse_erasure_request() -> None:
    request = parse(ErasureRequest, b'{"user_id": "u-7"}', b"u-7", key_field="user_id")
    assert request == ErasureRequest(user_id="u-7", request_id=None, ts=None)
    request = parse(ErasureRequest, orjson.dumps({"user_id": "u-7", "request_id": "x", "ts": TS}))
    assert (request.request_id, request.ts) == ("x", TS)


def test_surrounding_whitespace_is_stripped_before_validation() -> None:
    event = parse(Event, orjson.dumps(event_body(user_id="  u-1 ")), b"u-1", key_field="user_id")
    assert event.user_id == "u-1"


def test_records_are_frozen() -> None:
    event = parse(Event, orjson.dumps(event_body()))
    with pytest.raises(ValueError, match="frozen"):
        event.user_id = "other"


def test_boundaries_are_inclusive() -> None:
    assert parse(Event, orjson.dumps(event_body(ts=MIN_TS))).ts == MIN_TS
    assert parse(Event, orjson.dumps(event_body(ts=MAX_TS))).ts == MAX_TS
    assert parse(Query, orjson.dumps(query_body(k=1))).k == 1
    assert parse(Query, orjson.dumps(query_body(k=MAX_K))).k == MAX_K
    assert parse(Event, orjson.dumps(event_body(user_id="u" * MAX_ID_LEN))).user_id == "u" * MAX_ID_LEN
    assert len(parse(Item, orjson.dumps(item_body(title="t" * MAX_TITLE_LEN))).title) == MAX_TITLE_LEN


# --- raw bytes that are not a JSON object ----------------------------------------------------------


def test_none_value_is_an_empty_message() -> None:
    assert "empty" in reason_of(Event, None)


@pytest.mark.parametrize("raw", [b"garbage", b"{", b"", b'{"a": NaN}', b'{"a": Infinity}', b"{'a': 1}"])
def test_bad_json_is_rejected(raw: bytes) -> None:
    assert reason_of(Event, raw).startswith("not valid JSON/UTF-8")


@pytest.mark.parametrize("raw", [b"\xff\xfe\x00", b'{"event_id": "\xff"}'])
def test_invalid_utf8_is_rejected(raw: bytes) -> None:
    reason = reason_of(Event, raw)
    assert reason.startswith("not valid JSON/UTF-8")
    assert "UTF-8" in reason


def test_number_overflowing_to_infinity_is_rejected_by_the_json_parser() -> None:
    # orjson refuses numbers that overflow a double, so ``1e999`` never reaches a float field as inf.
    raw = orjson.dumps(event_body(ts=0)).replace(b'"ts":0', b'"ts":1e999')
    assert b"1e999" in raw
    reason = reason_of(Event, raw)
    assert reason.startswith("not valid JSON")
    assert "infinity" in reason


@pytest.mark.parametrize(
    ("raw", "kind"), [(b"[1, 2]", "list"), (b'"text"', "str"), (b"null", "NoneType"), (b"42", "int")]
)
def test_non_object_json_is_rejected_with_its_type(raw: bytes, kind: str) -> None:
    assert reason_of(Event, raw) == f"expected a JSON object, got {kind}"


def test_message_over_the_size_limit_is_rejected_before_parsing() -> None:
    body = event_body()
    raw = orjson.dumps(body)
    padded = raw[:-1] + b',"pad":"' + b"x" * (MAX_MESSAGE_BYTES - len(raw)) + b'"}'
    assert len(padded) > MAX_MESSAGE_BYTES
    reason = reason_of(Event, padded)
    assert reason == f"message of {len(padded)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit"
    # Not-even-JSON of that size fails on size, not on JSON.
    assert "exceeds" in reason_of(Event, b"\xff" * (MAX_MESSAGE_BYTES + 1))


def test_message_exactly_at_the_size_limit_is_parsed() -> None:
    raw = orjson.dumps(event_body())
    padded = raw[:-1] + b',"pad":"' + b"x" * MAX_MESSAGE_BYTES + b'"}'
    padded = padded[: MAX_MESSAGE_BYTES - 2] + b'"}'
    assert len(padded) == MAX_MESSAGE_BYTES
    assert parse(Event, padded).event_id == "e-1"


# --- schema violations ----------------------------------------------------------------------------


def test_missing_fields_are_all_named() -> None:
    reason = reason_of(Event, b"{}")
    for name in ("event_id", "user_id", "item_id", "type", "ts"):
        assert f"{name}: Field required" in reason


def test_more_than_five_errors_are_summarised() -> None:
    reason = reason_of(
        Recommendation, b'{"request_id": 1, "user_id": 2, "items": 3, "model": 4, "fallback": "x"}'
    )
    assert reason.count(";") == 5  # five errors shown, then "and N more"
    assert reason.endswith("more")
    assert "; and 2 more" in reason


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"type": "like"}, "type"),
        ({"ts": "yesterday"}, "ts"),
        ({"ts": None}, "ts"),
        ({"ts": [TS]}, "ts"),
        ({"user_id": 42}, "user_id"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": "a b"}, "user_id"),
        ({"item_id": {"id": "x"}}, "item_id"),
        ({"event_id": "e/1"}, "event_id"),
        ({"session_id": ""}, "session_id"),
    ],
)
def test_event_wrong_types_and_values_name_the_field(overrides: dict[str, Any], field: str) -> None:
    reason = reason_of(Event, orjson.dumps(event_body(**overrides)))
    assert reason.startswith(f"{field}:"), reason


@pytest.mark.parametrize("ts", [MIN_TS - 1, MAX_TS + 1, 0, -1.0, 1.7e12])
def test_timestamps_out_of_range_are_rejected(ts: float) -> None:
    reason = reason_of(Event, orjson.dumps(event_body(ts=ts)))
    assert reason.startswith("ts: Input should be"), reason


@pytest.mark.parametrize("k", [0, -1, MAX_K + 1, 10_000])
def test_k_out_of_range_is_rejected(k: int) -> None:
    assert reason_of(Query, orjson.dumps(query_body(k=k))).startswith("k: Input should be")


def test_k_must_be_a_whole_number() -> None:
    assert reason_of(Query, orjson.dumps(query_body(k=2.5))).startswith("k:")
    assert reason_of(Query, orjson.dumps(query_body(k="ten"))).startswith("k:")


@pytest.mark.parametrize(
    ("model", "body", "field"),
    [
        (Event, event_body(user_id="u" * (MAX_ID_LEN + 1)), "user_id"),
        (Item, item_body(title="t" * (MAX_TITLE_LEN + 1)), "title"),
        (Item, item_body(text="t" * (MAX_TEXT_LEN + 1)), "text"),
        (Item, item_body(categories=[f"c{i}" for i in range(MAX_CATEGORIES + 1)]), "categories"),
        (Item, item_body(categories=["x" * 65]), "categories.0"),
        (Item, item_body(categories=[""]), "categories.0"),
        (Item, item_body(categories="Action"), "categories"),
        (Item, item_body(attributes={f"a{i}": i for i in range(33)}), "attributes"),
        (Item, item_body(attributes={"blurb": "x" * 257}), "attributes"),
        (Item, item_body(attributes={"nested": {"a": 1}}), "attributes.nested"),
        (Item, item_body(title=""), "title"),
        (Item, item_body(title="   "), "title"),
        (Query, query_body(text="q" * (MAX_QUERY_LEN + 1)), "text"),
    ],
)
def test_oversized_and_malformed_fields_are_rejected(
    model: type[Any], body: dict[str, Any], field: str
) -> None:
    raw = orjson.dumps(body)
    assert len(raw) <= MAX_MESSAGE_BYTES  # the field limit fires, not the message limit
    reason = reason_of(model, raw)
    assert reason.startswith(f"{field}"), reason


def test_attribute_blurb_reason_says_what_is_wrong() -> None:
    reason = reason_of(Item, orjson.dumps(item_body(attributes={"blurb": "x" * 257})))
    assert "'blurb' is longer than 256 characters" in reason


def test_item_attribute_inf_is_rejected_by_the_validator() -> None:
    # JSON text cannot carry inf, but a record built in Python can: the validator still refuses it.
    with pytest.raises(ValueError, match="'score' is not a finite number"):
        Item.model_validate(item_body(attributes={"score": float("inf")}))
    with pytest.raises(ValueError, match="not a finite number"):
        Item.model_validate(item_body(attributes={"score": float("nan")}))


def test_timestamp_nan_built_in_python_is_rejected() -> None:
    with pytest.raises(ValueError, match="ts"):
        Event.model_validate(event_body(ts=float("nan")))


# --- key vs body ------------------------------------------------------------------------------------


def test_key_mismatch_is_rejected_and_names_both() -> None:
    reason = reason_of(Event, orjson.dumps(event_body()), key=b"u-2", key_field="user_id")
    assert reason == "message key 'u-2' does not match user_id 'u-1'"


def test_key_is_only_checked_when_a_key_field_is_given() -> None:
    assert parse(Event, orjson.dumps(event_body()), key=b"u-2").user_id == "u-1"


def test_undecodable_key_is_a_mismatch_not_a_crash() -> None:
    reason = reason_of(Event, orjson.dumps(event_body()), key=b"\xff\xfe", key_field="user_id")
    assert "does not match user_id 'u-1'" in reason


def test_long_key_is_truncated_in_the_reason() -> None:
    reason = reason_of(Event, orjson.dumps(event_body()), key=b"k" * 1000, key_field="user_id")
    assert len(reason) < 200
    assert "k" * 64 in reason
    assert "k" * 65 not in reason


def test_item_key_must_match_item_id() -> None:
    assert "item_id" in reason_of(Item, orjson.dumps(item_body()), key=b"i-2", key_field="item_id")


# --- outputs: plain JSON without framework metadata --------------------------------------------------


def test_recommendation_json_is_plain() -> None:
    rec = Recommendation(
        request_id="r-1",
        user_id="u-1",
        items=[RecommendedItem(item_id="i-1", score=0.5, rank=1, reason="popular with everyone")],
        model=ModelInfo(name="ranker", version="3"),
        fallback=False,
        produced_at=TS,
        latency_ms=12.5,
    )
    raw = rec.to_json()
    assert b"__faust" not in raw
    data = orjson.loads(raw)
    assert data == {
        "request_id": "r-1",
        "user_id": "u-1",
        "items": [{"item_id": "i-1", "score": 0.5, "rank": 1, "reason": "popular with everyone"}],
        "model": {"name": "ranker", "version": "3"},
        "fallback": False,
        "produced_at": TS,
        "latency_ms": 12.5,
        "variant": "control",
        "trigger": "query",
    }
    # It round-trips through its own contract.
    assert parse(Recommendation, raw) == rec


def test_dead_letter_and_confirmation_json_are_plain() -> None:
    letter = DeadLetter(
        topic="events", partition=1, offset=7, key=None, reason="bad", raw="eA==", received_at=TS
    )
    data = orjson.loads(letter.to_json())
    assert set(data) == {
        "topic",
        "partition",
        "offset",
        "key",
        "reason",
        "raw",
        "received_at",
        "raw_size",
        "raw_truncated",
    }
    assert data["key"] is None
    confirmation = ErasureConfirmation(user_id="u", request_id=None, erased_at=TS, tables=["profiles"])
    assert orjson.loads(confirmation.to_json()) == {
        "user_id": "u",
        "request_id": None,
        "erased_at": TS,
        "tables": ["profiles"],
    }


def test_event_to_json_round_trips() -> None:
    event = parse(Event, orjson.dumps(event_body(session_id="s")))
    assert parse(Event, event.to_json()) == event
