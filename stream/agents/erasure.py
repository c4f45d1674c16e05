"""Privacy: forget a user on request (tombstones in the changelog) and confirm on a topic."""

from __future__ import annotations

import time
from typing import Any

from stream.agents import feedback as feedback_join
from stream.agents.events import forget_user, load_profile
from stream.agents.topics import erasure_confirmations_topic, erasure_topic, valid
from stream.app import app
from stream.context import event_context
from stream.profile import erased
from stream.records import ErasureConfirmation, ErasureRequest
from stream.runtime import metrics
from stream.tables import erasures, profiles


@app.agent(erasure_topic)
async def erase_users(stream: Any) -> None:
    async for batch in stream.take_events(100, within=0.5):
        for event, request in valid(batch, ErasureRequest, key_field="user_id"):
            erase(event, request)


def erase(event: Any, request: ErasureRequest) -> None:
    erased_at = request.ts if request.ts is not None else time.time()
    with event_context(event):
        marker = erased(load_profile(request.user_id), erased_at)
        # Deleting writes a tombstone to the changelog, so the erasure survives restarts and compaction;
        # the marker (no behaviour, just offset and time) keeps replayed events from rebuilding it.
        profiles.pop(request.user_id, None)
        erasures[request.user_id] = {"events_offset": marker.events_offset, "erased_at": marker.erased_at}
        feedback_join.forget_user(request.user_id)
    forget_user(request.user_id)
    metrics.erasures.inc()
    confirmation = ErasureConfirmation(
        user_id=request.user_id,
        request_id=request.request_id,
        erased_at=time.time(),
        tables=["profiles", "feedback", "open-impressions"],
    )
    erasure_confirmations_topic.send_soon(key=request.user_id.encode(), value=confirmation.to_json())
