"""The demo report: summarize's numbers on a hand-built run, the files write_report leaves, escaping."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from stream.metrics import BATCH_BUCKETS, Metrics
from workers.report import PLOTS, DemoRun, bucket_bound, summarize, write_report

T0 = 1_700_000_000.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SCRIPT_TITLE = "<script>alert(1)</script>"
USERS = ("u1", "u2", "u3", "u5")  # u4 has the longest history but never gets a recommendation


def _worker_a() -> str:
    """A real exposition from the worker's metric bundle: ranker batches 1, 3, 3, 20; ingest 5, 100."""
    metrics = Metrics.create()
    for size in (1, 3, 3, 20):
        metrics.ranker_batch.observe(size)
    for size in (5, 100):
        metrics.ingest_batch.observe(size)
    metrics.fallbacks.labels(cause="deadline").inc(3)
    metrics.fallbacks.labels(cause="breaker_open").inc()
    metrics.fallbacks.labels(cause="triton_error")  # a label set seen with no fallback yet
    for lag in [0.0005] * 97 + [0.03, 0.3, 3.0]:
        metrics.loop_lag.observe(lag)
    return generate_latest(metrics.registry).decode()


def _worker_b() -> str:
    """A hand-written exposition: two ranker batches, of 64 and 1000 rows; no ingestion."""
    name = "streamrec_ranker_batch_size"
    lines = [f"# TYPE {name} histogram"]
    for le in BATCH_BUCKETS:
        lines.append(f'{name}_bucket{{le="{float(le)}"}} {float((le >= 64) + (le >= 1000))}')
    lines += [f'{name}_bucket{{le="+Inf"}} 2.0', f"{name}_count 2.0", f"{name}_sum 1064.0"]
    lines += ["# TYPE streamrec_fallbacks_total counter", 'streamrec_fallbacks_total{cause="deadline"} 2.0']
    return "\n".join(lines) + "\n"


def _rec(i: int) -> dict[str, Any]:
    """Recommendation i (1..50): latency i ms, the first five are fallbacks, five received per second."""
    fallback = i <= 5
    return {
        "request_id": "r1" if i == 50 else f"r{i}",  # r1 arrives twice
        "user_id": USERS[i % 4],
        "items": [
            {"item_id": item, "score": 1.0 - rank / 10, "rank": rank, "reason": f"because {i}"}
            for rank, item in enumerate(["m1", "m2", f"m{3 + i % 3}"], 1)
        ],
        "model": {"name": "fallback", "version": "0"} if fallback else {"name": "ranker", "version": "1"},
        "fallback": fallback,
        "produced_at": T0 + (i - 1) // 5 + 0.4,
        "latency_ms": float(i),
        "variant": "control",
        "trigger": "query",
        "received_at": T0 + (i - 1) // 5 + 0.5,
    }


