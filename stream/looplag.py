"""How late the worker's event loop runs. Faust's agents, timers, commits and web server share one
loop, so while any of them holds it (a batch's pure-Python gathering, a table scan, a garbage
collection) every query in flight waits: the probe's lateness is that wait, seen from outside."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

PROBE_INTERVAL_S = 0.25


async def probe(
    observe: Callable[[float], None], interval_s: float = PROBE_INTERVAL_S, rounds: int | None = None
) -> None:
    """Sleep ``interval_s`` and ``observe`` how many seconds past that the loop woke, ``rounds``
    times (forever by default)."""
    loop = asyncio.get_running_loop()
    done = 0
    while rounds is None or done < rounds:
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        observe(max(0.0, loop.time() - due))
        done += 1
