"""Recommendation requests → ranked, explained recommendations on the ``recommendations`` topic."""

from __future__ import annotations

import logging
from typing import Any

from stream.agents.events import load_profile
from stream.agents.feedback import open_impressions
from stream.agents.topics import dead_letter, queries_topic, recommendations_topic, valid
from stream.app import app, settings
from stream.context import event_context
from stream.profile import Profile, record_query
from stream.records import Query
from stream.runtime import answered, metrics, recommender
from stream.tables import profiles

log = logging.getLogger(__name__)


# Several batches in flight: a slow Triton call holds up one batch, not the ones behind it. Safe for
# the table: each profile read-modify-write below runs without an await in between.
@app.agent(queries_topic, concurrency=settings.query_concurrency)
async def answer_queries(stream: Any) -> None:
    async for batch in stream.take_events(settings.query_batch_max, within=settings.query_batch_within_s):
        requests: list[tuple[Query, Profile]] = []
        refreshes: list[tuple[Query, Profile]] = []
        origin: dict[str, Any] = {}
        for event, query in valid(batch, Query, key_field="user_id"):
            with event_context(event):
                profile = load_profile(query.user_id)
                if query.text:
                    profile = record_query(profile, query.text, query.ts)
                    profiles[query.user_id] = profile.to_dict()
            # State above is a fold of the log (redeliveries are skipped by the profile's offset);
            # the answer is once per request_id: a query handed over again after a seek back, or sent
            # twice, is not answered twice (stream.answered).
            if not answered.claim(query.request_id):
                metrics.repeated_queries.inc()
                continue
            origin[query.request_id] = event
            target = refreshes if query.request_id.startswith("refresh-") else requests
            target.append((query, profile))
        sent: set[str] = set()
        try:
            await _answer(requests, refreshes, origin, sent)
        finally:
            for request_id in origin:
                answered.settle(request_id, answered=request_id in sent)


async def _answer(
    requests: list[tuple[Query, Profile]],
    refreshes: list[tuple[Query, Profile]],
    origin: dict[str, Any],
    sent: set[str],
) -> None:
    metrics.queries.inc(len(requests) + len(refreshes))
    try:
        answers = [
            *(await recommender.answer(requests)),
            *(await recommender.answer(refreshes, trigger="event")),
        ]
    except Exception as exc:
        # A bug must not kill the agent or lose the requests: they go to dead-letters with the error.
        log.exception("recommendation batch failed")
        for query, _ in (*requests, *refreshes):
            dead_letter(origin[query.request_id], f"internal error while recommending: {exc!r}"[:300])
        return
    open_impressions(answers, origin)
    for rec in (a.recommendation for a in answers):
        metrics.recommendations.labels(fallback=str(rec.fallback).lower()).inc()
        metrics.e2e_latency.observe(rec.latency_ms / 1000.0)
        recommendations_topic.send_soon(key=rec.user_id.encode(), value=rec.to_json())
        sent.add(rec.request_id)
