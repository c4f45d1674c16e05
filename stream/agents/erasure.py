"""Privacy: forget a user on request (tombstones in the changelog) and confirm on a topic."""

from __future__ import annotations

import time
from typing import Any

from stream.agents.events import forget_user
from stream.agents.topics import dead_letter, erasure_confirmations_topic, erasure_topic
from stream.app import app
from stream.context import event_context
from stream.records import ErasureConfirmation, ErasureRequest, InvalidMessage, parse
from stream.runtime import metrics
from stream.tables import profiles


@app.agent(erasure_topic)
async def erase_users(stream: Any) -> None:
    async for event in stream.events():
        try:
            request = parse(ErasureRequest, event.message.value, event.message.key, key_field="user_id")
        except InvalidMessage as exc:
            dead_letter(event, exc.reason)
            continue
        with event_context(event):
            # Deleting writes a tombstone to the changelog, so the erasure survives restarts and compaction.
            profiles.pop(request.user_id, None)
        forget_user(request.user_id)
        metrics.erasures.inc()
        confirmation = ErasureConfirmation(
            user_id=request.user_id,
            request_id=request.request_id,
            erased_at=time.time(),
            tables=["profiles"],
        )
        erasure_confirmations_topic.send_soon(key=request.user_id.encode(), value=confirmation.to_json())
