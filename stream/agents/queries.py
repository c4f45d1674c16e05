"""Recommendation requests → ranked, explained recommendations on the ``recommendations`` topic."""

from __future__ import annotations

import logging
from typing import Any

import orjson

from stream.agents.events import load_profile
from stream.agents.feedback import open_impressions
from stream.agents.topics import dead_letter, queries_topic, recommendations_topic, valid
from stream.app import app, settings
from stream.context import event_context
from stream.profile import Profile, record_query
from stream.records import Query
from stream.runtime import metrics, recommender
from stream.tables import profiles

log = logging.getLogger(__name__)


def _request_id(event: Any) -> str | None:
    try:
        return str(orjson.loads(event.message.value).get("request_id"))
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return None


# Several batches in flight: a slow Triton call holds up one batch, not the ones behind it. Safe for
# the table: each profile read-modify-write below runs without an await in between.
@app.agent(queries_topic, concurrency=settings.query_concurrency)
async def answer_queries(stream: Any) -> None:
    async for batch in stream.take_events(settings.query_batch_max, within=settings.query_batch_within_s):
        requests: list[tuple[Query, Profile]] = []
        refreshes: list[tuple[Query, Profile]] = []
        origin: dict[str, Any] = {}
        for event, query in valid(batch, Query, key_field="user_id"):
            origin[query.request_id] = event
            with event_context(event):
                profile = load_profile(query.user_id)
                if query.text:
                    profile = record_query(profile, query.text, query.ts)
                    profiles[query.user_id] = profile.to_dict()
            target = refreshes if query.request_id.startswith("refresh-") else requests
            target.append((query, profile))
        metrics.queries.inc(len(requests) + len(refreshes))
        try:
            answers = [
                *(await recommender.answer(requests)),
                *(await recommender.answer(refreshes, trigger="event")),
            ]
        except Exception as exc:
            # A bug must not kill the agent or lose the requests: they go to dead-letters with the error.
            log.exception("recommendation batch failed")
            by_id = {q.request_id for q, _ in (*requests, *refreshes)}
            for event in batch:
                if _request_id(event) in by_id:
                    dead_letter(event, f"internal error while recommending: {exc!r}"[:300])
            continue
        open_impressions(answers, origin)
        for rec in (a.recommendation for a in answers):
            metrics.recommendations.labels(fallback=str(rec.fallback).lower()).inc()
            metrics.e2e_latency.observe(rec.latency_ms / 1000.0)
            recommendations_topic.send_soon(key=rec.user_id.encode(), value=rec.to_json())
