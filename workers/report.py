"""The end-of-demo report: the numbers (report.json), PNG plots and one self-contained index.html.

``summarize`` is a pure function of a ``DemoRun``; ``write_report`` renders it with matplotlib's Agg
canvas (no pyplot, no display) and writes a page with inline CSS, no scripts and no external assets.
"""

from __future__ import annotations

import html
import json
import math
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from workers.supervisor import metric_value

TOP_ITEMS = 10
TOP_USERS = 3
HISTORY_SHOWN = 5
MAX_SERIES_S = 86_400  # per-second series are capped at a day; later samples land in the last second


@dataclass
class DemoRun:
    started_at: float  # wall clock (time.time()) when the replay started
    finished_at: float  # wall clock when collection ended
    # e.g. {"events": 3000, "queries": 300, "speed": 0, "max_rate": 500, "workers": 1}
    options: dict[str, Any]
    sent: list[tuple[float, str]]  # (wall time sent, "event" | "query") for every message sent
    recommendations: list[dict[str, Any]]  # each Recommendation JSON dict plus "received_at" (wall time)
    dead_letters: int
    worker_metrics: list[str]  # Prometheus exposition text scraped from each worker at the end
    catalog: dict[str, dict[str, Any]]  # item_id -> {"title": str, "categories": list[str]}
    histories: dict[str, list[str]]  # user_id -> item ids the user interacted with, in send order
    offline_metrics: dict[str, dict[str, float]] | None  # method -> {"ndcg@10":..., ...} or None
    loop: dict[str, Any] | None = None  # the learning loop's readout (workers/demo_loop.py), if it ran


# ---------------------------------------------------------------- numbers


def _number(rec: dict[str, Any], key: str = "latency_ms") -> float | None:
    value = rec.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _percentiles(values: list[float], qs: Iterable[float]) -> list[float | None]:
    if not values:
        return [None for _ in qs]
    return [float(v) for v in np.percentile(np.asarray(values), list(qs), method="linear")]


def _model(rec: dict[str, Any]) -> str:
    model = rec.get("model") or {}
    return f"{model.get('name', '?')}/{model.get('version', '?')}"


def _title(run: DemoRun, item_id: str) -> str:
    return str(run.catalog.get(item_id, {}).get("title") or item_id)


def _histogram(texts: list[str], name: str) -> dict[str, Any]:
    """A Prometheus histogram summed over workers: per-bucket (not cumulative) counts keyed by ``le``."""
    cumulative: dict[float, float] = defaultdict(float)
    for text in texts:
        for line in text.splitlines():
            if not line.startswith(f"{name}_bucket"):
                continue
            head, _, value = line.rpartition(" ")
            match = re.search(r'le="([^"]+)"', head)
            if match:
                cumulative[float(match.group(1))] += float(value)
    buckets: dict[str, int] = {}
    previous = 0.0
    for le in sorted(cumulative):
        buckets["+Inf" if math.isinf(le) else f"{le:g}"] = round(cumulative[le] - previous)
        previous = cumulative[le]
    count = sum(metric_value(t, f"{name}_count") for t in texts)
    total = sum(metric_value(t, f"{name}_sum") for t in texts)
    return {"buckets": buckets, "count": round(count), "sum": total, "mean": total / count if count else None}


def _fallback_causes(texts: list[str]) -> dict[str, int]:
    """Fallback answers per cause (``streamrec_fallbacks_total``), summed over workers."""
    causes: Counter[str] = Counter()
    for text in texts:
        for line in text.splitlines():
            match = re.match(r'streamrec_fallbacks_total\{cause="([^"]*)"\} (\S+)$', line)
            if match:
                causes[match.group(1)] += round(float(match.group(2)))
    return {cause: n for cause, n in sorted(causes.items()) if n}


def bucket_bound(histogram: dict[str, Any], q: float) -> float | None:
    """The smallest bucket bound under which a share ``q`` of a ``_histogram``'s observations fell
    (inf past the last bucket); None without observations."""
    total = sum(histogram["buckets"].values())
    if total <= 0:
        return None
    seen = 0
    for le, n in histogram["buckets"].items():
        seen += n
        if seen >= q * total:
            return math.inf if le == "+Inf" else float(le)
    return math.inf


