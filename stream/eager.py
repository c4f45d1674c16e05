"""Running a coroutine's first step at once, in the caller, instead of in a new task.

faust-streaming's fetcher hands each message over in ``Service.wait_first(deliver(message),
suspend_flow.wait())``: four tasks and an ``asyncio.wait`` per message, ~30 us, a tenth of what an
ingested event costs the worker (docs/performance.md, twelfth session). The delivery almost never
waits (it puts the event in a queue that has room), and a coroutine that finishes in its first step
needs no task and has nothing to race. ``start`` runs that step; only one that waits is finished by
an awaitable (``resume``) raced as before.
"""

from __future__ import annotations

import types
from collections.abc import Coroutine, Generator
from typing import Any


def start(coro: Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
    """Run ``coro`` until it first waits: ``(True, result)`` if it finished, else ``(False,
    awaitable)``, the awaitable finishing it with its result. An exception in that step is raised
    here, as awaiting it would. The step runs in the caller's context (a task would run it in a
    copy): for code that sets no context variables."""
    try:
        waiting_on = coro.send(None)
    except StopIteration as stop:
        return True, stop.value
    return False, resume(coro, waiting_on)


async def resume(coro: Coroutine[Any, Any, Any], waiting_on: Any) -> Any:
    """The rest of ``coro``, which yielded ``waiting_on`` (a future, or None for a bare yield)."""
    return await _drive(coro, waiting_on)


@types.coroutine
def _drive(coro: Coroutine[Any, Any, Any], waiting_on: Any) -> Generator[Any, None, Any]:
    # The task awaiting this sees what ``coro`` yields, and what it sends or throws back (a result
    # is always None; an exception, e.g. a cancellation) goes on to ``coro``: ``yield from`` for a
    # coroutine whose first step already ran.
    while True:
        try:
            yield waiting_on
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # thrown in by the task (a cancellation): coro decides
            try:
                waiting_on = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                waiting_on = coro.send(None)
            except StopIteration as stop:
                return stop.value
