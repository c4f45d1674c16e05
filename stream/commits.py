"""What an offset commit may cover (finished work whose outputs the broker has taken), and getting
back what faust-streaming 0.15.3 drops.

Each of these lost answers or events in the chaos suite's takeover and restart tests (measured in
docs/reliability.md, fourth session):

- **A message still in flight or never processed.** Faust commits the first run of consecutive acked
  offsets (``Consumer._new_offset``). With ``concurrency`` > 1 the actors finish out of order, and the
  run may start *above* an unfinished message: Faust lets a hole of one offset at the head through (it
  reads it as a compacted record), and with no committed offset known (a rebalance makes it forget
  them, then it commits while the actors finish) any hole (faust-streaming issue #606). Here a commit
  stops below the lowest offset handed to the streams and not yet acked.
- **A message dropped unprocessed.** Around a rebalance Faust hands over messages that no stream then
  processes (its recovery resumes partitions before seeking them; a message handed over as the seek
  lands was seen dropped, and its fetch position had moved past it). Such a message (gone, or passed
  over in its FIFO queue, unacked) is fetched again: the partition is sought back to it at the next
  commit. What comes again after it is deduplicated downstream (request ids, profile offsets).
- **A partition with no committed offset, or with offset 0 committed.** aiokafka's
  ``seek_to_committed`` leaves either where its position is (it seeks only ``if offset and offset >
  0``). After a takeover the survivor began a dead worker's uncommitted partitions at their end; and
  with the group anchored at 0, records the survivor fetched while its flow was stopped (a rebalance)
  were never handed over, the "seek back" to 0 did nothing, and the first commit passed them (21
  queries lost in one run of the chaos takeover test). Here both start at the earliest offset.
- **An output still in the send buffer.** Before committing, Faust flushes the producer, but its send
  buffer's flush returns after 0.1 s without progress (``ProducerBuffer.flush_atmost``): answers made
  for committed messages were still in the buffer, and a ``kill -9`` lost them. Here a flush returns
  once everything buffered before it has been handed to aiokafka, whose own flush then waits for the
  broker's acknowledgement (``acks=all``).

A commit also stops below a message whose effects are folded but not yet written to their table
(``stream.writebehind``, ``App.commit_floor``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any, cast

from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.transport.producer import ProducerBuffer
from faust.types import TP
from mode.services import WaitArgT, WaitResults

from stream import eager

log = logging.getLogger(__name__)

# Longer than a fetch takes on a loaded 2-core machine (aiokafka waits up to 0.5 s for data).
REFETCH_AFTER_S = 5.0


class Delivered:
    """The messages of one partition handed to the streams since it was assigned, by offset, until a
    commit passes them. Weak references: a message Faust drops is gone here too, not kept alive."""

    def __init__(self) -> None:
        self._refs: dict[int, weakref.ref[Any]] = {}

    def add(self, message: Any) -> None:
        self._refs[message.offset] = weakref.ref(message)

    def forget_done(self, done: Callable[[int], bool]) -> None:
        for offset in [o for o in self._refs if done(o)]:
            del self._refs[offset]

    def __len__(self) -> int:
        return len(self._refs)

    def floor(self, done: Callable[[int], bool]) -> int | None:
        """The lowest offset handed over and not done: a commit must not pass it."""
        return min((o for o in self._refs if not done(o)), default=None)

    def outstanding(self, lo: int, hi: int, done: Callable[[int], bool]) -> bool:
        """Whether an offset in ``[lo, hi)`` was handed over and is not done."""
        if hi - lo <= len(self._refs):
            return any(o in self._refs and not done(o) for o in range(lo, hi))
        return any(lo <= o < hi and not done(o) for o in self._refs)

    def first_dropped(self, done: Callable[[int], bool]) -> int | None:
        """The lowest offset handed over that no stream will process: not done, and either gone
        (Faust let go of the message unprocessed) or never taken by a stream although a later offset
        was (a channel's queue is FIFO, so it was skipped)."""
        later_taken = False
        dropped = None
        for offset in sorted(self._refs, reverse=True):
            message = self._refs[offset]()
            finished = done(offset)
            if not finished and (message is None or (later_taken and not message.tracked)):
                dropped = offset
            later_taken = later_taken or finished or (message is not None and message.tracked)
        return dropped


def split_at(acked: list[int], floor: int | None) -> tuple[list[int], list[int]]:
    """``acked`` as (committable now, held back): acks at or above ``floor`` are held."""
    if floor is None:
        return acked, []
    return [o for o in acked if o < floor], [o for o in acked if o >= floor]


def admit(offset: int, frontier: int, outstanding: Callable[[int, int], bool]) -> tuple[bool, int]:
    """Whether a stream that applies its partition in offset order may apply ``offset`` now, and the
    partition's new frontier (below it, every offset handed over is finished or applied).

    Below the frontier: a redelivery of finished work, deduplicated downstream. At it: the next one.
    Above it, with an offset in between handed over and not finished: Faust passed that one over
    unprocessed (it is fetched again at the next commit), and applying this one first would apply
    the partition out of order: a profile's offset check then skipped the late one for good. Above
    it with none: a gap nothing was handed over for (transaction markers), passed."""
    if offset < frontier:
        return True, frontier
    if offset > frontier and outstanding(frontier, offset):
        return False, frontier
    return True, offset + 1


class InFlightSafeConsumer(aiokafka_driver.Consumer):
    """Faust's consumer, whose commits stop below the lowest offset handed to the streams and not
    processed, and which fetches again what Faust dropped unprocessed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._delivered: defaultdict[TP, Delivered] = defaultdict(Delivered)
        self._refetched: dict[TP, tuple[int, float]] = {}
        self._frontier: dict[TP, int] = {}
        deliver = self.callback

        async def on_message(message: Any) -> None:
            if self.app.topics.acks_enabled_for(message.topic):
                self._delivered[message.tp].add(message)
            await deliver(message)

        self.callback = on_message

    async def wait_first(self, *coros: WaitArgT, timeout: Any = None) -> WaitResults:  # noqa: ASYNC109 - Faust's signature
        """Faust's, with the first coroutine's first step run at once (``stream.eager``). Faust's
        fetcher is the only caller: per message, with the message's delivery and the flow-suspend
        event. A delivery that finishes in that step (the common case: its queue has room) is done
        without the four tasks and the ``asyncio.wait`` (~30 us a message); one that waits is
        raced with the rest as before."""
        first, *rest = coros
        if asyncio.iscoroutine(first) and not (self._stopped.is_set() or self._crashed.is_set()):
            finished, outcome = eager.start(first)
            if finished:
                for unused in rest:
                    # The flow-suspend wait, made by the caller and never started: closed, it does
                    # not warn "never awaited" (a warning per message).
                    if asyncio.iscoroutine(unused):
                        unused.close()
                return WaitResults([first], [outcome], False)
            return await super().wait_first(outcome, *rest, timeout=timeout)
        return await super().wait_first(*coros, timeout=timeout)

    def _done(self, tp: TP) -> Callable[[int], bool]:
        committed = self._committed_offset[tp]
        acked = self._acked_index[tp]
        return lambda offset: offset in acked or (committed is not None and offset < committed)

    def in_order(self, message: Any) -> bool:
        """Whether a stream that applies its partition in offset order (``admit``) may apply
        ``message`` now. Called for each message it takes, in the order taken; one refused must be
        left unacked (``stream.batching.Stream.hold``): its offset is fetched again after the one
        passed over, and applied then."""
        tp = message.tp
        frontier = max(self._frontier.get(tp, 0), self._committed_offset[tp] or 0)
        admitted, self._frontier[tp] = admit(
            message.offset, frontier, lambda lo, hi: self._delivered[tp].outstanding(lo, hi, self._done(tp))
        )
        return admitted

    def _new_offset(self, tp: TP) -> int | None:
        acked = self._acked[tp]
        floors = (self._delivered[tp].floor(self._done(tp)), cast(Any, self.app).commit_floor(tp))
        now, held = split_at(acked, min((f for f in floors if f is not None), default=None))
        if not held:
            return super()._new_offset(tp)
        # Faust's own rules (gaps, the committed head) apply to what may be committed now; the held
        # acks stay in its list and index for a later commit.
        acked[:] = now
        try:
            return super()._new_offset(tp)
        finally:
            acked.extend(held)
            acked.sort()

    async def force_commit(self, *args: Any, **kwargs: Any) -> bool:
        if not self.app.rebalancing:
            await self._fetch_dropped_again()
        committed = await super().force_commit(*args, **kwargs)
        for tp, delivered in self._delivered.items():
            delivered.forget_done(self._done(tp))
        return committed

    async def _fetch_dropped_again(self) -> None:
        """Seek each partition back to its first dropped message: what comes again after it and was
        processed already is deduplicated downstream (docs/guarantees.md). Commits come every few
        hundred ms at times; a seek repeated before the fetch it started could return would start
        it over, so the same offset is sought again only after ``REFETCH_AFTER_S``."""
        if self.should_stop:
            return
        assigned = self.assignment()
        now = time.monotonic()
        again: dict[TP, int] = {}
        for tp, delivered in list(self._delivered.items()):
            offset = delivered.first_dropped(self._done(tp))
            if offset is None or tp not in assigned:
                continue
            last = self._refetched.get(tp)
            if last is None or last[0] != offset or now - last[1] >= REFETCH_AFTER_S:
                self._refetched[tp] = (offset, now)
                log.warning(
                    "%s[%s]@%s was dropped unprocessed: fetching it again", tp.topic, tp.partition, offset
                )
                again[tp] = offset
        if again:
            await self.seek_on_consumer_thread(again)

    async def seek_on_consumer_thread(self, positions: Mapping[TP, int]) -> None:
        """Seek (and set Faust's read offsets) on the thread that runs aiokafka's consumer. Faust's
        ``seek`` calls aiokafka's from the app's loop: it wakes the fetcher through a future of the
        consumer thread's loop set from another thread, and changes the fetcher's state while that
        thread may be fetching (asyncio's debug mode raises "Non-thread-safe operation")."""
        await self.seek_wait(positions)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """Faust's seek, and a partition of streamrec's with no committed offset, or offset 0
        committed, starts at its earliest offset: aiokafka seeks neither, and leaves it wherever its
        position is. With no commit, after a takeover the survivor began a dead worker's partitions
        at their end (every query sent to them since the kill unanswered). With 0 (every input
        partition is anchored there when created, ``workers.kafka_clients.anchor_group_offsets``),
        the position had moved past records fetched during a rebalance and never handed over: Faust
        seeks to the committed offsets to fetch those again, and Faust's commit (its committed offset
        is unknown: it reads 0 as none) then passed them. Other partitions are left to aiokafka: an
        extra seek is not free (a message handed over as one lands was seen dropped)."""
        committed = await super().seek_to_committed()
        unstarted = [
            tp
            for tp, offset in committed.items()
            if not offset and not self._is_changelog_tp(tp) and self.app.topics.acks_enabled_for(tp.topic)
        ]
        if unstarted:
            earliest = await self.earliest_offsets(*unstarted)
            await self.seek_on_consumer_thread({tp: earliest[tp] for tp in unstarted})
        return committed

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        # Faust forgets the committed offsets and acks of revoked partitions first, then commits
        # while the actors finish: what is done must be known before that.
        for tp in revoked:
            self._delivered[tp].forget_done(self._done(tp))
        await super().on_partitions_revoked(revoked)
        for tp in revoked:
            self._delivered.pop(tp, None)
            self._refetched.pop(tp, None)
            self._frontier.pop(tp, None)


class DrainingProducerBuffer(ProducerBuffer):
    """Faust's send buffer, whose ``flush`` waits for every message put before it was called."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.put_count = 0
        self.handed_over = 0

    def put(self, fut: Any) -> None:
        super().put(fut)
        self.put_count += 1

    async def _send_pending(self, fut: Any) -> None:
        try:
            await super()._send_pending(fut)
        finally:
            self.handed_over += 1

    async def flush(self) -> None:
        target = self.put_count
        while self.handed_over < target:
            if self.state != "running" and self.size:  # as Faust's: nothing will send them now
                raise RuntimeError(f"Cannot flush: producer buffer {self.state} with {self.size} to send")
            self.message_sent.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.message_sent.wait(), timeout=0.1)


class SafeProducer(aiokafka_driver.Producer):
    """Idempotent (faust-streaming 0.15 has no setting for it and enables it only inside
    transactions: a send retried after a lost acknowledgement was written twice, an output or a
    changelog entry; acks=all is what idempotence requires), with the draining send buffer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.buffer = DrainingProducerBuffer(loop=self.loop, beacon=self.beacon)
        self.buffer.app = self.app

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class SafeTransport(aiokafka_driver.Transport):
    Producer = SafeProducer
    Consumer = InFlightSafeConsumer