def _series(run: DemoRun) -> dict[str, list[Any]]:
    """Per-second arrays, second 0 starting at ``run.started_at``."""
    sent_at = [(t, kind) for t, kind in run.sent if math.isfinite(t)]
    received = [(t, r) for r in run.recommendations if (t := _number(r, "received_at")) is not None]
    duration = run.finished_at - run.started_at
    seconds = [int(t - run.started_at) for t, _ in sent_at] + [int(t - run.started_at) for t, _ in received]
    n = max([math.ceil(duration) if math.isfinite(duration) else 0, *[s + 1 for s in seconds]], default=0)
    n = min(max(n, 0), MAX_SERIES_S)

    def slot(t: float) -> int:
        return min(max(int(t - run.started_at), 0), n - 1)

    events, queries, recs, fallbacks = [0] * n, [0] * n, [0] * n, [0] * n
    latencies: list[list[float]] = [[] for _ in range(n)]
    for t, kind in sent_at:
        (events if kind == "event" else queries)[slot(t)] += 1
    for t, rec in received:
        i = slot(t)
        recs[i] += 1
        fallbacks[i] += bool(rec.get("fallback"))
        if (lat := _number(rec)) is not None:
            latencies[i].append(lat)
    pcts = [_percentiles(values, (50, 99)) for values in latencies]
    return {
        "t": list(range(n)),
        "events": events,
        "queries": queries,
        "recommendations": recs,
        "fallbacks": fallbacks,
        "p50_ms": [p[0] for p in pcts],
        "p99_ms": [p[1] for p in pcts],
    }


def _when(rec: dict[str, Any]) -> float:
    return _number(rec, "received_at") or _number(rec, "produced_at") or 0.0


def _recommended(run: DemoRun, item: dict[str, Any]) -> dict[str, Any]:
    item_id = str(item.get("item_id"))
    return {
        "item_id": item_id,
        "title": _title(run, item_id),
        "score": item.get("score"),
        "reason": item.get("reason", ""),
    }


