"""A commit covers only finished work: below the first message handed to the streams and not done,
after the send buffer has handed over what was put before it; dropped messages are fetched again
(stream.commits)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from types import SimpleNamespace
from typing import Any, cast

from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.transport.producer import ProducerBuffer
from faust.types import TP
from faust.types.tuples import ConsumerMessage
from intervaltree import IntervalTree

from stream.commits import (
    REFETCH_AFTER_S,
    Delivered,
    DrainingProducerBuffer,
    InFlightSafeConsumer,
    admit,
    split_at,
)

TOPIC = "queries"
P0 = TP(TOPIC, 0)


def message(offset: int, tp: TP = P0, *, tracked: bool = False) -> ConsumerMessage:
    m = ConsumerMessage(tp.topic, tp.partition, offset, 0.0, 0, None, b"k", b"v", None)
    m.tracked = tracked
    return m


def consumer(
    cls: type[Any],
    committed: int | None,
    acked: list[int],
    delivered: list[ConsumerMessage],
    commit_floor: int | None = None,
) -> Any:
    """Just the commit bookkeeping of Faust's consumer: no transport, no broker. ``commit_floor``:
    the app's lowest offset with effects not yet written (stream.writebehind)."""
    c = object.__new__(cls)
    c.app = SimpleNamespace(commit_floor=lambda tp: commit_floor if tp == P0 else None)
    c._acked = defaultdict(list, {P0: list(acked)})
    c._acked_index = defaultdict(set, {P0: set(acked)})
    c._gap = defaultdict(IntervalTree)
    c._committed_offset = defaultdict(lambda: None, {P0: committed})
    c._unacked_messages = {m for m in delivered if m.tracked}
    c._delivered = defaultdict(Delivered)
    c._refetched = {}
    c._frontier = {}
    c._stopped = asyncio.Event()
    c._crashed = asyncio.Event()
    for m in delivered:
        c._delivered[m.tp].add(m)
    return c


def test_faust_alone_commits_over_a_message_still_in_flight() -> None:
    # faust-streaming issue #606: offset 2585 is still being processed by another actor.
    slow = message(2585, tracked=True)
    faust_consumer = consumer(aiokafka_driver.Consumer, 2585, [2586, 2587, 2588, 2589], [slow])
    assert faust_consumer._new_offset(P0) == 2590


def test_no_commit_past_a_message_in_flight_at_the_head() -> None:
    slow = message(2585, tracked=True)
    done = [message(o, tracked=True) for o in (2586, 2587, 2588, 2589)]
    c = consumer(InFlightSafeConsumer, 2585, [2586, 2587, 2588, 2589], [slow, *done])
    assert c._new_offset(P0) is None
    # The held acks are kept for later, in order, and in the index.
    assert c._acked[P0] == [2586, 2587, 2588, 2589]
    assert c._acked_index[P0] == {2586, 2587, 2588, 2589}
    # Once the slow message is acked, the whole run is committed.
    slow.acked = True
    c._acked[P0].append(2585)
    c._acked_index[P0].add(2585)
    assert c._new_offset(P0) == 2590
    assert c._acked[P0] == []


def test_no_commit_past_a_message_in_flight_when_the_committed_offset_is_unknown() -> None:
    # After a revocation Faust forgets the committed offset, then commits while the actors finish.
    c = consumer(InFlightSafeConsumer, None, [104, 105, 106], [message(100, tracked=True)])
    assert c._new_offset(P0) is None
    assert c._acked[P0] == [104, 105, 106]


def test_no_commit_past_a_message_still_queued_or_dropped() -> None:
    queued = message(7)  # handed over, in a channel's queue: not taken by a stream yet
    c = consumer(InFlightSafeConsumer, 5, [5, 6, 8, 9], [queued])
    assert c._new_offset(P0) == 7
    c = consumer(InFlightSafeConsumer, 5, [5, 6, 8, 9], [message(7)])  # gone at once: dropped
    assert c._new_offset(P0) == 7


def test_commits_up_to_the_first_message_not_done() -> None:
    in_flight = [message(105, tracked=True), message(103, tracked=True)]
    c = consumer(InFlightSafeConsumer, 100, [100, 101, 102, 106, 107], in_flight)
    assert c._new_offset(P0) == 103
    assert c._acked[P0] == [106, 107]
    assert c._acked_index[P0] == {106, 107}


def test_no_commit_past_a_message_whose_effects_are_not_written_yet() -> None:
    # Offsets 100-106 are acked; 103 changed a table value still pending (stream.writebehind).
    c = consumer(InFlightSafeConsumer, 100, [100, 101, 102, 103, 104, 105, 106], [], commit_floor=103)
    assert c._new_offset(P0) == 103
    assert c._acked[P0] == [103, 104, 105, 106]
    # With a message in flight below it, the lower of the two holds.
    c = consumer(
        InFlightSafeConsumer, 100, [100, 102, 103, 104], [message(101, tracked=True)], commit_floor=103
    )
    assert c._new_offset(P0) == 101
    # Once written, the whole run goes.
    c = consumer(InFlightSafeConsumer, 100, [100, 101, 102, 103, 104, 105, 106], [], commit_floor=None)
    assert c._new_offset(P0) == 107


