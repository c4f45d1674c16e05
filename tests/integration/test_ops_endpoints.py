"""The worker's ops endpoints during a real run: /health, /ready, /metrics counters and consumer lag, and
every metric the Grafana dashboard and the alert rules query is one the worker or Triton really exports."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from stream.records import Query
from stream.settings import ROOT, Settings
from tests.support.stack import isolated_env, read_json_topic, wait_for
from tests.unit.test_deploy_files import dashboard_targets, promql_selectors
from workers.kafka_clients import producer
from workers.replay import plan, publish_items, publish_stream
from workers.supervisor import WorkerProcess, metric_value, settings_for

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "streamrec.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
CONSUMED = ("items", "events", "queries", "user-erasure", "item-activity")

# (topic, key, value, expected dead-letter reason label)
MALFORMED: list[tuple[str, bytes | None, bytes | None, str]] = [
    ("events", b"u1", b"{not json", "json"),
    (
        "events",
        b"u2",
        b'{"event_id": "bad-1", "user_id": "u1", "item_id": "50", "type": "view", "ts": 1.8e9}',
        "key_mismatch",
    ),
    (
        "queries",
        b"u1",
        b'{"request_id": "bad-q1", "user_id": "u1", "text": "x", "ts": 1.8e9, "k": 1000}',
        "schema",
    ),
    ("queries", b"u1", None, "empty"),
]


def _get(port: int, path: str) -> tuple[int | None, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())
    except (urllib.error.URLError, OSError):
        return None, b""


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of ``name`` in a Prometheus exposition."""
    out = []
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        metric, _, labels = head.partition("{")
        if line.startswith("#") or metric != name:
            continue
        out.append((dict(re.findall(r'(\w+)="([^"]*)"', labels)), float(value)))
    return out


def exported_names(text: str) -> set[str]:
    """Metric names a scrape exports: sample names, plus declared families (a labelled metric with no
    child yet has only its # TYPE line), histograms and summaries with their _bucket/_sum/_count."""
    names = {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")
    }
    for kind_line in re.finditer(r"^# TYPE (\S+) (\w+)$", text, re.MULTILINE):
        name, kind = kind_line.groups()
        names.add(name)
        if kind in ("histogram", "summary"):
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


@dataclass
class Run:
    settings: Settings
    worker: WorkerProcess
    events: int
    queries: int
    before_ready: list[tuple[int | None, bytes]]
    ready_body: bytes
    health: list[int | None] = field(default_factory=list)
    lag_seen: list[float] = field(default_factory=list)
    recommendations: list[dict[str, Any]] = field(default_factory=list)
    final_metrics: str = ""


class _Poller(threading.Thread):
    """Polls /health and the consumer-lag gauge while the replay runs."""

    def __init__(self, run: Run) -> None:
        super().__init__(daemon=True)
        self.run_ = run
        self.stop = threading.Event()

    def run(self) -> None:
        port = self.run_.worker.web_port
        while not self.stop.is_set():
            self.run_.health.append(_get(port, "/health")[0])
            lag = _samples(self.run_.worker.metrics(), "streamrec_consumer_lag")
            self.run_.lag_seen.append(sum(v for _, v in lag))
            time.sleep(0.5)


async def _send_raw(settings: Settings) -> None:
    prod = producer(settings)
    await prod.start()
    try:
        for topic, key, value, _ in MALFORMED:
            await prod.send(settings.topic(topic), key=key, value=value)
        await prod.flush()
    finally:
        await prod.stop()


