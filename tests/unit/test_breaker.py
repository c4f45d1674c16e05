"""The circuit breaker, driven by an injected clock; and how the ranker client uses it."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from stream.breaker import BreakerState, CircuitBreaker
from stream.metrics import Metrics
from stream.settings import load_settings
from workers.ranker_client import RankerClient, RankerUnavailable


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def breaker(clock: Clock, **kwargs: Any) -> CircuitBreaker:
    params: dict[str, Any] = {"failure_rate": 0.5, "window": 10, "min_calls": 5, "open_s": 5.0}
    params.update(kwargs)
    return CircuitBreaker(clock=clock, **params)


def record_all(b: CircuitBreaker, results: str) -> None:
    """``results`` is a string of ``s`` (success) and ``f`` (failure)."""
    for r in results:
        b.record(r == "s")


def trip(b: CircuitBreaker) -> None:
    record_all(b, "fffff")
    assert b.state is BreakerState.OPEN


def test_state_values_are_the_metric_encoding() -> None:
    assert (int(BreakerState.CLOSED), int(BreakerState.HALF_OPEN), int(BreakerState.OPEN)) == (0, 1, 2)


def test_starts_closed_and_lets_calls_through() -> None:
    b = breaker(Clock())
    assert b.state is BreakerState.CLOSED
    assert all(b.allow() for _ in range(100))


def test_no_trip_below_min_calls_even_if_all_fail() -> None:
    b = breaker(Clock())
    record_all(b, "ffff")
    assert b.state is BreakerState.CLOSED
    assert b.allow()
    b.record(False)
    assert b.state is BreakerState.OPEN
    assert not b.allow()


def test_trips_at_the_failure_rate_not_below() -> None:
    b = breaker(Clock())
    record_all(b, "sssff")  # 2/5 = 0.4
    assert b.state is BreakerState.CLOSED
    b.record(False)  # 3/6 = 0.5 ≥ 0.5
    assert b.state is BreakerState.OPEN


def test_only_the_window_counts() -> None:
    b = breaker(Clock(), window=4, min_calls=4)
    record_all(b, "fsss")  # 1/4
    b.record(False)  # window now s s s f: 1/4 — the first failure slid out
    assert b.state is BreakerState.CLOSED
    b.record(False)  # s s f f: 2/4
    assert b.state is BreakerState.OPEN


def test_a_failure_rate_below_the_threshold_never_trips() -> None:
    b = breaker(Clock())
    # One failure in three: any window of 10 holds at most 4 failures (0.4 < 0.5).
    record_all(b, "ssf" * 20)
    assert b.state is BreakerState.CLOSED
    assert b.allow()


def test_min_calls_is_capped_by_the_window() -> None:
    b = breaker(Clock(), window=3, min_calls=10)
    record_all(b, "fff")
    assert b.state is BreakerState.OPEN


def test_open_becomes_half_open_after_open_s() -> None:
    clock = Clock()
    b = breaker(clock, open_s=5.0)
    trip(b)
    clock.advance(4.999)
    assert b.state is BreakerState.OPEN
    assert not b.allow()
    clock.advance(0.001)
    assert b.state is BreakerState.HALF_OPEN


def test_half_open_lets_exactly_one_probe_through() -> None:
    clock = Clock()
    b = breaker(clock)
    trip(b)
    clock.advance(5.0)
    assert b.allow() is True
    assert [b.allow() for _ in range(10)] == [False] * 10
    assert b.state is BreakerState.HALF_OPEN
    clock.advance(100.0)  # time alone does not free a second probe while the first is out
    assert b.allow() is False


def test_probe_success_closes_with_a_clean_window() -> None:
    clock = Clock()
    b = breaker(clock)
    trip(b)
    clock.advance(5.0)
    assert b.allow()
    b.record(True)
    assert b.state is BreakerState.CLOSED
    assert all(b.allow() for _ in range(5))
    # The old failures were forgotten: four new failures are below min_calls.
    record_all(b, "ffff")
    assert b.state is BreakerState.CLOSED


def test_probe_failure_reopens_for_another_full_pause() -> None:
    clock = Clock()
    b = breaker(clock)
    trip(b)
    clock.advance(5.0)
    assert b.allow()
    clock.advance(1.0)
    b.record(False)
    assert b.state is BreakerState.OPEN
    assert not b.allow()
    clock.advance(4.9)  # 4.9 s after the probe failed: still open
    assert b.state is BreakerState.OPEN
    clock.advance(0.1)
    assert b.state is BreakerState.HALF_OPEN
    assert b.allow()  # a new probe is allowed in the new half-open period


def test_trip_clears_the_window() -> None:
    clock = Clock()
    b = breaker(clock)
    trip(b)
    clock.advance(5.0)
    b.allow()
    b.record(True)
    b.record(False)  # one failure after closing, alone in the window
    assert b.state is BreakerState.CLOSED


def test_late_failures_while_open_do_not_extend_the_pause() -> None:
    clock = Clock()
    b = breaker(clock, open_s=5.0)
    trip(b)  # at t = 0
    clock.advance(4.0)
    # Five calls that were allowed (or queued on the client's semaphore) before the trip now time out.
    record_all(b, "fffff")
    clock.advance(1.0)  # 5 s after the trip
    assert b.state is BreakerState.HALF_OPEN


# --- the ranker client's use of the breaker ---------------------------------------------------------------


class _FakeResponse:
    model_version = "7"


class _FakeResult:
    def __init__(self, array: np.ndarray) -> None:
        self._array = array

    def as_numpy(self, name: str) -> np.ndarray:
        return self._array

    def get_response(self) -> _FakeResponse:
        return _FakeResponse()


class _FakeTriton:
    """Stands in for ``tritonclient.grpc.aio.InferenceServerClient``: answers every infer."""

    def __init__(self) -> None:
        self.calls = 0

    async def infer(self, model: str, inputs: list[Any], **kwargs: Any) -> _FakeResult:
        self.calls += 1
        rows = inputs[0].shape()[0]
        return _FakeResult(np.ones((rows, 4), dtype=np.float32))


def client_in_half_open(clock: Clock) -> tuple[RankerClient, _FakeTriton, CircuitBreaker]:
    settings = load_settings(_env_file=None)
    client = RankerClient(settings, Metrics.create())
    fake = _FakeTriton()
    client._client = fake
    b = CircuitBreaker(failure_rate=0.5, window=10, min_calls=5, open_s=5.0, clock=clock)
    client.breakers[settings.encoder_model] = b
    trip(b)
    clock.advance(5.0)
    assert b.state is BreakerState.HALF_OPEN
    return client, fake, b


async def test_client_probe_success_closes_the_breaker() -> None:
    clock = Clock()
    client, fake, b = client_in_half_open(clock)
    vectors = await client.embed(["hello"], time.monotonic() + 5.0)
    assert vectors.shape == (1, 4)
    assert fake.calls == 1
    assert b.state is BreakerState.CLOSED


async def test_client_refuses_while_open_without_calling_triton() -> None:
    clock = Clock()
    client, fake, b = client_in_half_open(clock)
    b.allow()  # someone else holds the probe
    with pytest.raises(RankerUnavailable) as info:
        await client.embed(["hello"], time.monotonic() + 5.0)
    assert info.value.cause == "breaker_open"
    assert fake.calls == 0


async def test_client_probe_aborted_by_the_deadline_does_not_wedge_the_breaker() -> None:
    clock = Clock()
    client, fake, b = client_in_half_open(clock)
    with pytest.raises(RankerUnavailable) as info:
        await client.embed(["hello"], time.monotonic() - 1.0)  # no time left
    assert info.value.cause == "deadline"
    assert fake.calls == 0
    assert b.state is not BreakerState.CLOSED  # nothing reached Triton: no evidence it recovered
    clock.advance(60.0)  # long after: the ranker must get a chance again
    vectors = await client.embed(["hello"], time.monotonic() + 5.0)
    assert fake.calls == 1
    assert vectors.shape == (1, 4)