def _users(run: DemoRun) -> list[dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for rec in run.recommendations:
        user = str(rec.get("user_id", ""))
        if user not in latest or _when(rec) >= _when(latest[user]):
            latest[user] = rec
    chosen = sorted((u for u in latest if run.histories.get(u)), key=lambda u: (-len(run.histories[u]), u))
    out = []
    for user in chosen[:TOP_USERS]:
        rec, history = latest[user], run.histories[user]
        out.append(
            {
                "user_id": user,
                "history_len": len(history),
                "history": [{"item_id": i, "title": _title(run, i)} for i in history[-HISTORY_SHOWN:]],
                "request_id": rec.get("request_id"),
                "fallback": bool(rec.get("fallback")),
                "model": _model(rec),
                "latency_ms": _number(rec),
                "items": [_recommended(run, it) for it in rec.get("items", [])],
            }
        )
    return out


def summarize(run: DemoRun) -> dict[str, Any]:
    """The report.json content; every number is computed from ``run`` alone."""
    kinds = Counter(kind for _, kind in run.sent)
    recs = run.recommendations
    distinct = len({r.get("request_id") for r in recs})
    fallbacks = sum(1 for r in recs if r.get("fallback"))
    latencies = [lat for r in recs if (lat := _number(r)) is not None]
    p50, p95, p99 = _percentiles(latencies, (50, 95, 99))
    duration = max(run.finished_at - run.started_at, 0.0)
    per_s = 1 / duration if duration > 0 else 0.0
    models = Counter(_model(r) for r in recs)
    item_counts = Counter(str(it.get("item_id")) for r in recs for it in r.get("items", []))
    top = sorted(item_counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_ITEMS]
    return _jsonable(
        {
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "options": run.options,
            "events": kinds.get("event", 0),
            "queries": kinds.get("query", 0),
            "recommendations": len(recs),
            "distinct_requests": distinct,
            "duplicates": len(recs) - distinct,
            "fallbacks": fallbacks,
            "fallback_share": fallbacks / len(recs) if recs else None,
            "p50_ms": p50,
            "p95_ms": p95,
            "p99_ms": p99,
            "max_ms": max(latencies) if latencies else None,
            "duration_s": duration,
            "events_per_s": kinds.get("event", 0) * per_s,
            "recommendations_per_s": len(recs) * per_s,
            "dead_letters": run.dead_letters,
            "models": dict(sorted(models.items())),
            "top_items": [{"item_id": i, "title": _title(run, i), "count": c} for i, c in top],
            "batch_sizes": _histogram(run.worker_metrics, "streamrec_ranker_batch_size"),
            "ingest_batch_sizes": _histogram(run.worker_metrics, "streamrec_ingest_batch_size"),
            "fallback_causes": _fallback_causes(run.worker_metrics),
            # How late the workers' event loops woke (stream/looplag.py): a long step shows here.
            "loop_lag_s": _histogram(run.worker_metrics, "streamrec_event_loop_lag_seconds"),
            "offline_metrics": run.offline_metrics,
            "loop": run.loop,
            "users": _users(run),
            "series": _series(run),
        }
    )


def _jsonable(value: Any) -> Any:
    """Non-finite floats become None so report.json is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


# ---------------------------------------------------------------- plots

Plot = Callable[[Axes, dict[str, Any], list[float]], None]
PLOTS: list[tuple[str, str, Plot]] = []  # (file name, "Title: caption", drawing function)


def _plot(name: str, caption: str) -> Callable[[Plot], Plot]:
    def register(fn: Plot) -> Plot:
        PLOTS.append((name, caption, fn))
        return fn

    return register


def _label(text: str, width: int = 42) -> str:
    text = text if len(text) <= width else text[: width - 1] + "…"
    return text.replace("$", r"\$")  # a "$" would switch matplotlib to mathtext


def _no_data(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")


@_plot("throughput.png", "Throughput: events and queries sent, recommendations received, per second")
def _plot_throughput(ax: Axes, s: dict[str, Any], _: list[float]) -> None:
    series = s["series"]
    if not series["t"]:
        return _no_data(ax)
    ax.plot(series["t"], series["events"], label="events/s sent", color="#1f77b4")
    ax.plot(series["t"], series["queries"], label="queries/s sent", color="#9467bd", alpha=0.7)
    ax.plot(series["t"], series["recommendations"], label="recommendations/s received", color="#2ca02c")
    ax.set(xlabel="seconds since replay start", ylabel="messages per second")


@_plot("latency_over_time.png", "Latency over time: p50 and p99 of the recommendations received each second")
def _plot_latency_time(ax: Axes, s: dict[str, Any], _: list[float]) -> None:
    series = s["series"]
    t = [i for i, v in zip(series["t"], series["p50_ms"], strict=True) if v is not None]
    if not t:
        return _no_data(ax)
    ax.plot(t, [v for v in series["p50_ms"] if v is not None], marker=".", label="p50")
    ax.plot(t, [v for v in series["p99_ms"] if v is not None], marker=".", label="p99", color="#d62728")
    ax.set(xlabel="seconds since replay start", ylabel="latency (ms)")


@_plot("latency_histogram.png", "Latency distribution: every recommendation latency, p50 and p99 marked")
def _plot_latency_hist(ax: Axes, s: dict[str, Any], latencies: list[float]) -> None:
    if not latencies:
        return _no_data(ax)
    ax.hist(latencies, bins=min(50, max(len(set(latencies)), 1)), color="#1f77b4", alpha=0.8)
    for key, color in (("p50_ms", "#2ca02c"), ("p99_ms", "#d62728")):
        ax.axvline(s[key], color=color, linestyle="--", label=f"{key[:3]} = {s[key]:.1f} ms")
    ax.set(xlabel="latency (ms)", ylabel="recommendations")


@_plot("fallback_share.png", "Fallback share: recommendations answered by the fallback ranking, per second")
def _plot_fallbacks(ax: Axes, s: dict[str, Any], _: list[float]) -> None:
    series = s["series"]
    pairs = [
        (t, f / r)
        for t, f, r in zip(series["t"], series["fallbacks"], series["recommendations"], strict=True)
        if r
    ]
    if not pairs:
        return _no_data(ax)
    ax.plot([t for t, _ in pairs], [100 * v for _, v in pairs], marker=".", color="#ff7f0e")
    ax.set(xlabel="seconds since replay start", ylabel="fallback share (%)", ylim=(-2, 102))


@_plot("batch_sizes.png", "Batch sizes: rows per Triton ranker call and events per ingest batch")
def _plot_batches(ax: Axes, s: dict[str, Any], _: list[float]) -> None:
    ranker, ingest = s["batch_sizes"]["buckets"], s["ingest_batch_sizes"]["buckets"]
    labels = list(dict.fromkeys([*ranker, *ingest]))
    if not labels:
        return _no_data(ax)
    labels.sort(key=float)
    x = np.arange(len(labels))
    ax.bar(x - 0.2, [ranker.get(k, 0) for k in labels], width=0.4, label="ranker rows per Triton call")
    ax.bar(x + 0.2, [ingest.get(k, 0) for k in labels], width=0.4, label="events per ingest batch")
    ax.set_xticks(x, [f"≤{k}" for k in labels])
    ax.set(xlabel="batch size bucket", ylabel="batches")


@_plot("top_items.png", "Most recommended items: the ten items that appeared most often")
def _plot_top_items(ax: Axes, s: dict[str, Any], _: list[float]) -> None:
    top = s["top_items"]
    if not top:
        return _no_data(ax)
    y = np.arange(len(top))
    ax.barh(y, [t["count"] for t in top], color="#2ca02c")
    ax.set_yticks(y, [_label(t["title"]) for t in top])
    ax.invert_yaxis()
    ax.set(xlabel="times recommended")


def _render(out: Path, title: str, plot: Plot, summary: dict[str, Any], latencies: list[float]) -> None:
    fig = Figure(figsize=(8, 4.5), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    plot(ax, summary, latencies)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best")
    fig.savefig(out, format="png")


# ---------------------------------------------------------------- page

CSS = """
body{font-family:system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}main{max-width:1180px;margin:0 auto;padding:24px}
h1{margin:0 0 4px}h2{margin-top:36px;border-bottom:2px solid #dde2ea;padding-bottom:4px}.muted{color:#667085}
.cards{display:grid;grid-template-columns:repeat(4,1fr);gap:12px;margin:20px 0}.card b{display:block;font-size:1.6em}
.card,figure,.user{background:#fff;border:1px solid #dde2ea;border-radius:8px;padding:12px 14px}.card span{color:#667085}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:16px}figure{margin:0;padding:8px}
figure img{width:100%;height:auto}figcaption{color:#667085;font-size:.9em;padding:4px}
table{border-collapse:collapse;background:#fff;width:100%;margin:8px 0}th{background:#eef1f5}
th,td{border:1px solid #dde2ea;padding:6px 8px;text-align:left;vertical-align:top}tr:nth-child(even) td{background:#fafbfc}
td.n{text-align:right;font-variant-numeric:tabular-nums}.user h3{grid-column:1/-1;margin:0}
.user{display:grid;grid-template-columns:1fr 2fr;gap:16px;margin:12px 0}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any, fmt: str = "{:,.1f}") -> str:
    return "n/a" if value is None else _e(fmt.format(value))


def _table(head: list[str], rows: list[list[str]], numeric: Iterable[int] = ()) -> str:
    numeric = set(numeric)
    ths = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{ths}</tr>{body}</table>"


def _user_html(user: dict[str, Any]) -> str:
    history = "".join(f"<li>{_e(h['title'])}</li>" for h in user["history"])
    recs = _table(
        ["#", "item", "score", "reason"],
        [
            [str(i), _e(it["title"]), _num(it["score"], "{:.3f}"), _e(it["reason"])]
            for i, it in enumerate(user["items"], 1)
        ],
        {0, 2},
    )
    note = f"{'fallback ranking' if user['fallback'] else _e(user['model'])}, {_num(user['latency_ms'])} ms"
    return (
        f'<div class="user"><h3>User {_e(user["user_id"])} '
        f'<span class="muted">({user["history_len"]} interactions; latest answer: {note})</span></h3>'
        f"<div><b>Last {len(user['history'])} items in the history</b><ol>{history}</ol></div>"
        f"<div><b>Latest recommendation</b>{recs}</div></div>"
    )


def _page(s: dict[str, Any], images: list[tuple[str, str]]) -> str:
    lag = bucket_bound(s["loop_lag_s"], 0.99)
    cards = [
        ("events sent", _num(s["events"], "{:,}")),
        ("queries sent", _num(s["queries"], "{:,}")),
        ("recommendations", _num(s["recommendations"], "{:,}")),
        ("fallbacks", f"{_num(s['fallbacks'], '{:,}')} ({_num(s['fallback_share'], '{:.1%}')})"),
        ("fallback causes", ", ".join(f"{_e(c)} {n:,}" for c, n in s["fallback_causes"].items()) or "none"),
        ("p50 latency (ms)", _num(s["p50_ms"])),
        ("p99 latency (ms)", _num(s["p99_ms"])),
        ("events/s", _num(s["events_per_s"])),
        ("event-loop lag p99 ≤ (ms)", _num(None if lag is None else lag * 1000.0)),
        ("dead letters", _num(s["dead_letters"], "{:,}")),
    ]
    top = [
        [str(i), _e(t["item_id"]), _e(t["title"]), _e(t["count"])] for i, t in enumerate(s["top_items"], 1)
    ]
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>streamrec demo report</title><style>{CSS}</style></head><body><main>",
        "<h1>streamrec demo report</h1>",
        f"<p class='muted'>Generated {_e(s['generated_at'])}; replay ran {_num(s['duration_s'])} s; "
        f"{_e(s['duplicates'])} duplicate recommendations; models: {_e(', '.join(f'{k} ({v})' for k, v in s['models'].items()) or 'none')}.</p>",
        '<div class="cards">'
        + "".join(f"<div class='card'><b>{v}</b><span>{_e(k)}</span></div>" for k, v in cards)
        + "</div>",
        "<h2>Plots</h2><div class='plots'>",
        *(
            f"<figure><img src='{_e(name)}' alt='{_e(cap)}'><figcaption>{_e(cap)}</figcaption></figure>"
            for name, cap in images
        ),
        "</div><h2>Top recommended items</h2>",
        _table(["#", "item id", "title", "times recommended"], top, {0, 3})
        if top
        else "<p>None received.</p>",
        "<h2>Users and their recommendations</h2>",
        "".join(_user_html(u) for u in s["users"])
        or "<p>No user with a history received a recommendation.</p>",
        "<h2>Offline evaluation</h2>",
    ]
    offline = s["offline_metrics"]
    if offline:
        keys = list(dict.fromkeys(k for m in offline.values() for k in m))
        rows = [[_e(m), *(_num(v.get(k), "{:.4f}") for k in keys)] for m, v in offline.items()]
        parts.append(_table(["method", *keys], rows, set(range(1, len(keys) + 1))))
    else:
        parts.append("<p>Offline metrics were not available for this run.</p>")
    parts += _loop_html(s.get("loop"))
    options = [[_e(k), _e(v)] for k, v in s["options"].items()]
    parts += ["<h2>Run options</h2>", _table(["option", "value"], options), "</main></body></html>"]
    return "\n".join(parts)


def _interval(i: dict[str, Any] | None) -> str:
    if not i:
        return "-"
    return (
        f"{_num(i.get('value'), '{:.3f}')} [{_num(i.get('low'), '{:.3f}')}, {_num(i.get('high'), '{:.3f}')}]"
    )


def _loop_html(loop: dict[str, Any] | None) -> list[str]:
    """The learning loop: the retrain's outcome and the per-arm online metrics with 95% intervals."""
    if not loop:
        return []
    retrain = loop.get("retrain") or {}
    base, new = retrain.get("base") or {}, retrain.get("new") or {}
    parts = [
        "<h2>Learning loop (simulated clicks)</h2>",
        "<p class='muted'>Clicks come from a simulator (workers/clicksim.py): MovieLens users click the "
        "items they rate later in the data, with position bias. Phase 1 is an A/A test (both arms on "
        "version 1); then the ranker is retrained from the training-examples topic and the new version is "
        "hot-swapped in for the treatment arm; phase 2 is the A/B test.</p>",
        f"<p>Examples: {_e(loop.get('examples'))} ({_e(loop.get('positives'))} positive); simulated clicks "
        f"{_e(loop.get('clicks_sent'))}, purchases {_e(loop.get('purchases_sent'))}. Retrain: "
        f"<b>{_e(retrain.get('decision'))}</b> ({_e(retrain.get('reason', ''))}); held-out MRR "
        f"{_num(base.get('mrr'), '{:.4f}')} (served) vs {_num(new.get('mrr'), '{:.4f}')} (new); "
        f"published version {_e(loop.get('published_version') or '-')}.</p>",
    ]
    rows = [
        [
            _e(name),
            _e(", ".join(m.get("models", []))),
            _num(m.get("impressions"), "{:,}"),
            _interval(m.get("ctr")),
            _interval(m.get("conversion")),
            _interval(m.get("mrr")),
            _num(m.get("coverage"), "{:.3f}"),
            _num(m.get("diversity"), "{:.3f}"),
        ]
        for name, m in (loop.get("arms") or {}).items()
    ]
    parts.append(
        _table(
            [
                "phase:arm",
                "models",
                "impressions",
                "CTR@10 [95% CI]",
                "conversion",
                "MRR",
                "coverage",
                "diversity",
            ],
            rows,
            {2, 6, 7},
        )
    )
    lifts = loop.get("ctr_lift") or {}
    if lifts:
        parts.append(
            "<p>CTR difference treatment − control: "
            + "; ".join(f"{_e(p)} {_interval(v)}" for p, v in lifts.items())
            + "</p>"
        )
    return parts


def write_report(run: DemoRun, out_dir: Path) -> Path:
    """Write report.json, the plots and index.html into ``out_dir``; return ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(run)
    summary["generated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (out_dir / "report.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    latencies = [lat for r in run.recommendations if (lat := _number(r)) is not None]
    for name, caption, plot in PLOTS:
        _render(out_dir / name, caption.partition(":")[0], plot, summary, latencies)
    (out_dir / "index.html").write_text(_page(summary, [(n, c) for n, c, _ in PLOTS]), encoding="utf-8")
    return out_dir
