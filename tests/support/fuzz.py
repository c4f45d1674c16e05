"""Hypothesis strategies for every input topic: valid messages and each way a message can be wrong.

Each generated ``Case`` carries the generator's own verdict (``valid``), derived from the contract as
docs/topics.md states it, not from ``stream.records``: the tests compare it with what ``parse`` and
the worker do, so a too-lenient parser fails them. The limits below are copied from the document on
purpose; if the code's limits drift from the documented ones, the tests say so.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

# The documented contract (docs/topics.md).
MESSAGE_LIMIT = 64 * 1024
ID_MAX = 64
QUERY_TEXT_MAX = 512
K_MIN, K_MAX = 1, 100
TITLE_MAX = 300
ITEM_TEXT_MAX = 2000
CATEGORIES_MAX = 20
CATEGORY_MAX = 64
ATTRIBUTES_MAX = 32
ATTRIBUTE_STR_MAX = 256
TS_MIN, TS_MAX = 631_152_000.0, 4_102_444_800.0  # 1990-01-01 .. 2100-01-01
EVENT_TYPES = ("view", "click", "add_to_cart", "purchase")

ID_ALPHABET = string.ascii_letters + string.digits + "_.:-"
# Never at either end of an id (where whitespace would be stripped), always invalid inside one.
BAD_ID_CHARS = " /#@!$%&*+=?,;|<>{}[]()'~`\"\\"
INVALID_UTF8 = (b"\xff", b"\xc3", b"\x80", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf5\x80\x80\x80")
NON_FINITE = ("NaN", "Infinity", "-Infinity", "1e999", "-1e999")

USERS = tuple(f"u{i}" for i in range(8))  # events and queries
ERASED_USERS = tuple(f"gone{i}" for i in range(4))  # erasure requests only: never in the fold
BASE_ITEMS = tuple(f"base{i}" for i in range(30))  # the catalog events refer to
FUZZ_ITEMS = tuple(f"fz{i}" for i in range(12))  # the items the fuzzed ``items`` messages write
DUPLICATE_EVENT_IDS = tuple(f"dup{i}" for i in range(6))  # drawn often, so event_ids repeat

TOPICS = ("events", "queries", "user-erasure", "items")
KEY_FIELD = {"events": "user_id", "queries": "user_id", "user-erasure": "user_id", "items": "item_id"}

# Field kinds per topic: (field, kind, required).
FIELDS: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "events": (
        ("event_id", "id", True),
        ("user_id", "id", True),
        ("item_id", "id", True),
        ("type", "enum", True),
        ("ts", "ts", True),
        ("session_id", "opt_id", False),
        ("request_id", "opt_id", False),
    ),
    "queries": (
        ("request_id", "id", True),
        ("user_id", "id", True),
        ("ts", "ts", True),
        ("text", "query_text", False),
        ("k", "k", False),
    ),
    "user-erasure": (
        ("user_id", "id", True),
        ("request_id", "opt_id", False),
        ("ts", "opt_ts", False),
    ),
    "items": (
        ("item_id", "id", True),
        ("title", "title", True),
        ("updated_at", "ts", True),
        ("text", "item_text", False),
        ("categories", "categories", False),
        ("attributes", "attributes", False),
    ),
}

VALID_KINDS = frozenset({"valid", "valid_extra_fields", "padded_to_limit", "tombstone"})
INVALID_KINDS = (
    "missing_field",
    "wrong_type",
    "non_finite",
    "huge_string",
    "huge_list",
    "bad_id",
    "out_of_range",
    "bad_ts",
    "oversized",
    "invalid_utf8",
    "wrong_key",
    "no_key",
    "non_object",
    "not_json",
    "null_value",
)


@dataclass(frozen=True)
class Case:
    topic: str
    key: bytes | None
    value: bytes | None
    kind: str

    @property
    def valid(self) -> bool:
        """The generator's verdict: only the valid kinds satisfy the contract."""
        return self.kind in VALID_KINDS

    def __repr__(self) -> str:  # a 900 kB value in a failure message helps nobody
        value = self.value if self.value is None or len(self.value) < 300 else self.value[:300] + b"..."
        return f"Case({self.topic!r}, kind={self.kind!r}, key={self.key!r}, value={value!r})"


