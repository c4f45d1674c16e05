"""The topic contracts: typed, validated records and the one way to parse raw bytes into them.

Every topic carries plain JSON without framework metadata (see docs/topics.md). Input records are
parsed from raw bytes by ``parse``; anything that fails raises ``InvalidMessage`` with a reason that
goes to the dead-letter topic together with the raw bytes.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
)

# Input size limits, documented in docs/topics.md.
MAX_ID_LEN = 64
MAX_TITLE_LEN = 300
MAX_TEXT_LEN = 2000
MAX_QUERY_LEN = 512
MAX_CATEGORIES = 20
MAX_ATTRIBUTES = 32
MAX_K = 100
MAX_MESSAGE_BYTES = 64 * 1024
# A dead letter must fit in one Kafka message (1 MiB by default) whatever arrived; base64 adds a third,
# so the raw value is kept whole up to 512 KiB (eight times any valid message) and cut beyond it.
MAX_DEAD_LETTER_RAW = 512 * 1024
MAX_DEAD_LETTER_KEY = 1024
# Timestamps outside [MIN_TS, MAX_TS] (unix seconds) are rejected: 1990-01-01 .. 2100-01-01.
MIN_TS = 631_152_000.0
MAX_TS = 4_102_444_800.0

EventType = Literal["view", "click", "add_to_cart", "purchase"]
Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LEN, pattern=r"^[\w.:-]+$")]
Timestamp = Annotated[float, Field(ge=MIN_TS, le=MAX_TS, allow_inf_nan=False)]


class InvalidMessage(ValueError):
    """A message that does not satisfy its topic's contract; ``reason`` is short and human-readable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Contract(BaseModel):
    # Strict: "k": true or "ts": "1700000000" are errors, not silently coerced (ints still pass as floats).
    model_config = ConfigDict(frozen=True, extra="ignore", strict=True, str_strip_whitespace=True)

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


AttributeValue = str | int | float | bool | None


class Item(Contract):
    item_id: Id
    title: str = Field(min_length=1, max_length=MAX_TITLE_LEN)
    text: str = Field(default="", max_length=MAX_TEXT_LEN)
    categories: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=MAX_CATEGORIES
    )
    attributes: dict[str, AttributeValue] = Field(default_factory=dict, max_length=MAX_ATTRIBUTES)
    updated_at: Timestamp

    @field_validator("attributes")
    @classmethod
    def _finite(cls, value: dict[str, AttributeValue]) -> dict[str, AttributeValue]:
        for key, v in value.items():
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"attribute {key!r} is not a finite number")
            if isinstance(v, str) and len(v) > 256:
                raise ValueError(f"attribute {key!r} is longer than 256 characters")
        return value


class Event(Contract):
    event_id: Id
    user_id: Id
    item_id: Id
    type: EventType
    ts: Timestamp
    session_id: Id | None = None
    request_id: Id | None = None


class Query(Contract):
    request_id: Id
    user_id: Id
    text: str = Field(default="", max_length=MAX_QUERY_LEN)
    ts: Timestamp
    k: int = Field(default=10, ge=1, le=MAX_K)


class RecommendedItem(Contract):
    item_id: str
    score: float
    rank: int
    reason: str
    # The probability that the exploration policy showed this item in this slot; absent from the
    # JSON (not null) when exploration is off, so consumers see today's shape.
    propensity: float | None = None

    @model_serializer(mode="wrap")
    def _omit_absent_propensity(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("propensity") is None:
            data.pop("propensity", None)
        return data


class ModelInfo(Contract):
    name: str
    version: str


class Recommendation(Contract):
    request_id: str
    user_id: str
    items: list[RecommendedItem]
    model: ModelInfo
    fallback: bool
    produced_at: float
    latency_ms: float
    variant: str = "control"
    trigger: Literal["query", "event"] = "query"


Outcome = Literal["none", "view", "click", "add_to_cart", "purchase"]
# How strong each outcome is: an example's label is the strongest outcome seen within the window.
OUTCOME_STRENGTH: dict[str, int] = {"none": 0, "view": 1, "click": 2, "add_to_cart": 3, "purchase": 4}


class ShownItem(Contract):
    """One shown item as the ranker saw it: the logged features make the example trainable later
    without recomputing them from state that has moved on (no training/serving skew)."""

    item_id: str
    rank: int
    score: float
    propensity: float = 1.0
    features: list[float]  # stream.features.FEATURE_NAMES order


class Impression(Contract):
    """What was shown for one request: the impression log the feedback join reads (docs/learning-loop.md)."""

    request_id: str
    user_id: str
    ts: float  # the request's time: outcomes count from here
    variant: str
    model: ModelInfo
    fallback: bool
    context: str  # the text the ranker read for the user (stream.text.user_text)
    items: list[ShownItem]


class TrainingExample(Contract):
    """One shown item with its label, written when its impression's window closes."""

    request_id: str
    user_id: str
    item_id: str
    rank: int
    score: float
    propensity: float
    features: list[float]
    context: str
    variant: str
    model: ModelInfo
    fallback: bool
    shown_at: float
    outcome: Outcome  # the strongest outcome within the window
    outcome_at: float | None
    label: int  # 1 when the outcome is a click or stronger

    @property
    def key(self) -> str:
        return f"{self.request_id}:{self.item_id}"


ModelStatus = Literal["promoted", "refused", "retired"]


class ModelVersion(Contract):
    """The model registry (compacted topic ``model-versions``, key ``<model>:<version>``): only a
    ``promoted`` version is ever routed to."""

    model: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")]
    version: Annotated[str, Field(pattern=r"^[1-9][0-9]{0,8}$")]
    status: ModelStatus
    reason: str = ""
    metrics: dict[str, float] = Field(default_factory=dict)
    ts: float

    @property
    def key(self) -> str:
        return f"{self.model}:{self.version}"


class ErasureRequest(Contract):
    user_id: Id
    request_id: Id | None = None
    ts: Timestamp | None = None


class ErasureConfirmation(Contract):
    user_id: str
    request_id: str | None
    erased_at: float
    tables: list[str]


class DeadLetter(Contract):
    topic: str
    partition: int
    offset: int
    key: str | None
    reason: str
    raw: str  # the original bytes, base64-encoded (the first MAX_DEAD_LETTER_RAW of them)
    received_at: float
    raw_size: int = 0  # the original value's length in bytes
    raw_truncated: bool = False  # True when ``raw`` holds only the first MAX_DEAD_LETTER_RAW bytes


M = TypeVar("M", bound=Contract)


def parse(model: type[M], raw: bytes | None, key: bytes | None = None, key_field: str | None = None) -> M:
    """Parse raw topic bytes into ``model`` or raise ``InvalidMessage`` saying why.

    When ``key_field`` is given, the message key must equal that field of the body: a mismatch
    would put the user's state on the wrong partition.
    """
    if raw is None:
        raise InvalidMessage("empty message (no value)")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise InvalidMessage(f"message of {len(raw)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
    try:
        body: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage(f"not valid JSON/UTF-8: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidMessage(f"expected a JSON object, got {type(body).__name__}")
    try:
        record = model.model_validate(body)
    except ValidationError as exc:
        raise InvalidMessage(_summarise(exc)) from None
    if key_field is not None:
        expected = str(getattr(record, key_field))
        if key is None:
            raise InvalidMessage(f"message has no key; it must be the {key_field} ({expected!r})")
        got = key.decode("utf-8", errors="replace")
        if got != expected:
            raise InvalidMessage(f"message key {got[:64]!r} does not match {key_field} {expected!r}")
    return record


def _summarise(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
