"""The event-loop probe sees the time other work holds the loop."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry

from stream.looplag import probe
from stream.metrics import Metrics

HOLD_S = 0.2


async def test_a_loop_held_by_blocking_work_is_seen_as_late() -> None:
    seen: list[float] = []

    async def hold_the_loop() -> None:
        await asyncio.sleep(0.01)
        until = time.monotonic() + HOLD_S
        while time.monotonic() < until:  # a long pure-Python step: no await, every other task waits
            pass

    await asyncio.gather(probe(seen.append, interval_s=0.05, rounds=4), hold_the_loop())
    assert len(seen) == 4
    assert all(s >= 0.0 for s in seen)
    # The probe was due 0.05 s after it slept; the hold began at 0.01 s and lasted 0.2 s.
    assert max(seen) >= HOLD_S - 0.05 - 0.01


async def test_the_probe_feeds_the_bundle_histogram() -> None:
    metrics = Metrics.create(CollectorRegistry())
    await probe(metrics.loop_lag.observe, interval_s=0.01, rounds=3)
    count = metrics.registry.get_sample_value("streamrec_event_loop_lag_seconds_count")
    assert count == 3