def kinds_for(topic: str) -> tuple[str, ...]:
    kinds = ("valid", "valid_extra_fields", "padded_to_limit", *INVALID_KINDS)
    if topic == "items":
        return (*kinds, "tombstone")
    return tuple(k for k in kinds if k != "huge_list")  # only items have lists


# --- valid values ------------------------------------------------------------------------------

ids = st.text(ID_ALPHABET, min_size=1, max_size=ID_MAX)
short_ids = st.text(ID_ALPHABET, min_size=1, max_size=20)
# Any text but lone surrogates (not encodable as UTF-8 at all).
free_text = st.characters(codec="utf-8")
timestamps = st.one_of(
    st.floats(TS_MIN, TS_MAX, allow_nan=False),
    st.integers(int(TS_MIN), int(TS_MAX)),  # a JSON integer is a number too
    st.sampled_from([TS_MIN, TS_MAX]),
)


def _edged(max_size: int) -> st.SearchStrategy[str]:
    """Non-blank after stripping, whatever counts as whitespace: letters at both ends."""
    edge = st.sampled_from(string.ascii_letters + string.digits)
    return st.builds(lambda a, mid, b: a + mid + b, edge, st.text(free_text, max_size=max_size - 2), edge)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(free_text, max_size=ATTRIBUTE_STR_MAX),
)
attribute_keys = st.text(string.ascii_letters + string.digits + "_", min_size=1, max_size=20)


def _event(draw: Callable[..., Any]) -> dict[str, Any]:
    body = {
        "event_id": draw(st.one_of(st.sampled_from(DUPLICATE_EVENT_IDS), ids)),
        "user_id": draw(st.sampled_from(USERS)),
        "item_id": draw(st.one_of(st.sampled_from(BASE_ITEMS), short_ids)),
        "type": draw(st.sampled_from(EVENT_TYPES)),
        "ts": draw(timestamps),
    }
    for field in ("session_id", "request_id"):
        if draw(st.booleans()):
            body[field] = draw(st.one_of(st.none(), ids))
    return body


def _query(draw: Callable[..., Any]) -> dict[str, Any]:
    body = {"request_id": draw(ids), "user_id": draw(st.sampled_from(USERS)), "ts": draw(timestamps)}
    if draw(st.booleans()):
        body["text"] = draw(st.text(free_text, max_size=QUERY_TEXT_MAX))
    if draw(st.booleans()):
        body["k"] = draw(st.integers(K_MIN, K_MAX))
    return body


def _erasure(draw: Callable[..., Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"user_id": draw(st.sampled_from(ERASED_USERS))}
    if draw(st.booleans()):
        body["request_id"] = draw(st.one_of(st.none(), ids))
    if draw(st.booleans()):
        body["ts"] = draw(st.one_of(st.none(), timestamps))
    return body


def _item(draw: Callable[..., Any]) -> dict[str, Any]:
    body = {
        "item_id": draw(st.sampled_from(FUZZ_ITEMS)),
        "title": draw(_edged(TITLE_MAX)),
        "updated_at": draw(timestamps),
    }
    if draw(st.booleans()):
        body["text"] = draw(st.text(free_text, max_size=ITEM_TEXT_MAX))
    if draw(st.booleans()):
        body["categories"] = draw(st.lists(_edged(CATEGORY_MAX), max_size=CATEGORIES_MAX))
    if draw(st.booleans()):
        body["attributes"] = draw(st.dictionaries(attribute_keys, scalars, max_size=ATTRIBUTES_MAX))
    return body


VALID_BODY = {"events": _event, "queries": _query, "user-erasure": _erasure, "items": _item}


# --- invalid values ----------------------------------------------------------------------------

_containers = st.one_of(
    st.lists(st.integers(), max_size=2), st.dictionaries(short_ids, st.integers(), max_size=2)
)
_not_str = st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), _containers)
_not_number = st.one_of(st.text(string.digits, min_size=1, max_size=12), st.booleans(), _containers)

