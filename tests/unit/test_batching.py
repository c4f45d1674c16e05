"""``stream.batching.Stream.take_events``: a window that opens at a batch's first event, no timer while idle."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from stream.app import app
from stream.batching import Stream

WITHIN = 0.2


def test_the_app_streams_with_the_batching_stream() -> None:
    assert app.conf.Stream is Stream


class Batches:
    """A test agent's view of what ``take_events`` yielded, and when."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, list[Any]]] = []
        self.got = asyncio.Event()
        self.read = 0

    async def agent(self, stream: Any, max_: int) -> None:
        async for batch in stream.take_events(max_, within=WITHIN):
            self.seen.append((time.monotonic(), [e.value for e in batch]))
            self.got.set()

    async def next(self) -> tuple[float, list[Any]]:
        """The next batch not returned yet (waiting for it if need be)."""
        while len(self.seen) <= self.read:
            self.got.clear()
            await asyncio.wait_for(self.got.wait(), 5.0)
        self.read += 1
        return self.seen[self.read - 1]


@contextlib.asynccontextmanager
async def batching_agent(max_: int) -> AsyncIterator[tuple[Any, Batches]]:
    """A fresh channel agent on the app whose ``take_events`` batches at most ``max_`` events."""
    batches = Batches()

    async def agent(stream: Any) -> None:
        await batches.agent(stream, max_)

    name = f"batching_{uuid.uuid4().hex[:8]}"
    async with app.agent(name=name)(agent).test_context() as running:
        yield running, batches


async def test_a_lone_event_waits_the_window_from_its_own_arrival() -> None:
    async with batching_agent(10) as (agent, batches):
        await asyncio.sleep(WITHIN * 1.5)  # idle for longer than a window: no tick is pending
        sent = time.monotonic()
        await agent.put("a")
        at, values = await batches.next()
    assert values == ["a"]
    # Faust's take_events yields at its next tick (0..WITHIN later); this one waits the window.
    assert at - sent >= WITHIN * 0.9
    assert at - sent < WITHIN * 10  # generous: two shared cores


async def test_a_full_batch_leaves_at_once_and_order_is_kept() -> None:
    async with batching_agent(3) as (agent, batches):
        started = time.monotonic()
        for value in range(7):
            await agent.put(value)
        got = [await batches.next() for _ in range(3)]
    assert [values for _, values in got] == [[0, 1, 2], [3, 4, 5], [6]]
    assert got[0][0] - started < WITHIN * 0.9  # full: not held for the window
    assert got[2][0] - got[1][0] >= WITHIN * 0.9  # the remainder waited its window


async def test_an_idle_stream_does_not_wake_up(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    original = Stream.wait_for_stopped

    async def counted(self: Any, *args: Any, **kwargs: Any) -> bool:
        nonlocal calls
        calls += 1
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(Stream, "wait_for_stopped", counted)
    async with batching_agent(10) as (agent, batches):
        await agent.put("a")
        await batches.next()
        before = calls
        await asyncio.sleep(WITHIN * 5)  # Faust's take_events would have woken ~5 times
        idle_calls = calls - before
        await agent.put("b")
        assert (await batches.next())[1] == ["b"]
    assert idle_calls <= 1  # one wait for the next batch's first event, no timer