def test_nothing_handed_over_and_unfinished_commits_like_faust() -> None:
    for committed, acked in ((10, [10, 11, 12]), (10, [11, 12]), (10, [14, 15]), (None, [3, 4, 6])):
        ours = consumer(InFlightSafeConsumer, committed, acked, [])
        theirs = consumer(aiokafka_driver.Consumer, committed, acked, [])
        assert ours._new_offset(P0) == theirs._new_offset(P0)


def test_a_message_faust_let_go_of_unprocessed_is_dropped() -> None:
    delivered = Delivered()
    kept = [message(o, tracked=True) for o in (1, 3)]
    for m in kept:
        delivered.add(m)
    delivered.add(message(2))  # no reference left: Faust dropped it without an ack
    assert delivered.first_dropped(lambda o: o == 1) == 2
    assert delivered.floor(lambda o: o == 1) == 2


def test_a_message_passed_over_by_the_streams_is_dropped_one_still_queued_is_not() -> None:
    skipped, taken, queued = message(10), message(11, tracked=True), message(12)
    delivered = Delivered()
    for m in (skipped, taken, queued):
        delivered.add(m)
    # 11 was taken from the FIFO queue, so 10 was passed over; 12 may still be waiting in it.
    assert delivered.first_dropped(lambda o: False) == 10
    skipped.tracked = True  # in flight after all: not dropped
    assert delivered.first_dropped(lambda o: False) is None
    assert delivered.floor(lambda o: o == 10) == 11


def test_done_messages_are_forgotten() -> None:
    kept = [message(o) for o in range(5)]
    delivered = Delivered()
    for m in kept:
        delivered.add(m)
    delivered.forget_done(lambda o: o < 3)
    assert len(delivered) == 2
    assert delivered.floor(lambda o: False) == 3


def test_admit_keeps_a_partition_in_offset_order() -> None:
    nothing: Any = lambda lo, hi: False  # noqa: E731
    held_back: Any = lambda lo, hi: lo <= 11 < hi  # noqa: E731  (11 handed over, not done)
    assert admit(10, 10, nothing) == (True, 11)  # the next one
    assert admit(7, 10, held_back) == (True, 10)  # a redelivery of finished work
    assert admit(12, 11, held_back) == (False, 11)  # 11 was passed over: 12 waits for it
    assert admit(11, 11, held_back) == (True, 12)  # 11 fetched again
    assert admit(15, 12, nothing) == (True, 16)  # a gap nothing was handed over for


def test_outstanding_looks_at_what_was_handed_over_and_not_done() -> None:
    kept = [message(o, tracked=True) for o in (3, 5, 9)]
    delivered = Delivered()
    for m in kept:
        delivered.add(m)
    assert delivered.outstanding(4, 9, lambda o: False)  # 5
    assert not delivered.outstanding(4, 9, lambda o: o == 5)
    assert not delivered.outstanding(6, 9, lambda o: False)
    assert delivered.outstanding(0, 10_000, lambda o: o != 9)  # a wide gap: scans the refs instead


def test_an_event_after_one_passed_over_waits_until_that_one_comes_again() -> None:
    # 21 was handed over and skipped by its stream (gone, never acked); 22 and 23 were taken.
    first = [message(20, tracked=True), message(22, tracked=True), message(23, tracked=True)]
    c = consumer(InFlightSafeConsumer, 20, [], [first[0], message(21), *first[1:]])
    assert [c.in_order(m) for m in first] == [True, False, False]
    # The seek back to 21 hands 21, 22, 23 over again: applied in order, then the stale 22 is a
    # redelivery of finished work.
    again = [message(o, tracked=True) for o in (21, 22, 23)]
    for m in again:
        c._delivered[P0].add(m)
    assert [c.in_order(m) for m in again] == [True, True, True]
    assert c.in_order(first[1])


def test_a_gap_nothing_was_handed_over_for_is_passed() -> None:
    taken = [message(30, tracked=True), message(33, tracked=True)]  # 31 and 32: transaction markers
    c = consumer(InFlightSafeConsumer, None, [], taken)
    assert [c.in_order(m) for m in taken] == [True, True]