@pytest.fixture(scope="module")
def run(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("ops")
    settings = settings_for(env := isolated_env(tmp))
    worker = WorkerProcess(env, tmp / "worker.log").start()
    try:
        # Until ready, /ready answers 503 (or nothing while the web server starts), never a false 200.
        before: list[tuple[int | None, bytes]] = []
        deadline = time.monotonic() + 90
        while (answer := _get(worker.web_port, "/ready"))[0] != 200:
            assert time.monotonic() < deadline, f"worker not ready:\n{worker.tail()}"
            assert worker.alive(), worker.tail()
            before.append(answer)
            time.sleep(0.2)
        replay = plan(1200, 120, seed=17)
        asyncio.run(publish_items(settings, replay.items))
        worker.wait_ready(catalog_items=len(replay.items))
        queries = [m for m in replay.stream if isinstance(m, Query)]
        result = Run(settings, worker, len(replay.stream) - len(queries), len(queries), before, answer[1])

        poller = _Poller(result)
        poller.start()
        try:
            # ~12 s of traffic, so that several lag reports (every 5 s) fall inside it.
            asyncio.run(publish_stream(settings, replay.stream, max_rate=110))
            asyncio.run(_send_raw(settings))
            wait_for(
                lambda: len(read_json_topic(settings, "recommendations")) >= len(queries),
                timeout_s=120,
                interval_s=2,
                what="all queries answered",
            )
            wait_for(
                lambda: (
                    metric_value(worker.metrics(), "streamrec_events_total") >= result.events
                    and metric_value(worker.metrics(), "streamrec_dead_letters_total") >= len(MALFORMED)
                ),
                timeout_s=60,
                what="all events and dead letters counted",
            )
            result.recommendations = read_json_topic(settings, "recommendations")

            def lag_settled() -> bool:
                lag = _samples(worker.metrics(), "streamrec_consumer_lag")
                return bool(lag) and all(v == 0 for _, v in lag)

            wait_for(lag_settled, timeout_s=40, interval_s=1, what="consumer lag back to 0")
        finally:
            poller.stop.set()
            poller.join(5)
        result.final_metrics = worker.metrics()
        yield result
    finally:
        worker.stop()


def test_health_answers_throughout_and_ready_means_ready(run: Run) -> None:
    assert run.health and all(status == 200 for status in run.health), run.health
    assert all(status in (None, 503) for status, _ in run.before_ready)
    for status, body in run.before_ready:
        if status == 503:
            assert json.loads(body)["ready"] is False
    ready = json.loads(run.ready_body)
    assert ready["ready"] is True and ready["recovered"] is True and ready["rebalancing"] is False
    assert ready["assigned_partitions"] > 0
    status, body = _get(run.worker.web_port, "/health")
    assert (status, json.loads(body)) == (200, {"status": "ok"})


def test_counters_move_by_what_was_sent(run: Run) -> None:
    text = run.final_metrics
    assert metric_value(text, "streamrec_events_total") == run.events
    assert metric_value(text, "streamrec_events_total", {"type": "purchase"}) == run.events
    assert metric_value(text, "streamrec_queries_total") == run.queries
    # Exactly one recommendation per query on the topic, and the counter agrees with the topic.
    assert len({r["request_id"] for r in run.recommendations}) == run.queries == len(run.recommendations)
    assert metric_value(text, "streamrec_recommendations_total") == len(run.recommendations)
    fallbacks = sum(1 for r in run.recommendations if r["fallback"])
    assert metric_value(text, "streamrec_recommendations_total", {"fallback": "true"}) == fallbacks
    assert metric_value(text, "streamrec_e2e_latency_seconds_count") == len(run.recommendations)

    assert metric_value(text, "streamrec_dead_letters_total") == len(MALFORMED)
    assert metric_value(text, "streamrec_invalid_events_total") == len(MALFORMED)
    expected: dict[tuple[str, str], int] = {}
    for topic, _, _, reason in MALFORMED:
        expected[(topic, reason)] = expected.get((topic, reason), 0) + 1
    found = {
        (labels["topic"], labels["reason"]): value
        for labels, value in _samples(text, "streamrec_dead_letters_total")
        if value
    }
    assert found == expected
    assert len(read_json_topic(run.settings, "dead-letters")) == len(MALFORMED)


def test_consumer_lag_per_partition(run: Run) -> None:
    lag = _samples(run.final_metrics, "streamrec_consumer_lag")
    series = {(labels["topic"], labels["partition"]) for labels, _ in lag}
    # Bounded labels: topic names without the prefix, partition numbers; no changelog topics.
    assert {topic for topic, _ in series} <= set(CONSUMED)
    partitions = {str(p) for p in range(run.settings.topic_partitions)}
    for topic in ("items", "events", "queries"):
        assert {p for t, p in series if t == topic} == partitions, topic
    assert all(value == 0 for _, value in lag), lag
    # While the replay ran, the worker reported messages not yet committed.
    assert max(run.lag_seen) > 0, run.lag_seen


def _expressions() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [(f"dashboard: {title}", target["expr"]) for title, target in dashboard_targets(dashboard)]
    rules = [r for group in yaml.safe_load(ALERTS.read_text())["groups"] for r in group["rules"]]
    return exprs + [(f"alert: {rule['alert']}", rule["expr"]) for rule in rules]


def test_dashboard_and_alerts_query_only_live_metrics(run: Run) -> None:
    url = f"http://{run.settings.triton_metrics_url}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        triton = resp.read().decode()
    worker_names = exported_names(run.final_metrics)
    triton_names = exported_names(triton)
    live = worker_names | triton_names | {"up"}  # `up` is the series Prometheus adds per target
    expressions = _expressions()
    assert len(expressions) > 20
    used: set[str] = set()
    for where, expr in expressions:
        names = {name for name, _ in promql_selectors(expr)}
        assert names, f"{where}: no metric found in {expr!r}"
        assert names <= live, f"{where}: not exported by the worker or Triton: {names - live}"
        used |= names
    # Both sources are really in use, and what the worker exports is really on the dashboard.
    assert {n for n in used if n.startswith("nv_")} and {n for n in used if n.startswith("streamrec_")}
    families = set(
        re.findall(r"^# TYPE (streamrec_\w+?) (?:counter|gauge|histogram)$", run.final_metrics, re.M)
    )
    on_dashboard = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used}
    assert {f for f in families if not f.endswith("_created")} <= on_dashboard | used


def test_the_event_loop_lag_is_measured(run: Run) -> None:
    # The probe wakes every 0.25 s for as long as the worker runs: the run lasted seconds.
    assert metric_value(run.final_metrics, "streamrec_event_loop_lag_seconds_count") >= 4
    assert metric_value(run.final_metrics, "streamrec_event_loop_lag_seconds_sum") >= 0.0
