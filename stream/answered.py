"""The request ids this worker process has answered, so that a query handed to it again is not
answered twice.

Faust can hand a live process messages it has already processed: after (re)assignment its recovery
resumes the stream partitions *before* seeking them to the committed offsets (faust-streaming 0.15.3,
``Recovery.on_recovery_completed``), so what is fetched in between is processed and then fetched
again from the committed offset. A restarted worker answered one query three times (once before the
crash, twice after, 1.6 s apart) in 3 of 6 runs of the kill -9 chaos test. Swapping Faust's two steps
instead lost messages (12 and 21 of ~125 in 2 of 3 runs), and skipping repeated *offsets* lost one
probe in 11 takeover runs: an id is remembered here only once its recommendation has been handed to
the producer, so a skip can only drop a second answer. A new process remembers nothing: after a crash
the uncommitted tail is answered again (at-least-once, docs/guarantees.md).
"""

from __future__ import annotations

from collections import OrderedDict

# At this machine's ~20-60 queries/s per worker, hours of answers; a seek back spans seconds.
REMEMBERED = 50_000


class AnsweredRequests:
    """Request ids being answered now (claimed) and the most recent ``capacity`` answered ones.

    A claim is refused for an id answered or being answered by this process: with several batches in
    flight (``query_concurrency``) the same id can reach two of them before either has answered.
    """

    def __init__(self, capacity: int = REMEMBERED) -> None:
        self.capacity = capacity
        self._answered: OrderedDict[str, None] = OrderedDict()
        self._claimed: set[str] = set()

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._answered or request_id in self._claimed

    def __len__(self) -> int:
        return len(self._answered)

    def claim(self, request_id: str) -> bool:
        """True if the caller should answer ``request_id`` (and must then ``settle`` it)."""
        if request_id in self:
            return False
        self._claimed.add(request_id)
        return True

    def settle(self, request_id: str, *, answered: bool) -> None:
        """End a claim: remembered if answered, free to be answered later if not (e.g. dead-lettered
        on an internal error, so that a re-send is tried again)."""
        self._claimed.discard(request_id)
        if answered:
            self._answered[request_id] = None
            self._answered.move_to_end(request_id)
            while len(self._answered) > self.capacity:
                self._answered.popitem(last=False)

    def forget(self) -> None:
        """What a restarted process knows: nothing."""
        self._answered.clear()
        self._claimed.clear()