WRONG_TYPE: dict[str, st.SearchStrategy[Any]] = {
    "id": st.one_of(_not_str, st.none()),
    "opt_id": _not_str,
    "enum": st.one_of(
        _not_str, st.none(), st.sampled_from(["like", "VIEW", "Purchase", "", "add-to-cart", "views"])
    ),
    "ts": st.one_of(_not_number, st.none()),
    "opt_ts": _not_number,
    "query_text": st.one_of(_not_str, st.none()),
    "item_text": st.one_of(_not_str, st.none()),
    "title": st.one_of(_not_str, st.none()),
    # A float, even 10.0, is not the documented integer; nor is a numeric string or a boolean.
    "k": st.one_of(st.floats(allow_nan=False, allow_infinity=False), _not_number, st.none()),
    "categories": st.one_of(
        st.text(max_size=10),
        st.integers(),
        st.dictionaries(short_ids, short_ids, max_size=2),
        st.none(),
        st.lists(st.integers(), min_size=1, max_size=3),
        st.just([""]),
    ),
    "attributes": st.one_of(
        st.lists(st.integers(), max_size=3),
        st.text(max_size=10),
        st.integers(),
        st.none(),
        st.dictionaries(attribute_keys, _containers, min_size=1, max_size=2),
    ),
}

HUGE_STRING: dict[str, st.SearchStrategy[str]] = {
    "id": st.integers(ID_MAX + 1, 400).map(lambda n: "a" * n),
    "opt_id": st.integers(ID_MAX + 1, 400).map(lambda n: "b" * n),
    "query_text": st.integers(QUERY_TEXT_MAX + 1, 5000).map(lambda n: "q" * n),
    "item_text": st.integers(ITEM_TEXT_MAX + 1, 8000).map(lambda n: "t" * n),
    "title": st.integers(TITLE_MAX + 1, 3000).map(lambda n: "T" * n),
}


bad_timestamps = st.one_of(
    st.floats(-1e15, TS_MIN, exclude_max=True, allow_nan=False),
    st.floats(TS_MAX, 1e18, exclude_min=True, allow_nan=False),
    st.sampled_from([0, -1, 1_700_000_000_000, 1_700_000_000_000_000]),  # ms, µs instead of seconds
)

_json_non_objects = st.one_of(
    st.lists(st.integers(), max_size=3),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.booleans(),
    st.none(),
)

SENTINEL = "__fuzz_sentinel__"