async def test_a_dropped_message_is_fetched_again() -> None:
    kept = [message(20, tracked=True), message(22, tracked=True)]
    c = consumer(InFlightSafeConsumer, 20, [20, 22], [*kept, message(21)])
    seeks: list[tuple[TP, int]] = []

    async def seek_wait(positions: dict[TP, int]) -> None:
        seeks.extend(positions.items())

    c.assignment = lambda: {P0}
    c.seek_wait = seek_wait
    await c._fetch_dropped_again()
    assert seeks == [(P0, 21)]
    await c._fetch_dropped_again()  # a commit soon after: the fetch started by the seek goes on
    assert seeks == [(P0, 21)]
    c._refetched[P0] = (21, time.monotonic() - REFETCH_AFTER_S)  # still not back: seek again
    await c._fetch_dropped_again()
    assert seeks == [(P0, 21), (P0, 21)]
    c._refetched.clear()
    c.assignment = set  # revoked meanwhile: left to its next owner
    await c._fetch_dropped_again()
    assert seeks == [(P0, 21), (P0, 21)]


class FakeThread:
    """The consumer thread's answers: committed offsets, earliest offsets; seeks recorded."""

    def __init__(self, committed: dict[TP, int | None], earliest: dict[TP, int]) -> None:
        self.committed = committed
        self.earliest = earliest
        self.seeks: list[tuple[TP, int]] = []
        self.seeks_from_another_thread: list[tuple[TP, int]] = []

    async def seek_to_committed(self) -> dict[TP, int | None]:
        return dict(self.committed)

    async def seek_wait(self, positions: dict[TP, int]) -> None:
        """Faust's seek run on the consumer's own thread (``call_thread``)."""
        self.seeks.extend(positions.items())

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        return {tp: self.earliest[tp] for tp in tps}

    def seek(self, tp: TP, offset: int) -> None:
        """Faust's ``_seek``: aiokafka's seek called from the app's loop, not the consumer's."""
        self.seeks_from_another_thread.append((tp, offset))


async def test_a_partition_with_no_committed_offset_or_0_starts_at_its_earliest() -> None:
    P1, P2, P3, CHANGELOG = TP(TOPIC, 1), TP(TOPIC, 2), TP(TOPIC, 3), TP("profiles-changelog", 0)
    c = consumer(InFlightSafeConsumer, None, [], [])
    c._thread = FakeThread(
        {P0: 12, P1: None, P2: 0, P3: 0, CHANGELOG: None}, {P1: 3, P2: 0, P3: 7, CHANGELOG: 0}
    )
    c.app = SimpleNamespace(
        tables=SimpleNamespace(changelog_topics={"profiles-changelog"}),
        topics=SimpleNamespace(acks_enabled_for=lambda topic: topic == TOPIC),
    )
    committed = await c.seek_to_committed()
    # Offset 12 committed: aiokafka sought it. Offset 0 (the anchor) or none: aiokafka leaves the
    # position where it is, which a fetch during a rebalance may have moved past records never
    # handed over. Table changelogs are Faust's to place.
    assert c._thread.seeks == [(P1, 3), (P2, 0), (P3, 7)]
    assert c._thread.seeks_from_another_thread == []
    assert committed == {P0: 12, P1: None, P2: 0, P3: 0, CHANGELOG: None}


def test_split_at() -> None:
    assert split_at([1, 2, 5, 6], 5) == ([1, 2], [5, 6])
    assert split_at([1, 2], None) == ([1, 2], [])


class SlowChannel:
    """A topic whose ``publish_message`` takes longer than Faust's 0.1 s flush patience."""

    def __init__(self, delay_s: float, count: int) -> None:
        self.delay_s = delay_s
        self.count = count
        self.published: list[int] = []
        self.all_out = asyncio.Event()

    async def publish_message(self, fut: Any, wait: bool = False) -> None:
        await asyncio.sleep(self.delay_s)
        self.published.append(fut.n)
        if len(self.published) == self.count:
            self.all_out.set()


def future_message(channel: SlowChannel, n: int) -> Any:
    return SimpleNamespace(n=n, message=SimpleNamespace(channel=channel))


async def flushed_after(buffer_cls: type[ProducerBuffer], count: int) -> list[int]:
    """What a flush of ``count`` slow messages leaves handed over when it returns."""
    channel = SlowChannel(delay_s=0.25, count=count)
    buffer = buffer_cls()
    buffer.app = cast(Any, SimpleNamespace(conf=SimpleNamespace(producer_threaded=False)))
    await buffer.start()
    try:
        for n in range(count):
            buffer.put(future_message(channel, n))
        await buffer.flush()
        handed_over = list(channel.published)
        # Let the rest go out before stopping: Faust's stop flushes too.
        await asyncio.wait_for(channel.all_out.wait(), timeout=5)
        return handed_over
    finally:
        await buffer.stop()


async def test_faust_alone_flushes_before_its_buffer_is_empty() -> None:
    assert len(await flushed_after(ProducerBuffer, 3)) < 3


async def test_a_flush_returns_once_everything_put_before_it_is_handed_over() -> None:
    assert await flushed_after(DrainingProducerBuffer, 3) == [0, 1, 2]
