"""bench/e2e.py reads the worker's event-loop lag for one load window from two /metrics readings."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from bench.e2e import loop_lag_bound_ms, loop_lag_counts
from stream.metrics import Metrics


def exported(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_the_window_quantile_counts_only_the_probes_between_two_readings() -> None:
    metrics = Metrics.create(CollectorRegistry())
    for _ in range(50):
        metrics.loop_lag.observe(0.3)  # before the window: a slow start-up
    before = loop_lag_counts(exported(metrics))
    for _ in range(99):
        metrics.loop_lag.observe(0.002)
    metrics.loop_lag.observe(0.04)
    after = loop_lag_counts(exported(metrics))
    assert loop_lag_bound_ms(before, after, 0.5) == 2.5
    assert loop_lag_bound_ms(before, after, 0.99) == 2.5
    assert loop_lag_bound_ms(before, after, 1.0) == 50.0
    assert loop_lag_bound_ms(after, after, 0.99) is None  # no probe in between
    metrics.loop_lag.observe(5.0)
    assert loop_lag_bound_ms(after, loop_lag_counts(exported(metrics)), 1.0) == float("inf")
