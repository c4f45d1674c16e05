"""Run table updates under the context of the event they belong to.

A batch from ``stream.take_events`` mixes partitions, but Faust's stores pick the partition of a
table write (and of a partitioned read) from the *current* event; setting it per event keeps each
key's state in its own partition.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

from faust import streams


@contextlib.contextmanager
def event_context(event: Any) -> Iterator[None]:
    token = streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        streams._current_event.reset(token)
