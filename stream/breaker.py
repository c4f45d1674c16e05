"""A circuit breaker: closed → open on a high failure rate over a window → half-open after a pause."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum


class BreakerState(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(frozen=True, slots=True)
class Permit:
    probe: bool


class CircuitBreaker:
    def __init__(
        self,
        failure_rate: float = 0.5,
        window: int = 20,
        min_calls: int = 5,
        open_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_rate = failure_rate
        self.min_calls = min(min_calls, window)
        self.open_s = open_s
        self._clock = clock
        self._results: deque[bool] = deque(maxlen=window)
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._probe_in_flight = False

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.open_s:
            self._state = BreakerState.HALF_OPEN
            self._probe_in_flight = False
        return self._state

    def allow(self) -> bool:
        """May a call go through now? In half-open, exactly one probe is let through at a time."""
        return self.acquire() is not None

    def acquire(self) -> Permit | None:
        """A permit for one call, or None when the call must not go through."""
        state = self.state
        if state is BreakerState.CLOSED:
            return Permit(probe=False)
        if state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return Permit(probe=True)
        return None

    def release(self, permit: Permit) -> None:
        """The call was abandoned before it reached the server: free the probe, record nothing."""
        if permit.probe:
            self._probe_in_flight = False

    def record(self, ok: bool, permit: Permit | None = None) -> None:
        """The outcome of a call. While open, late outcomes of calls admitted earlier are ignored;
        while half-open only the probe's outcome counts (``permit=None`` means "the probe")."""
        state = self.state
        if state is BreakerState.OPEN:
            return
        if state is BreakerState.HALF_OPEN:
            if permit is not None and not permit.probe:
                return
            self._probe_in_flight = False
            if ok:
                self._state = BreakerState.CLOSED
                self._results.clear()
            else:
                self._trip()
            return
        self._results.append(ok)
        failures = self._results.count(False)
        if len(self._results) >= self.min_calls and failures / len(self._results) >= self.failure_rate:
            self._trip()

    def _trip(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._results.clear()
