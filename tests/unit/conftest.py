"""Unit-test environment, set before anything imports ``stream.app`` (the app reads settings at import).

Agents run through ``agent.test_context()`` against the in-memory store: no broker, no Triton. The
variables are set at import time, the app is imported once so it captures them, and the previous
environment is restored so that other test directories in the same session see their own.
"""

from __future__ import annotations

import os
import tempfile
import uuid

_UNIT_ENV = {
    "STREAMREC_STORE_URL": "memory://",
    "STREAMREC_RUN_DIR": tempfile.mkdtemp(prefix="streamrec-unit-"),
    "STREAMREC_TOPIC_PREFIX": f"unit-{uuid.uuid4().hex[:8]}.",
    # Small batch windows so a batch closes soon after the test's last put().
    "STREAMREC_INGEST_BATCH_WITHIN_S": "0.01",
    "STREAMREC_QUERY_BATCH_WITHIN_S": "0.01",
    # test_context() gives every concurrent actor its own copy of the channel: one actor here.
    "STREAMREC_QUERY_CONCURRENCY": "1",
}
_saved = {key: os.environ.get(key) for key in _UNIT_ENV}
os.environ.update(_UNIT_ENV)
try:
    from stream.settings import get_settings

    get_settings.cache_clear()
    import stream.app  # captures the settings above
finally:
    for _key, _value in _saved.items():
        if _value is None:
            os.environ.pop(_key, None)
        else:
            os.environ[_key] = _value

if stream.app.settings.store_url != "memory://":  # pragma: no cover - a guard, not a test
    raise RuntimeError("stream.app was imported before tests/unit/conftest.py set the unit environment")

# No broker here, so no changelog follower: the item view counts as loaded (tests fill it directly).
from stream.runtime import follower  # noqa: E402

follower.caught_up.set()
