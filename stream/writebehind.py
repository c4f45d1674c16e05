"""Table values folded in memory and written a while after they first change, with offset commits
held below what is not yet written.

An item's statistics change with nearly every item-activity batch, and each write is a RocksDB put,
a changelog record, and that record read back by every worker's item view: ~60 us of the event loop
on a loaded worker, most of it Faust's changelog send. Written once per batch, a hot item was
written every 0.5 s. Here a value is written ``delay_s`` after its first change since its last
write, so a hot item once per ``delay_s`` or so, whatever the batches (Kafka Streams' record cache
does the same, flushing on commit). The oldest go first, and a backlog of due values is written over
several batches: written all at once (at the commit, the first version of this), the bursts of
changelog records delayed the recommendations produced behind them, p99 160 -> 300 ms at 20 q/s.

Why nothing is lost: a commit never covers a message whose effects are pending. ``floor(tp)`` is the
lowest offset of ``tp`` that changed a value not yet written, and the consumer holds its commits
below it (``InFlightSafeConsumer._new_offset``). After a crash, or on the next owner of a revoked
partition (``drop``), those messages are fetched again and folded onto the written value; what they
had already changed there is skipped by the value's own offset check.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Collection, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

V = TypeVar("V")


@dataclass(slots=True)
class _Pending(Generic[V]):
    event: Any  # the last event it changed under: its write runs in that event's context (partition)
    value: V
    tp: Hashable  # where its first unwritten change came from
    offset: int
    since: float  # when (monotonic)


class WriteBehind(Generic[V]):
    """Pending values by key, oldest first change first."""

    def __init__(self, write: Callable[[Any, str, V], None], delay_s: float) -> None:
        self._write = write
        self.delay_s = delay_s
        self._pending: OrderedDict[str, _Pending[V]] = OrderedDict()
        self._offsets: defaultdict[Hashable, dict[str, int]] = defaultdict(dict)  # tp -> key -> offset

    def __len__(self) -> int:
        return len(self._pending)

    def get(self, key: str) -> V | None:
        """The value folded since its last write, if any: newer than what the table holds."""
        found = self._pending.get(key)
        return found.value if found is not None else None

    def put(self, key: str, event: Any, value: V, now: float) -> None:
        """A key's changes must come from one partition (a table keyed like its source topic): the
        floor follows where its first unwritten change came from."""
        found = self._pending.get(key)
        if found is not None:
            if event.message.tp != found.tp:
                raise ValueError(f"{key!r} changed under {event.message.tp} and {found.tp}")
            found.event, found.value = event, value
            return
        tp, offset = event.message.tp, event.message.offset
        self._pending[key] = _Pending(event, value, tp, offset, now)
        self._offsets[tp][key] = offset

    def floor(self, tp: Hashable) -> int | None:
        """The lowest offset of ``tp`` whose effects are not all written: a commit stops below it."""
        offsets = self._offsets.get(tp)
        return min(offsets.values()) if offsets else None

    def write_due(self, now: float, at_least: int, keep: int) -> int:
        """Write, oldest first, values first changed ``delay_s`` ago or more: all of them up to
        ``at_least``, past that half of them (a backlog is spread over the next calls, each taking a
        share as large as what has come since, instead of being written in one burst); and then the
        oldest until at most ``keep`` are pending. How many were written. A failed write raises,
        leaving it pending."""
        due = 0
        for pending in self._pending.values():
            if now - pending.since < self.delay_s:
                break
            due += 1
        count = max(min(due, at_least), (due + 1) // 2, len(self._pending) - keep)
        for key, pending in list(itertools.islice(self._pending.items(), count)):
            self._write(pending.event, key, pending.value)
            self._forget(key)
        return count

    def flush(self) -> int:
        """Write every pending value; how many."""
        return self.write_due(float("inf"), 0, 0)

    def drop(self, partitions: Collection[Hashable]) -> int:
        """Forget the values first changed by a message of ``partitions`` (revoked): no commit covers
        that message, so the partition's next owner folds it again. How many."""
        gone = [k for tp in partitions for k in self._offsets.get(tp, {})]
        for key in gone:
            self._forget(key)
        return len(gone)

    def _forget(self, key: str) -> None:
        pending = self._pending.pop(key)
        offsets = self._offsets[pending.tp]
        del offsets[key]
        if not offsets:
            del self._offsets[pending.tp]
