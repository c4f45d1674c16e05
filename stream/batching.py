"""The stream class of the app: ``take_events`` whose batching window opens at a batch's first event.

Faust's ``take_events(max, within)`` wakes every ``within`` seconds whether or not anything came:
each wake builds three tasks and a timer (``Service.wait_first``). With four query actors on a
10 ms window that was ~400 wakes a second, most of the ~80 ms of CPU a second an idle worker
spent (py-spy, docs/performance.md), and the same ticks ran under load. Here an empty buffer waits
for its first event without a timer, and the window of at most ``within`` seconds starts then: a
batch still leaves within ``within`` of its first event, or as soon as it holds ``max`` events.

The rest is Faust 0.15's own ``take_events`` (acks after the batch is consumed, a full buffer
holding back the stream): it uses the stream's private hooks as Faust's version does, which is why
faust-streaming is pinned below 0.16 (pyproject.toml).
"""

from __future__ import annotations

import asyncio
from asyncio import CancelledError
from collections.abc import AsyncGenerator, Sequence
from typing import Any, cast

import faust
from faust.streams import _tracks_buffer_agen
from faust.types import ChannelT, EventT
from mode import Seconds, want_seconds
from mode.utils.aiter import aiter
from mode.utils.futures import notify
from mode.utils.locks import Event


class _Buffer:
    """The events a ``take_events`` batch gathers: filled by a processor on the stream, emptied by
    the generator once the batch is consumed (only then are its events acked)."""

    def __init__(self, stream: Stream, max_: int) -> None:
        self.stream = stream
        self.max = max_
        self.values: list[Any] = []
        self.events: list[EventT] = []
        self.full = Event()
        self.consumed = Event()
        self.first_added = Event()
        # Set while a batch is consumed: values arriving then wait for it (a batch never changes).
        self.consuming: asyncio.Future[None] | None = None
        self.held: set[int] = set()  # ids of the batch's events its consumer left unacked

    async def add(self, value: Any) -> Any:
        try:
            if self.consuming is not None:
                try:
                    await self.consuming
                finally:
                    self.consuming = None
            self.values.append(value)
            event = self.stream.current_event
            if event is None:
                raise RuntimeError("Take buffer found current_event is None")
            self.events.append(event)
            self.first_added.set()
            if len(self.values) >= self.max:
                self.full.set()
                self.consumed.clear()
                await self.stream.wait(self.consumed)  # never more than max in a batch
        except CancelledError:
            raise
        except Exception as exc:
            self.stream.log.exception("Error adding to take buffer: %r", exc)
            await self.stream.crash(exc)
        return value

    async def emptied(self) -> None:
        """After a batch: ack its events, then let the held-back values in."""
        self.values.clear()
        for event in self.events:
            if id(event) not in self.held:
                await self.stream.ack(event)
        self.events.clear()
        self.held.clear()
        if self.consuming is not None:
            notify(self.consuming)
        self.full.clear()
        self.first_added.clear()
        self.consumed.set()


class Stream(faust.Stream):
    _take_buffer: _Buffer | None = None

    def hold(self, event: EventT) -> None:
        """Leave ``event``, of the ``take_events`` batch being consumed, unacked: a commit then stops
        below it, and it is processed when it comes again."""
        if self._take_buffer is None:
            raise RuntimeError("hold() is for the events of a take_events batch")
        self._take_buffer.held.add(id(event))

    @_tracks_buffer_agen
    async def take_events(self, max_: int, within: Seconds) -> AsyncGenerator[Sequence[EventT], None]:
        """Batches of at most ``max_`` events, each yielded at most ``within`` seconds after its first
        event arrived; nothing runs while no event comes."""
        buffer = self._take_buffer = _Buffer(self, max_)
        timeout = want_seconds(within)
        stream_enable_acks: bool = self.enable_acks
        self.enable_acks = False  # acked by the buffer, once the batch has been consumed
        self.add_processor(buffer.add)
        self._enable_passive(cast(ChannelT, aiter(self.channel)))  # as Faust's take_events does
        try:
            while not self.should_stop:
                if not buffer.values and await self.wait_for_stopped(buffer.first_added):
                    break
                if not buffer.full.is_set():
                    await self.wait_for_stopped(buffer.full, timeout=timeout)
                if buffer.values:
                    buffer.consuming = self.loop.create_future()
                    try:
                        yield list(buffer.events)
                    finally:
                        await buffer.emptied()
        finally:
            self.enable_acks = stream_enable_acks
            self._processors.remove(buffer.add)
            self._take_buffer = None
