"""Properties of ``stream.records.parse`` under generated input (hypothesis, derandomized for CI).

The generator (tests/support/fuzz.py) labels each message valid or invalid from the documented
contract alone; ``parse`` must agree in both directions and must never raise anything but
``InvalidMessage``, whatever the bytes.
"""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream import records
from stream.records import (
    MAX_DEAD_LETTER_KEY,
    MAX_DEAD_LETTER_RAW,
    Contract,
    ErasureRequest,
    Event,
    InvalidMessage,
    Item,
    Query,
    parse,
)
from tests.support import fuzz
from tests.support.fuzz import Case

MODELS: dict[str, type[Contract]] = {
    "events": Event,
    "queries": Query,
    "user-erasure": ErasureRequest,
    "items": Item,
}
SETTINGS = settings(
    max_examples=300, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


def _parse(case: Case) -> Contract:
    return parse(MODELS[case.topic], case.value, case.key, key_field=fuzz.KEY_FIELD[case.topic])


def _check(case: Case) -> None:
    if case.kind == "tombstone":
        # Not parse's to accept: the items agent removes the item before parsing anything.
        with pytest.raises(InvalidMessage, match="empty message"):
            _parse(case)
        return
    if case.valid:
        record = _parse(case)
        assert record.model_dump(mode="json")[fuzz.KEY_FIELD[case.topic]].encode() == case.key
    else:
        with pytest.raises(InvalidMessage) as exc:
            _parse(case)
        assert exc.value.reason.strip()


@SETTINGS
@given(fuzz.cases())
def test_parse_agrees_with_the_generator(case: Case) -> None:
    _check(case)


@pytest.mark.parametrize("topic", fuzz.TOPICS)
@pytest.mark.parametrize("kind", sorted({*fuzz.VALID_KINDS, *fuzz.INVALID_KINDS}))
def test_every_kind_is_judged_as_the_contract_says(topic: str, kind: str) -> None:
    """Each kind on its own, so that a rare kind cannot hide among the common ones."""
    if kind not in fuzz.kinds_for(topic):
        pytest.skip(f"{kind} does not apply to {topic}")

    @settings(max_examples=25, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
    @given(fuzz.cases(topic, kind))
    def check(case: Case) -> None:
        _check(case)

    check()


@SETTINGS
@given(st.sampled_from(list(MODELS)), st.binary(max_size=300), st.none() | st.binary(max_size=70))
def test_arbitrary_bytes_raise_only_invalid_message(topic: str, value: bytes, key: bytes | None) -> None:
    try:
        parse(MODELS[topic], value, key, key_field=fuzz.KEY_FIELD[topic])
    except InvalidMessage as exc:
        assert exc.reason.strip()


@SETTINGS
@given(st.sampled_from(list(MODELS)), json_values, st.none() | st.text(max_size=70))
def test_arbitrary_json_raises_only_invalid_message(topic: str, body: object, key: str | None) -> None:
    raw = json.dumps(body).encode()  # NaN and Infinity included: json writes them, JSON forbids them
    try:
        parse(MODELS[topic], raw, None if key is None else key.encode(), key_field=fuzz.KEY_FIELD[topic])
    except InvalidMessage as exc:
        assert exc.reason.strip()


@SETTINGS
@given(fuzz.cases(kind="valid"))
def test_a_parsed_record_round_trips(case: Case) -> None:
    record = _parse(case)
    again = parse(type(record), record.to_json(), case.key, key_field=fuzz.KEY_FIELD[case.topic])
    assert again == record


def test_the_documented_limits_are_the_enforced_ones() -> None:
    assert (records.MAX_MESSAGE_BYTES, records.MAX_ID_LEN, records.MAX_QUERY_LEN) == (
        fuzz.MESSAGE_LIMIT,
        fuzz.ID_MAX,
        fuzz.QUERY_TEXT_MAX,
    )
    assert (records.MAX_K, records.MAX_TITLE_LEN, records.MAX_TEXT_LEN) == (
        fuzz.K_MAX,
        fuzz.TITLE_MAX,
        fuzz.ITEM_TEXT_MAX,
    )
    assert (records.MAX_CATEGORIES, records.MAX_ATTRIBUTES) == (fuzz.CATEGORIES_MAX, fuzz.ATTRIBUTES_MAX)
    assert (records.MIN_TS, records.MAX_TS) == (fuzz.TS_MIN, fuzz.TS_MAX)


@pytest.mark.parametrize(
    ("size", "truncated"), [(10, False), (MAX_DEAD_LETTER_RAW, False), (1_000_000, True)]
)
def test_a_dead_letter_always_fits_in_one_kafka_message(size: int, truncated: bool) -> None:
    """A dead letter over the producer's 1 MiB limit failed to send and crashed the whole worker."""
    from stream.agents import topics

    sent: list[tuple[bytes | None, bytes]] = []
    value = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    message = SimpleNamespace(topic="events", partition=0, offset=3, key=b"k" * 5000, value=value)
    with mock.patch.object(
        topics.dead_letters_topic, "send_soon", side_effect=lambda key, value: sent.append((key, value))
    ):
        topics.dead_letter(SimpleNamespace(message=message), "too big")
    [(key, body)] = sent
    assert len(key or b"") + len(body) < 1024 * 1024 - 1024
    letter = json.loads(body)
    assert (letter["raw_size"], letter["raw_truncated"]) == (size, truncated)
    assert base64.b64decode(letter["raw"]) == value[:MAX_DEAD_LETTER_RAW]
    assert key == b"k" * MAX_DEAD_LETTER_KEY and letter["key"] == "k" * MAX_DEAD_LETTER_KEY