def make_run() -> DemoRun:
    catalog = {
        f"m{i}": {"title": f"Movie {i} costs $5 (199{i})", "categories": ["Drama"]} for i in range(1, 12)
    }
    catalog["m1"]["title"] = SCRIPT_TITLE
    catalog["m2"]["title"] = "Toy Story (1995)"
    return DemoRun(
        started_at=T0,
        finished_at=T0 + 10.0,
        options={"events": 100, "queries": 20, "speed": 0, "max_rate": 500, "workers": 2},
        sent=[(T0 + i // 10 + 0.5, "event") for i in range(100)]
        + [(T0 + i // 2 + 0.25, "query") for i in range(20)],
        recommendations=[_rec(i) for i in range(1, 51)],
        dead_letters=3,
        worker_metrics=[_worker_a(), _worker_b()],
        catalog=catalog,
        histories={
            "u1": [f"m{i}" for i in range(1, 9)],
            "u2": [f"m{i}" for i in range(3, 9)],
            "u3": ["m9", "m10", "m11"],
            "u4": [f"m{i}" for i in range(1, 11)],
            "u5": ["m1"],
        },
        offline_metrics={
            "bert": {"ndcg@10": 0.3125, "recall@10": 0.5},
            "popularity": {"ndcg@10": 0.1, "recall@10": 0.2},
        },
    )


def empty_run() -> DemoRun:
    return DemoRun(T0, T0, {}, [], [], 0, [], {}, {}, None)


def test_counts_rates_and_latency_percentiles() -> None:
    s = summarize(make_run())
    assert (s["events"], s["queries"], s["dead_letters"]) == (100, 20, 3)
    assert (s["recommendations"], s["distinct_requests"], s["duplicates"]) == (50, 49, 1)
    assert s["fallbacks"] == 5
    assert s["fallback_share"] == pytest.approx(0.1)
    # Latencies 1..50 ms; linear interpolation at position (n - 1) * q = 49 * q.
    assert s["p50_ms"] == pytest.approx(25.5)  # halfway between 25 and 26
    assert s["p95_ms"] == pytest.approx(47.55)  # position 46.55: 47 + 0.55
    assert s["p99_ms"] == pytest.approx(49.51)  # position 48.51: 49 + 0.51
    assert s["max_ms"] == 50.0
    assert s["duration_s"] == pytest.approx(10.0)
    assert s["events_per_s"] == pytest.approx(10.0)
    assert s["recommendations_per_s"] == pytest.approx(5.0)
    assert s["models"] == {"fallback/0": 5, "ranker/1": 45}
    assert s["offline_metrics"]["bert"]["ndcg@10"] == 0.3125


def test_top_items_count_every_slot_and_carry_titles() -> None:
    top = summarize(make_run())["top_items"]
    # m1 and m2 are in all 50; the third slot is m3 for i % 3 == 0 (16 times), m4 and m5 17 times each.
    assert [(t["item_id"], t["count"]) for t in top] == [
        ("m1", 50),
        ("m2", 50),
        ("m4", 17),
        ("m5", 17),
        ("m3", 16),
    ]
    assert top[0]["title"] == SCRIPT_TITLE
    assert top[1]["title"] == "Toy Story (1995)"


def test_batch_histograms_are_summed_over_workers_per_bucket() -> None:
    s = summarize(make_run())
    ranker = s["batch_sizes"]
    # Worker A: 1, 3, 3, 20; worker B: 64, 1000.
    expected = {
        "1": 1,
        "2": 0,
        "4": 2,
        "8": 0,
        "16": 0,
        "32": 1,
        "64": 1,
        "128": 0,
        "256": 0,
        "512": 0,
        "1024": 1,
        "+Inf": 0,
    }
    assert ranker["buckets"] == expected
    assert list(ranker["buckets"]) == list(expected)  # ordered by bound
    assert ranker["count"] == 6
    assert ranker["mean"] == pytest.approx(1091 / 6)
    ingest = s["ingest_batch_sizes"]
    assert {k: v for k, v in ingest["buckets"].items() if v} == {"8": 1, "128": 1}
    assert (ingest["count"], ingest["mean"]) == (2, pytest.approx(52.5))


def test_fallback_causes_are_summed_over_workers_and_zero_causes_left_out() -> None:
    assert summarize(make_run())["fallback_causes"] == {"breaker_open": 1, "deadline": 5}


def test_the_event_loop_lag_p99_is_the_bucket_bound_under_which_99_percent_woke() -> None:
    lag = summarize(make_run())["loop_lag_s"]  # worker A only: 97 probes under 1 ms, then 30 ms, 0.3 s, 3 s
    assert lag["count"] == 100 and lag["buckets"]["0.001"] == 97
    assert bucket_bound(lag, 0.97) == 0.001
    assert bucket_bound(lag, 0.98) == 0.05
    assert bucket_bound(lag, 0.99) == 0.5
    assert bucket_bound(lag, 1.0) == math.inf
    assert bucket_bound({"buckets": {"0.001": 0, "+Inf": 0}}, 0.99) is None


def test_per_second_series() -> None:
    series = summarize(make_run())["series"]
    assert series["t"] == list(range(10))
    assert series["events"] == [10] * 10
    assert series["queries"] == [2] * 10
    assert series["recommendations"] == [5] * 10
    assert series["fallbacks"] == [5] + [0] * 9
    # Second k holds latencies 5k+1 .. 5k+5: p50 is the middle one, p99 sits at position 3.96.
    assert series["p50_ms"] == pytest.approx([5 * k + 3 for k in range(10)])
    assert series["p99_ms"] == pytest.approx([5 * k + 4.96 for k in range(10)])


def test_users_are_the_longest_histories_that_got_recommendations() -> None:
    users = summarize(make_run())["users"]
    assert [u["user_id"] for u in users] == ["u1", "u2", "u3"]  # u4 got none; u5's history is shorter
    u1 = users[0]
    assert u1["history_len"] == 8
    assert [h["item_id"] for h in u1["history"]] == ["m4", "m5", "m6", "m7", "m8"]
    assert u1["request_id"] == "r48"  # u1 gets i % 4 == 0; r48 is received last
    assert [it["item_id"] for it in u1["items"]] == ["m1", "m2", "m3"]
    assert u1["items"][0] == {"item_id": "m1", "title": SCRIPT_TITLE, "score": 0.9, "reason": "because 48"}
    assert [u["history_len"] for u in users] == [8, 6, 3]


def test_write_report_writes_json_plots_and_page(tmp_path: Path) -> None:
    out = write_report(make_run(), tmp_path / "report")
    assert out == tmp_path / "report"
    report = json.loads((out / "report.json").read_text())
    assert report["generated_at"]
    assert report["recommendations"] == 50
    page = (out / "index.html").read_text()
    referenced = set(re.findall(r"<img src='([^']+)'", page))
    written = {p.name for p in out.glob("*.png")}
    assert referenced == written == {name for name, _, _ in PLOTS}
    assert len(written) == 6
    for name in written:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC), name
        assert len(data) > 10_000, name
    for text in ("Users and their recommendations", "ndcg@10", "popularity", "max_rate", "Toy Story (1995)"):
        assert text in page
    assert "http://" not in page and "https://" not in page and "<script" not in page.lower()


def test_titles_are_html_escaped(tmp_path: Path) -> None:
    page = (write_report(make_run(), tmp_path) / "index.html").read_text()
    assert SCRIPT_TITLE not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_empty_run_does_not_crash(tmp_path: Path) -> None:
    s = summarize(empty_run())
    assert (s["events"], s["queries"], s["recommendations"], s["duplicates"], s["fallbacks"]) == (
        0,
        0,
        0,
        0,
        0,
    )
    assert s["fallback_share"] is None
    assert s["p50_ms"] is s["p95_ms"] is s["p99_ms"] is s["max_ms"] is None
    assert (s["events_per_s"], s["recommendations_per_s"]) == (0.0, 0.0)
    assert s["batch_sizes"] == {"buckets": {}, "count": 0, "sum": 0.0, "mean": None}
    assert s["top_items"] == [] and s["users"] == [] and s["models"] == {}
    assert s["series"]["t"] == [] and s["series"]["p50_ms"] == []
    out = write_report(empty_run(), tmp_path)
    page = (out / "index.html").read_text()
    assert "not available" in page
    for name, _, _ in PLOTS:
        assert (out / name).read_bytes().startswith(PNG_MAGIC)
        assert f"src='{name}'" in page


def test_non_finite_values_become_null() -> None:
    run = make_run()
    run.recommendations[0]["latency_ms"] = float("nan")
    run.offline_metrics = {"bert": {"ndcg@10": float("nan")}}
    s = summarize(run)
    assert s["p50_ms"] == pytest.approx(26.0)  # 2..50 remain: 49 values, the middle one is 26
    assert s["offline_metrics"] == {"bert": {"ndcg@10": None}}
    json.dumps(s, allow_nan=False)
