"""``RankerClient`` against a fake transport at the tritonclient boundary.

The fake stands in for ``tritonclient.grpc.aio.InferenceServerClient`` only: it reads the real
``InferInput`` tensors the client builds (their serialised bytes, as Triton would) and answers with
real ``InferResult`` objects made from a ``ModelInferResponse``. Packing, order, deadlines, retries
and the breaker are therefore the client's own code, not mocks of it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from tritonclient.grpc import InferResult, service_pb2
from tritonclient.utils import InferenceServerException, deserialize_bytes_tensor

from stream.breaker import BreakerState
from stream.features import N_FEATURES
from stream.metrics import Metrics
from stream.settings import Settings, load_settings
from workers import ranker_client
from workers.ranker_client import RankerClient, RankerUnavailable, RankRequest

UNAVAILABLE = "StatusCode.UNAVAILABLE"


@dataclass
class Call:
    model: str
    inputs: dict[str, np.ndarray]
    client_timeout: float
    at: float  # monotonic time the call reached the transport
    version: str


@dataclass
class FakeTriton:
    """The grpc aio client's ``infer``: decodes the request tensors, answers like the ranker/encoder.

    Ranker: a row's score is parsed from its ITEM text (``"<n>"`` → n) plus its first feature, so a
    test can tell which row a score came from. Encoder: row r of a call is ``[len(text), r]``.
    ``failures`` are raised by the next calls, in order; ``delay_s`` holds each call that long.
    """

    failures: list[BaseException] = field(default_factory=list)
    delay_s: float = 0.0
    calls: list[Call] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    closed: bool = False

    async def infer(
        self,
        model_name: str,
        inputs: list[Any],
        model_version: str = "",
        outputs: Any = None,
        client_timeout: float | None = None,
        **_: Any,
    ) -> InferResult:
        assert client_timeout is not None, "every call must carry a deadline"
        decoded = {inp.name(): _decode(inp) for inp in inputs}
        self.calls.append(Call(model_name, decoded, client_timeout, time.monotonic(), model_version))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.failures:
                raise self.failures.pop(0)
        finally:
            self.in_flight -= 1
        if model_name == "encoder":
            texts = decoded["TEXT"].reshape(-1)
            vectors = np.array([[len(t), r] for r, t in enumerate(texts)], dtype=np.float32)
            return _result(model_name, "EMBEDDING", vectors)
        items = decoded["ITEM"].reshape(-1)
        scores = np.array([float(t) for t in items], dtype=np.float32) + decoded["FEATURES"][:, 0]
        return _result(model_name, "SCORE", scores.reshape(-1, 1))

    async def close(self) -> None:
        self.closed = True


def _decode(inp: Any) -> np.ndarray:
    raw = inp._get_content()
    shape = list(inp.shape())
    if inp.datatype() == "BYTES":
        return np.array([b.decode() for b in deserialize_bytes_tensor(raw)], dtype=object).reshape(shape)
    assert inp.datatype() == "FP32"
    return np.frombuffer(raw, dtype=np.float32).reshape(shape)


def _result(model: str, name: str, array: np.ndarray) -> InferResult:
    response = service_pb2.ModelInferResponse(model_name=model, model_version="3")
    out = response.outputs.add()
    out.name, out.datatype = name, "FP32"
    out.shape.extend(array.shape)
    response.raw_output_contents.append(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    return InferResult(response)


def settings(**overrides: Any) -> Settings:
    return load_settings(_env_file=None, **overrides)


async def started(fake: FakeTriton, **overrides: Any) -> RankerClient:
    urls: list[str] = []

    def connect(url: str) -> FakeTriton:
        urls.append(url)
        return fake

    client = RankerClient(settings(**overrides), Metrics.create(), connect=connect)
    await client.start()
    assert urls == [client.settings.triton_grpc_url]
    return client


def request(query: str, first: int, n: int) -> RankRequest:
    """``n`` rows whose scores will be ``first .. first+n-1`` (ITEM texts are the numbers)."""
    features = np.zeros((n, N_FEATURES), dtype=np.float32)
    return RankRequest(query, [str(first + j) for j in range(n)], features)


def soon(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


# --- packing ---------------------------------------------------------------------------------------------


async def test_many_requests_are_packed_into_one_call_and_scores_come_back_in_order() -> None:
    fake = FakeTriton()
    client = await started(fake)
    requests = [request(f"q{r}", 1000 * r, 5 + r) for r in range(10)]  # 95 rows in all
    result = await client.rank(requests, soon())
    assert len(fake.calls) == 1
    [call] = fake.calls
    assert call.model == "ranker"
    # Each row carries its own request's query text, in request order.
    expected_queries = [f"q{r}" for r in range(10) for _ in range(5 + r)]
    assert call.inputs["QUERY"].reshape(-1).tolist() == expected_queries
    assert call.inputs["FEATURES"].shape == (95, N_FEATURES)
    for r, scores in enumerate(result.scores):
        assert scores.tolist() == [1000 * r + j for j in range(5 + r)]
    assert result.model_version == "3"


async def test_rows_over_the_bound_are_split_and_reassembled_across_the_boundary() -> None:
    fake = FakeTriton()
    client = await started(fake)
    # 7 requests of 50 rows: 350 rows → calls of 256 and 94; request 5 straddles the two calls.
    requests = [request(f"q{r}", 1000 * r, 50) for r in range(7)]
    result = await client.rank(requests, soon())
    assert sorted(len(c.inputs["ITEM"]) for c in fake.calls) == [94, 256]
    assert all(len(c.inputs["ITEM"]) <= client.settings.ranker_max_rows for c in fake.calls)
    for r, scores in enumerate(result.scores):
        assert scores.tolist() == [1000 * r + j for j in range(50)]


async def test_the_row_bound_comes_from_settings() -> None:
    fake = FakeTriton()
    client = await started(fake, ranker_max_rows=16)
    result = await client.rank([request("q", 0, 40), request("p", 500, 9)], soon())
    assert sorted(len(c.inputs["ITEM"]) for c in fake.calls) == [1, 16, 16, 16]
    assert result.scores[0].tolist() == list(range(40))
    assert result.scores[1].tolist() == list(range(500, 509))


async def test_features_travel_with_their_rows() -> None:
    fake = FakeTriton()
    client = await started(fake, ranker_max_rows=4)
    features = np.zeros((6, N_FEATURES), dtype=np.float32)
    features[:, 0] = [0.5, 0.25, 0.125, 2, 4, 8]
    result = await client.rank([RankRequest("q", ["0", "10", "20", "30", "40", "50"], features)], soon())
    assert result.scores[0].tolist() == [0.5, 10.25, 20.125, 32, 44, 58]


async def test_requests_without_candidates_keep_their_place_and_an_empty_batch_makes_no_call() -> None:
    fake = FakeTriton()
    client = await started(fake)
    empty = RankRequest("q", [], np.zeros((0, N_FEATURES), dtype=np.float32))
    result = await client.rank([request("a", 0, 2), empty, request("b", 10, 1)], soon())
    assert [s.tolist() for s in result.scores] == [[0, 1], [], [10]]
    fake.calls.clear()
    nothing = await client.rank([empty, empty], soon())
    assert fake.calls == []
    assert [s.size for s in nothing.scores] == [0, 0]
    assert nothing.model_version == ""


async def test_calls_in_flight_are_bounded_by_the_concurrency_setting() -> None:
    fake = FakeTriton(delay_s=0.02)
    client = await started(fake, ranker_max_rows=10, ranker_concurrency=2)
    result = await client.rank([request("q", 0, 60)], soon())  # 6 calls
    assert len(fake.calls) == 6
    assert fake.max_in_flight == 2
    assert result.scores[0].tolist() == list(range(60))


async def test_a_lone_request_is_sent_at_once_not_held_to_fill_a_batch() -> None:
    # The client never waits for more work: the bounded batching wait is the query agent's
    # ``take_events(query_batch_max, within=query_batch_within_s)``; here a call goes out at once.
    fake = FakeTriton()
    client = await started(fake)
    before = time.monotonic()
    await client.rank([request("q", 0, 1)], soon())
    assert fake.calls[0].at - before < 0.05


async def test_embed_sends_the_texts_to_the_encoder_in_order() -> None:
    fake = FakeTriton()
    client = await started(fake)
    vectors = await client.embed(["a", "bbb", "cc"], soon())
    assert fake.calls[0].model == "encoder"
    assert fake.calls[0].inputs["TEXT"].reshape(-1).tolist() == ["a", "bbb", "cc"]
    assert vectors.tolist() == [[1, 0], [3, 1], [2, 2]]


async def test_the_requested_ranker_version_is_passed_through() -> None:
    fake = FakeTriton()
    client = await started(fake)
    await client.rank([request("q", 0, 1)], soon(), version="2")
    assert fake.calls[0].version == "2"


async def test_close_closes_the_transport_and_calls_after_it_fail_fast() -> None:
    fake = FakeTriton()
    client = await started(fake)
    await client.close()
    assert fake.closed
    with pytest.raises(RankerUnavailable) as info:
        await client.rank([request("q", 0, 1)], soon())
    assert info.value.cause == "not_started"
    assert fake.calls == []


# --- deadlines -------------------------------------------------------------------------------------------


async def test_client_timeout_is_what_is_left_of_the_deadline() -> None:
    fake = FakeTriton()
    client = await started(fake, ranker_max_rows=8)
    before = time.monotonic()
    deadline = before + 0.2
    await client.rank([request("q", 0, 20)], deadline)
    assert len(fake.calls) == 3
    for call in fake.calls:
        # Each call is told the time left just before it was sent: not the whole budget again.
        assert deadline - call.at <= call.client_timeout <= deadline - before


async def test_no_call_is_made_once_the_deadline_has_passed() -> None:
    fake = FakeTriton()
    client = await started(fake)
    for deadline in (time.monotonic() - 1.0, time.monotonic()):
        with pytest.raises(RankerUnavailable) as info:
            await client.rank([request("q", 0, 3)], deadline)
        assert info.value.cause == "deadline"
    with pytest.raises(RankerUnavailable):
        await client.embed(["x"], time.monotonic() - 1.0)
    assert fake.calls == []


async def test_a_slow_triton_is_abandoned_at_the_deadline() -> None:
    fake = FakeTriton(delay_s=1.0)
    client = await started(fake)
    before = time.monotonic()
    with pytest.raises(RankerUnavailable) as info:
        await client.rank([request("q", 0, 3)], before + 0.05)
    assert info.value.cause == "deadline"
    assert time.monotonic() - before < 0.5


async def test_time_spent_waiting_for_a_slot_counts_against_the_deadline() -> None:
    fake = FakeTriton(delay_s=0.3)
    client = await started(fake, ranker_concurrency=1)
    holder = asyncio.create_task(client.rank([request("slow", 0, 1)], soon()))
    await asyncio.sleep(0.01)  # the slow call holds the only slot
    before = time.monotonic()
    with pytest.raises(RankerUnavailable) as info:
        await client.rank([request("late", 0, 1)], before + 0.05)
    assert info.value.cause == "deadline"
    assert time.monotonic() - before < 0.2
    assert [c.inputs["QUERY"].reshape(-1).tolist() for c in fake.calls] == [["slow"]]
    await holder


async def test_triton_reporting_deadline_exceeded_is_a_deadline_failure() -> None:
    fake = FakeTriton(
        failures=[InferenceServerException("Deadline Exceeded", "StatusCode.DEADLINE_EXCEEDED")]
    )
    client = await started(fake)
    with pytest.raises(RankerUnavailable) as info:
        await client.rank([request("q", 0, 1)], soon())
    assert info.value.cause == "deadline"
    assert len(fake.calls) == 1  # out of time is not retried


# --- retries ---------------------------------------------------------------------------------------------


async def test_a_refused_call_is_retried_after_a_pause_and_succeeds() -> None:
    fake = FakeTriton(failures=[InferenceServerException("connection refused", UNAVAILABLE)])
    client = await started(fake)
    deadline = soon(1.0)
    result = await client.rank([request("q", 0, 2)], deadline)
    assert result.scores[0].tolist() == [0, 1]
    first, second = fake.calls
    assert second.at - first.at >= ranker_client.RETRY_BACKOFF_S
    assert second.client_timeout < first.client_timeout  # the same deadline, less of it left


async def test_a_dropped_connection_is_retried_too() -> None:
    fake = FakeTriton(failures=[ConnectionResetError("reset by peer")])
    client = await started(fake)
    vectors = await client.embed(["ab"], soon())
    assert vectors.tolist() == [[2, 0]]
    assert len(fake.calls) == 2


async def test_retries_back_off_and_stop_after_the_last_attempt() -> None:
    attempts = ranker_client.RETRY_ATTEMPTS
    fake = FakeTriton(failures=[InferenceServerException("down", UNAVAILABLE) for _ in range(attempts + 5)])
    client = await started(fake)
    with pytest.raises(RankerUnavailable) as info:
        await client.rank([request("q", 0, 1)], soon())
    assert info.value.cause == "triton_error"
    assert len(fake.calls) == attempts
    gaps = [b.at - a.at for a, b in zip(fake.calls, fake.calls[1:], strict=False)]
    assert gaps[1] >= 2 * ranker_client.RETRY_BACKOFF_S  # the pause doubles
    assert gaps[1] > gaps[0]


async def test_no_retry_that_the_deadline_has_no_room_for() -> None:
    fake = FakeTriton(failures=[InferenceServerException("down", UNAVAILABLE) for _ in range(10)])
    client = await started(fake)
    before = time.monotonic()
    deadline = before + ranker_client.RETRY_BACKOFF_S + ranker_client.MIN_ATTEMPT_S / 2
    with pytest.raises(RankerUnavailable):
        await client.rank([request("q", 0, 1)], deadline)
    assert len(fake.calls) == 1  # a pause would have left less than a call's worth of time
    assert time.monotonic() < deadline + 0.05
    assert all(c.at < deadline for c in fake.calls)


@pytest.mark.parametrize(
    "error",
    [
        InferenceServerException("FEATURES holds NaN or inf", "StatusCode.INVALID_ARGUMENT"),
        InferenceServerException("model failed", "StatusCode.INTERNAL"),
    ],
)
async def test_errors_from_the_model_are_not_retried(error: InferenceServerException) -> None:
    fake = FakeTriton(failures=[error])
    client = await started(fake)
    with pytest.raises(RankerUnavailable) as info:
        await client.rank([request("q", 0, 1)], soon())
    assert info.value.cause == "triton_error"
    assert len(fake.calls) == 1


# --- the breaker -----------------------------------------------------------------------------------------


def refusals(n: int) -> list[BaseException]:
    return [InferenceServerException("down", UNAVAILABLE) for _ in range(n)]


async def test_failures_open_the_breaker_and_then_no_call_reaches_triton() -> None:
    fake = FakeTriton(failures=[InferenceServerException("bad", "StatusCode.INTERNAL") for _ in range(5)])
    client = await started(fake, breaker_window=5, breaker_failure_rate=0.5, breaker_open_s=60.0)
    for _ in range(5):
        with pytest.raises(RankerUnavailable):
            await client.rank([request("q", 0, 1)], soon())
    assert client.breaker_state() is BreakerState.OPEN
    with pytest.raises(RankerUnavailable) as info:
        await client.rank([request("q", 0, 1)], soon())
    assert info.value.cause == "breaker_open"
    assert len(fake.calls) == 5
    # The encoder has its own breaker: catalog embeddings still go through.
    assert client.breaker_state("encoder") is BreakerState.CLOSED
    assert (await client.embed(["x"], soon())).shape == (1, 2)


async def test_each_retried_attempt_counts_towards_the_breaker_and_retries_stop_when_it_opens() -> None:
    fake = FakeTriton(failures=refusals(100))
    client = await started(fake, breaker_window=5, breaker_failure_rate=0.5, breaker_open_s=60.0)
    calls_per_rank = []
    for _ in range(3):
        before = len(fake.calls)
        with pytest.raises(RankerUnavailable):
            await client.rank([request("q", 0, 1)], soon())
        calls_per_rank.append(len(fake.calls) - before)
    # 3 attempts, then 2 more opened the breaker (5 failures of 5): the third rank made no call.
    assert calls_per_rank == [3, 2, 0]
    assert client.breaker_state() is BreakerState.OPEN


async def test_a_successful_probe_after_the_pause_closes_the_breaker() -> None:
    now = [1000.0]
    clock: Callable[[], float] = lambda: now[0]  # noqa: E731
    fake = FakeTriton(failures=[InferenceServerException("bad", "StatusCode.INTERNAL") for _ in range(5)])
    client = await started(fake, breaker_window=5, breaker_open_s=5.0)
    breaker = client.breakers["ranker"]
    breaker._clock = clock
    for _ in range(5):
        with pytest.raises(RankerUnavailable):
            await client.rank([request("q", 0, 1)], soon())
    assert client.breaker_state() is BreakerState.OPEN
    now[0] += 5.0
    assert client.breaker_state() is BreakerState.HALF_OPEN
    result = await client.rank([request("q", 7, 1)], soon())
    assert result.scores[0].tolist() == [7]
    assert client.breaker_state() is BreakerState.CLOSED
    assert client.recoveries == 1


async def test_a_slow_server_is_not_counted_as_a_restart() -> None:
    # Deadlines open the breaker but say nothing about Triton's caches: no re-priming of the catalog
    # (stream.agents.maintenance) after an overload. A server that refused connections does count.
    now = [1000.0]
    clock: Callable[[], float] = lambda: now[0]  # noqa: E731
    slow = [InferenceServerException("Deadline Exceeded", "StatusCode.DEADLINE_EXCEEDED") for _ in range(5)]
    fake = FakeTriton(failures=slow)
    client = await started(fake, breaker_window=5, breaker_open_s=5.0)
    client.breakers["ranker"]._clock = clock
    for _ in range(5):
        with pytest.raises(RankerUnavailable) as info:
            await client.rank([request("q", 0, 1)], soon())
        assert info.value.cause == "deadline"
    assert client.breaker_state() is BreakerState.OPEN
    now[0] += 5.0
    await client.rank([request("q", 1, 1)], soon())
    assert client.breaker_state() is BreakerState.CLOSED
    assert client.recoveries == 0

    # A refusal answered by the retry leaves the breaker closed: nothing to re-prime.
    fake.failures.append(InferenceServerException("connection refused", UNAVAILABLE))
    await client.rank([request("q", 1, 1)], soon())
    assert client.recoveries == 0
    # Refused until the breaker opens (Triton down), then answered again: a restart, caches cold.
    fake.failures.extend(InferenceServerException("connection refused", UNAVAILABLE) for _ in range(20))
    while client.breaker_state() is not BreakerState.OPEN:
        with pytest.raises(RankerUnavailable):
            await client.rank([request("q", 1, 1)], soon())
    fake.failures.clear()
    now[0] += 5.0
    await client.rank([request("q", 1, 1)], soon())
    assert client.breaker_state() is BreakerState.CLOSED
    assert client.recoveries == 1


async def test_a_failing_version_opens_only_its_own_breaker() -> None:
    fake = FakeTriton(failures=[InferenceServerException("no v2", "StatusCode.NOT_FOUND") for _ in range(5)])
    client = await started(fake, breaker_window=5, breaker_failure_rate=0.5, breaker_open_s=60.0)
    for _ in range(5):
        with pytest.raises(RankerUnavailable):
            await client.rank([request("q", 0, 1)], soon(), version="2")
    assert client.breaker_state(version="2") is BreakerState.OPEN
    assert {c.version for c in fake.calls} == {"2"}
    # Version 1's arm (and the configured default) still rank.
    assert client.breaker_state(version="1") is BreakerState.CLOSED
    assert (await client.rank([request("q", 4, 1)], soon(), version="1")).scores[0].tolist() == [4]
    assert fake.calls[-1].version == "1"
    assert client.breaker_state() is BreakerState.CLOSED
    labels = {
        s.labels["model"] for m in client.metrics.registry.collect() for s in m.samples if "breaker" in s.name
    }
    assert {"ranker:2", "ranker:1"} <= labels
