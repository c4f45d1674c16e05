"""All of streamrec's Prometheus metrics in one typed bundle on an injectable registry (seconds as unit)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    events: Counter
    held_events: Counter
    item_activity_rows: Counter
    item_stats_pending: Gauge
    item_stats_writes: Counter
    invalid: Counter
    dead_letters: Counter
    queries: Counter
    repeated_queries: Counter
    recommendations: Counter
    fallbacks: Counter
    e2e_latency: Histogram
    ranker_latency: Histogram
    ranker_batch: Histogram
    ingest_batch: Histogram
    loop_lag: Histogram
    breaker_state: Gauge
    table_size: Gauge
    consumer_lag: Gauge
    erasures: Counter
    model_version: Gauge
    impressions: Counter
    explored: Counter
    coverage: Gauge
    feedback_closed: Counter
    feedback_clicked: Counter
    feedback_converted: Counter
    feedback_reciprocal_rank: Counter
    feedback_outcomes: Counter
    training_examples: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> Metrics:
        r = registry if registry is not None else CollectorRegistry()
        p = "streamrec_"
        return cls(
            registry=r,
            events=Counter(f"{p}events", "Behaviour events applied to state", ["type"], registry=r),
            held_events=Counter(
                f"{p}held_events",
                "Events left unapplied (and unacked) because an earlier one of their partition was passed "
                "over unprocessed: applied in offset order once it is fetched again",
                registry=r,
            ),
            # Sent minus applied is the item statistics' backlog in rows: a worker can have applied a
            # backlog's events to profiles long before their item statistics catch up.
            item_activity_rows=Counter(
                f"{p}item_activity_rows",
                "Item-activity rows: sent by the event agent, and folded into item statistics (replays included)",
                ["stage"],
                registry=r,
            ),
            item_stats_pending=Gauge(
                f"{p}item_stats_pending",
                "Items whose statistics are folded and not yet written (each written item_stats_write_delay_s after it changes)",
                registry=r,
            ),
            item_stats_writes=Counter(
                f"{p}item_stats_writes",
                "Item statistics written to their table (and its changelog)",
                registry=r,
            ),
            invalid=Counter(f"{p}invalid_events", "Messages that failed validation", ["topic"], registry=r),
            dead_letters=Counter(
                f"{p}dead_letters", "Messages sent to the dead-letter topic", ["topic", "reason"], registry=r
            ),
            queries=Counter(f"{p}queries", "Recommendation requests handled", registry=r),
            repeated_queries=Counter(
                f"{p}repeated_queries",
                "Queries this worker had answered, handed to it again (a seek back) and not answered twice",
                registry=r,
            ),
            recommendations=Counter(
                f"{p}recommendations", "Recommendations published", ["fallback"], registry=r
            ),
            fallbacks=Counter(
                f"{p}fallbacks", "Requests answered by the fallback ranking", ["cause"], registry=r
            ),
            e2e_latency=Histogram(
                f"{p}e2e_latency_seconds",
                "From the triggering message's ts to the recommendation being sent",
                buckets=LATENCY_BUCKETS,
                registry=r,
            ),
            ranker_latency=Histogram(
                f"{p}ranker_latency_seconds",
                "Triton ranker call latency",
                buckets=LATENCY_BUCKETS,
                registry=r,
            ),
            ranker_batch=Histogram(
                f"{p}ranker_batch_size", "Rows per Triton ranker request", buckets=BATCH_BUCKETS, registry=r
            ),
            ingest_batch=Histogram(
                f"{p}ingest_batch_size", "Events per ingestion batch", buckets=BATCH_BUCKETS, registry=r
            ),
            loop_lag=Histogram(
                f"{p}event_loop_lag_seconds",
                "How late the worker's event loop woke a periodic probe: time other work held the loop",
                buckets=LOOP_LAG_BUCKETS,
                registry=r,
            ),
            breaker_state=Gauge(
                f"{p}breaker_state",
                "Circuit breaker per Triton model: 0 closed, 1 half-open, 2 open",
                ["model"],
                registry=r,
            ),
            table_size=Gauge(f"{p}table_size", "Keys in each table on this worker", ["table"], registry=r),
            consumer_lag=Gauge(
                f"{p}consumer_lag",
                "Messages behind the end of each partition",
                ["topic", "partition"],
                registry=r,
            ),
            erasures=Counter(f"{p}erasures", "Users erased on request", registry=r),
            model_version=Gauge(
                f"{p}model_version", "Ranker model version that answered last", ["model"], registry=r
            ),
            # ``variant`` is bounded: names are validated and at most eight (stream/experiment.py).
            impressions=Counter(
                f"{p}impressions", "Items shown in recommendations, per A/B variant", ["variant"], registry=r
            ),
            explored=Counter(
                f"{p}explored_items",
                "Items shown by the exploration policy instead of the ranking, per A/B variant",
                ["variant"],
                registry=r,
            ),
            coverage=Gauge(
                f"{p}coverage_items",
                "Distinct items shown per A/B variant since the worker started",
                ["variant"],
                registry=r,
            ),
            # Online A/B metrics, counted when an impression's feedback window closes: CTR = clicked /
            # closed, conversion = converted / closed, MRR = reciprocal_rank_sum / closed.
            feedback_closed=Counter(
                f"{p}feedback_impressions",
                "Impressions whose feedback window closed",
                ["variant"],
                registry=r,
            ),
            feedback_clicked=Counter(
                f"{p}feedback_clicked", "Closed impressions with at least one click", ["variant"], registry=r
            ),
            feedback_converted=Counter(
                f"{p}feedback_converted",
                "Closed impressions with an add-to-cart or purchase of a shown item",
                ["variant"],
                registry=r,
            ),
            feedback_reciprocal_rank=Counter(
                f"{p}feedback_reciprocal_rank_sum",
                "Sum over closed impressions of 1 / rank of the first clicked item",
                ["variant"],
                registry=r,
            ),
            feedback_outcomes=Counter(
                f"{p}feedback_outcomes",
                "Behaviour events seen by the feedback join, by what became of them",
                ["result"],
                registry=r,
            ),
            training_examples=Counter(
                f"{p}training_examples",
                "Labelled examples written to training-examples",
                ["label"],
                registry=r,
            ),
        )


# Bounded label values: reasons are bucketed so a flood of distinct errors cannot explode the series.
DEAD_LETTER_REASONS = ("json", "schema", "key_mismatch", "too_large", "empty", "other")


def reason_label(reason: str) -> str:
    text = reason.lower()
    if "json" in text or "utf-8" in text:
        return "json"
    if "key" in text and "does not match" in text:
        return "key_mismatch"
    if "exceeds" in text:
        return "too_large"
    if "empty" in text:
        return "empty"
    if ":" in text:
        return "schema"
    return "other"
