"""A coroutine's first step run in the caller, its rest in a task (stream.eager), and the fetcher's
per-message hand-over that uses it (stream.commits.InFlightSafeConsumer.wait_first)."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

from stream import eager
from stream.commits import InFlightSafeConsumer


async def no_wait(log: list[str]) -> str:
    log.append("ran")
    return "done"


async def waits_for(fut: asyncio.Future[int], log: list[str]) -> int:
    log.append("before")
    await asyncio.sleep(0)  # a bare yield
    value = await fut
    log.append("after")
    return value * 2


def test_a_coroutine_that_does_not_wait_finishes_in_start() -> None:
    log: list[str] = []
    assert eager.start(no_wait(log)) == (True, "done")
    assert log == ["ran"]


def test_an_exception_in_the_first_step_is_raised_by_start() -> None:
    async def fails() -> None:
        raise ValueError("bad message")

    with pytest.raises(ValueError, match="bad message"):
        eager.start(fails())


async def test_a_coroutine_that_waits_is_finished_by_the_awaitable_with_its_result() -> None:
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    log: list[str] = []
    finished, rest = eager.start(waits_for(fut, log))
    assert not finished and log == ["before"]
    task = asyncio.ensure_future(rest)
    for _ in range(3):
        await asyncio.sleep(0)
    assert not task.done() and log == ["before"]
    fut.set_result(21)
    assert await task == 42
    assert log == ["before", "after"]


async def test_an_exception_after_the_first_step_reaches_the_awaiter() -> None:
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    finished, rest = eager.start(waits_for(fut, []))
    assert not finished
    task = asyncio.ensure_future(rest)
    fut.set_exception(KeyError("gone"))
    with pytest.raises(KeyError, match="gone"):
        await task


async def test_cancelling_the_task_cancels_the_coroutine_which_may_clean_up() -> None:
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    log: list[str] = []

    async def cleans_up() -> None:
        try:
            await fut
        finally:
            log.append("cleaned up")

    _, rest = eager.start(cleans_up())
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["cleaned up"] and fut.cancelled()


async def test_a_coroutine_may_catch_the_cancellation_and_return() -> None:
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def shrugs() -> str:
        try:
            await fut
        except asyncio.CancelledError:
            return "stopped"
        return "finished"

    _, rest = eager.start(shrugs())
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    task.cancel()
    assert await task == "stopped"


def bare_consumer() -> Any:
    c = object.__new__(InFlightSafeConsumer)
    c._loop = None
    c._stopped = asyncio.Event()
    c._crashed = asyncio.Event()
    return c


async def test_a_delivery_that_does_not_wait_is_handed_over_without_a_task() -> None:
    c = bare_consumer()
    tasks_before = len(asyncio.all_tasks())
    log: list[str] = []
    suspend_flow = asyncio.Event()
    started: list[int] = []

    async def deliver(n: int) -> None:
        started.append(len(asyncio.all_tasks()))
        log.append(f"m{n}")

    for n in range(3):
        suspended = suspend_flow.wait()
        result = await c.wait_first(deliver(n), suspended)
        assert not result.stopped and result.results == [None]
        # Never started, and closed: left unawaited, each would warn once it is collected.
        assert inspect.getcoroutinestate(suspended) == inspect.CORO_CLOSED
    assert log == ["m0", "m1", "m2"]
    assert started == [tasks_before] * 3  # ran in the caller: Faust's race made four tasks a message
    assert len(asyncio.all_tasks()) == tasks_before


async def test_a_delivery_that_waits_is_raced_with_the_flow_suspending_as_in_faust() -> None:
    c = bare_consumer()
    suspend_flow = asyncio.Event()
    room: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    log: list[str] = []

    async def deliver() -> None:
        log.append("waiting for room")
        try:
            await room
            log.append("delivered")
        except asyncio.CancelledError:
            log.append("given up")
            raise

    waiting = asyncio.ensure_future(c.wait_first(deliver(), suspend_flow.wait()))
    await asyncio.sleep(0.01)
    assert not waiting.done() and log == ["waiting for room"]
    suspend_flow.set()  # a rebalance begins: Faust stops waiting for this delivery
    result = await waiting
    assert result.results == [True] and not result.stopped  # the flow event won, not the delivery
    await asyncio.sleep(0)
    assert log == ["waiting for room", "given up"]

    suspend_flow.clear()
    room2: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def deliver_later() -> str:
        await room2
        return "delivered"

    waiting = asyncio.ensure_future(c.wait_first(deliver_later(), suspend_flow.wait()))
    await asyncio.sleep(0.01)
    room2.set_result(None)
    assert (await waiting).results == ["delivered"]


async def test_a_stopped_consumer_races_as_faust_does() -> None:
    c = bare_consumer()
    c._stopped.set()
    log: list[str] = []
    result = await c.wait_first(no_wait(log), asyncio.Event().wait())
    assert result.stopped
    assert log == ["ran"]  # Faust's race runs it in a task all the same