def _dumps(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def _substitute(body: dict[str, Any], field: str, replacement: bytes) -> bytes:
    """``body`` serialised with ``field``'s value replaced by raw bytes (not producible via json)."""
    marked = {**body, field: SENTINEL}
    return _dumps(marked).replace(json.dumps(SENTINEL).encode(), replacement, 1)


def _pad_to(body: dict[str, Any], size: int) -> bytes:
    bare = _dumps({**body, "pad": ""})
    assert len(bare) <= size, f"a valid body of {len(bare)} bytes cannot be padded to {size}"
    return _dumps({**body, "pad": "x" * (size - len(bare))})


Draw = Callable[..., Any]
Key = bytes | None
# A mutator turns a valid body (and its key) into the message to send: (key, value).
Mutator = Callable[[Draw, str, dict[str, Any], Key], tuple[Key, bytes | None]]


def _pick(draw: Draw, topic: str, pred: Callable[[str, bool], bool]) -> tuple[str, str]:
    return draw(st.sampled_from([(f, k) for f, k, req in FIELDS[topic] if pred(k, req)]))


def _valid(draw: Draw, topic: str, body: dict[str, Any], key: Key) -> tuple[Key, bytes | None]:
    return key, _dumps(body)


def _valid_extra_fields(draw: Draw, topic: str, body: dict[str, Any], key: Key) -> tuple[Key, bytes | None]:
    extra = draw(
        st.dictionaries(st.text(min_size=1, max_size=12).map(lambda s: "x-" + s), scalars, min_size=1)
    )
    return key, _dumps({**extra, **body})


def _padded_to_limit(draw: Draw, topic: str, body: dict[str, Any], key: Key) -> tuple[Key, bytes | None]:
    return key, _pad_to(body, MESSAGE_LIMIT)


def _tombstone(draw: Draw, topic: str, body: dict[str, Any], key: Key) -> tuple[Key, bytes | None]:
    return key, None


def _missing_field(draw: Draw, topic: str, body: dict[str, Any], key: Key) -> tuple[Key, bytes | None]:
    field, _ = _pick(draw, topic, lambda k, req: req)
    body.pop(field)
    return key, _dumps(body)


def _wrong_type(draw: Draw, topic: str, body: dict[str, Any], key: Key) -> tuple[Key, bytes | None]:
    field, kind = _pick(draw, topic, lambda k, req: True)
    body[field] = draw(WRONG_TYPE[kind])
    return key, _dumps(body)


def _non_finite(draw: Draw, topic: str, body: dict[str, Any], key: Key) -> tuple[Key, bytes | None]:
    token = draw(st.sampled_from(NON_FINITE)).encode()
    if topic == "items" and draw(st.booleans()):
        body["attributes"] = {**body.get("attributes", {}), "price": SENTINEL}
        return key, _dumps(body).replace(json.dumps(SENTINEL).encode(), token)
    field, _ = _pick(draw, topic, lambda k, req: k in ("ts", "opt_ts", "k"))
    return key, _substitute(body, field, token)


def _huge_string(draw: Draw, topic: str, body: dict[str, Any], key: Key) -> tuple[Key, bytes | None]:
    if topic == "items" and draw(st.booleans()):
        if draw(st.booleans()):
            body["categories"] = ["c" * draw(st.integers(CATEGORY_MAX + 1, 500))]
        else:
            body["attributes"] = {"note": "n" * draw(st.integers(ATTRIBUTE_STR_MAX + 1, 3000))}
        return key, _dumps(body)
    field, kind = _pick(draw, topic, lambda k, req: k in HUGE_STRING)
    body[field] = draw(HUGE_STRING[kind])
    if field == KEY_FIELD[topic]:
        key = body[field].encode()  # the key agrees: only the length is wrong
    return key, _dumps(body)


def _huge_list(draw: Draw, topic: str, body: dict[str, Any], key: Key) -> tuple[Key, bytes | None]:
    # Long, but under the message limit, so that the list and not the size is what is wrong.
    if draw(st.booleans()):
        body["categories"] = [f"c{i}" for i in range(draw(st.integers(CATEGORIES_MAX + 1, 1500)))]
    else:
        body["attributes"] = {f"a{i}": i for i in range(draw(st.integers(ATTRIBUTES_MAX + 1, 1500)))}
    return key, _dumps(body)


def _bad_id(draw: Draw, topic: str, body: dict[str, Any], key: Key) -> tuple[Key, bytes | None]:
    field, _ = _pick(draw, topic, lambda k, req: k in ("id", "opt_id"))
    if draw(st.integers(0, 9)) == 0:
        body[field] = ""
    else:
        body[field] = draw(short_ids) + draw(st.sampled_from(BAD_ID_CHARS)) + draw(short_ids)
    if field == KEY_FIELD[topic]:
        key = body[field].encode()
    return key, _dumps(body)


def _out_of_range(draw: Draw, topic: str, body: dict[str, Any], key: Key) -> tuple[Key, bytes | None]:
    if topic == "events":
        words = st.text(string.ascii_lowercase + "_", min_size=1, max_size=15)
        body["type"] = draw(words.filter(lambda t: t not in EVENT_TYPES))
    elif topic == "queries":
        body["k"] = draw(st.one_of(st.integers(max_value=K_MIN - 1), st.integers(min_value=K_MAX + 1)))
    elif topic == "items":
        body["title"] = ""
    else:  # an erasure's only bounded value is its timestamp
        body["ts"] = draw(bad_timestamps)
    return key, _dumps(body)


def _bad_ts(draw: Draw, topic: str, body: dict[str, Any], key: Key) -> tuple[Key, bytes | None]:
    field, _ = _pick(draw, topic, lambda k, req: k in ("ts", "opt_ts"))
    body[field] = draw(bad_timestamps)
    return key, _dumps(body)


def _oversized(draw: Draw, topic: str, body: dict[str, Any], key: Key) -> tuple[Key, bytes | None]:
    size = draw(st.one_of(st.just(MESSAGE_LIMIT + 1), st.integers(MESSAGE_LIMIT + 2, 900_000)))
    return key, _pad_to(body, size)


def _invalid_utf8(draw: Draw, topic: str, body: dict[str, Any], key: Key) -> tuple[Key, bytes | None]:
    texts = [f for f, k, _ in FIELDS[topic] if k in ("id", "query_text", "item_text", "title")]
    field = draw(st.sampled_from([*texts, "note"]))  # "note": even an unknown field must be UTF-8
    return key, _substitute(body, field, b'"ok' + draw(st.sampled_from(INVALID_UTF8)) + b'ok"')


def _wrong_key(draw: Draw, topic: str, body: dict[str, Any], key: Key) -> tuple[Key, bytes | None]:
    other = draw(st.one_of(ids.map(str.encode), st.sampled_from(INVALID_UTF8)).filter(lambda k: k != key))
    return other, _dumps(body)


def _no_key(draw: Draw, topic: str, body: dict[str, Any], key: Key) -> tuple[Key, bytes | None]:
    return None, _dumps(body)


def _non_object(draw: Draw, topic: str, body: dict[str, Any], key: Key) -> tuple[Key, bytes | None]:
    return key, _dumps(draw(_json_non_objects))


def _not_json(draw: Draw, topic: str, body: dict[str, Any], key: Key) -> tuple[Key, bytes | None]:
    full = _dumps(body)  # any strict prefix of an object lacks its closing brace
    prefix = st.integers(0, len(full) - 1).map(lambda n: full[:n])
    return key, draw(
        st.one_of(prefix, st.sampled_from([b"{not json", b"{'user_id': 'u1'}", b"\x00\x01", b"{}}"]))
    )


def _null_value(draw: Draw, topic: str, body: dict[str, Any], key: Key) -> tuple[Key, bytes | None]:
    # For items a null value with a key is a tombstone (valid); with an empty key it names nothing.
    # (Kafka clients refuse a record with neither key nor value, so the key is empty, not absent.)
    return (b"" if topic == "items" else key), None


MUTATORS: dict[str, Mutator] = {
    "valid": _valid,
    "valid_extra_fields": _valid_extra_fields,
    "padded_to_limit": _padded_to_limit,
    "tombstone": _tombstone,
    "missing_field": _missing_field,
    "wrong_type": _wrong_type,
    "non_finite": _non_finite,
    "huge_string": _huge_string,
    "huge_list": _huge_list,
    "bad_id": _bad_id,
    "out_of_range": _out_of_range,
    "bad_ts": _bad_ts,
    "oversized": _oversized,
    "invalid_utf8": _invalid_utf8,
    "wrong_key": _wrong_key,
    "no_key": _no_key,
    "non_object": _non_object,
    "not_json": _not_json,
    "null_value": _null_value,
}


@st.composite
def cases(draw: Draw, topic: str | None = None, kind: str | None = None) -> Case:
    """One message for ``topic`` (any input topic if None) of ``kind`` (any that applies if None)."""
    topic = topic or draw(st.sampled_from(TOPICS))
    if kind is None:
        # About half valid: the worker's handling of good input among the bad is under test too.
        valid = [k for k in kinds_for(topic) if k in VALID_KINDS]
        invalid = [k for k in kinds_for(topic) if k not in VALID_KINDS]
        kind = draw(st.sampled_from(valid if draw(st.booleans()) else invalid))
    body = VALID_BODY[topic](draw)
    key, value = MUTATORS[kind](draw, topic, body, body[KEY_FIELD[topic]].encode())
    return Case(topic, key, value, kind)


# Messages per kind in the corpus: mostly valid ones (the worker must process those among the bad).
PER_KIND = {"valid": 20, "valid_extra_fields": 8, "padded_to_limit": 3, "tombstone": 6}
PER_INVALID_KIND = 5


def corpus(scale: int = 1) -> list[Case]:
    """Every kind of message for every input topic (``scale`` times ``PER_KIND``: ~430 messages at
    1), generated reproducibly (derandomized, no example database), then exact re-sends of every
    third valid event, as a producer retry or a replay would deliver them."""
    out: list[Case] = []
    for topic in TOPICS:
        for kind in kinds_for(topic):

            @settings(
                max_examples=scale * PER_KIND.get(kind, PER_INVALID_KIND),
                derandomize=True,
                database=None,
                phases=[Phase.generate],
                deadline=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(cases(topic, kind))
            def collect(case: Case) -> None:
                out.append(case)

            collect()
    resent = [c for c in out if c.topic == "events" and c.valid][::3]
    return out + [Case(c.topic, c.key, c.value, "valid") for c in resent]
