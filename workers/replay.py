"""``streamrec replay``: publish MovieLens-100K as a realistic stream.

The catalog goes to ``items``; ratings become ``purchase`` events (a watched movie is the conversion
of a movie catalog) in timestamp order with a seeded tie-break, with time compressed by ``speed``;
synthetic search queries are interleaved, each built from an item the user is about to watch
(a genre, a decade, or a word of its title), as a person searching for it would type.
Event and query timestamps are the wall-clock send time, so latency is measured from them.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from stream.records import Event, Item, Query
from stream.settings import Settings
from workers.kafka_clients import ensure_topics, producer
from workers.movielens import Interaction, load_interactions, load_items

_WORD = re.compile(r"[A-Za-z]{4,}")
_SKIP_WORDS = frozenset({"the", "and", "with", "from", "that", "this", "part", "movie", "film"})


@dataclass(frozen=True)
class ReplayPlan:
    items: list[Item]
    stream: list[Event | Query]  # in send order; timestamps filled at send time


def query_text(item: Item, rng: random.Random) -> str:
    """A plausible search for ``item``: one of its genres, its decade, or a word of its title."""
    genres = item.categories or ["movies"]
    year = item.attributes.get("year")
    words = [w for w in _WORD.findall(re.sub(r"\(\d{4}\)", "", item.title)) if w.lower() not in _SKIP_WORDS]
    choice = rng.random()
    if words and choice < 0.4:
        return rng.choice(words).lower()
    if isinstance(year, int) and choice < 0.7:
        return f"{rng.choice(genres).lower()} from the {year // 10 * 10 % 100:02d}s"
    return f"{rng.choice(genres).lower()} movies"


def plan(
    n_events: int | None,
    n_queries: int,
    seed: int = 0,
    interactions: list[Interaction] | None = None,
    catalog: dict[str, Item] | None = None,
) -> ReplayPlan:
    """The messages to send: the first ``n_events`` ratings and ``n_queries`` queries spread among them."""
    catalog = catalog if catalog is not None else load_items()
    rows = interactions if interactions is not None else load_interactions(seed=seed)
    rows = rows[:n_events] if n_events is not None else rows
    rng = random.Random(seed)
    query_at = set(rng.sample(range(len(rows)), min(n_queries, len(rows))))
    stream: list[Event | Query] = []
    for idx, row in enumerate(rows):
        if idx in query_at:
            stream.append(
                Query(
                    request_id=f"q-{seed}-{idx}",
                    user_id=row.user_id,
                    text=query_text(catalog[row.item_id], rng),
                    ts=row.ts,
                    k=10,
                )
            )
        stream.append(
            Event(event_id=f"ml-{idx}", user_id=row.user_id, item_id=row.item_id, type="purchase", ts=row.ts)
        )
    return ReplayPlan(items=list(catalog.values()), stream=stream)


def _paced(
    messages: list[Event | Query], speed: float, max_rate: float
) -> Iterator[tuple[float, Event | Query]]:
    """(delay before sending, message): original gaps divided by ``speed``, capped at ``max_rate``/s."""
    previous = messages[0].ts if messages else 0.0
    min_gap = 1.0 / max_rate if max_rate > 0 else 0.0
    for msg in messages:
        gap = (msg.ts - previous) / speed if speed > 0 else 0.0
        previous = msg.ts
        yield max(gap, min_gap), msg


async def publish_items(settings: Settings, items: list[Item]) -> int:
    """Send the catalog to ``items`` (keyed by item_id), stamped with the current time."""
    await ensure_topics(settings)
    prod = producer(settings)
    await prod.start()
    try:
        for item in items:
            stamped = item.model_copy(update={"updated_at": time.time()})
            await prod.send(settings.topic("items"), key=item.item_id.encode(), value=stamped.to_json())
        await prod.flush()
    finally:
        await prod.stop()
    return len(items)


async def publish_stream(
    settings: Settings,
    messages: list[Event | Query],
    speed: float = 0.0,
    max_rate: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
    on_sent: Callable[[Event | Query], None] | None = None,
) -> dict[str, int]:
    """Send events and queries in order, paced; timestamps are rewritten to the send time."""
    await ensure_topics(settings)
    prod = producer(settings)
    await prod.start()
    counts = {"events": 0, "queries": 0}
    try:
        started = time.monotonic()
        budget = 0.0
        total = len(messages)
        for n, (delay, msg) in enumerate(_paced(messages, speed, max_rate), start=1):
            budget += delay
            ahead = budget - (time.monotonic() - started)
            if ahead > 0.002:
                await asyncio.sleep(ahead)
            stamped = msg.model_copy(update={"ts": time.time()})
            topic = "queries" if isinstance(stamped, Query) else "events"
            counts[topic] += 1
            # send() only enqueues into the producer's batch; the awaited part is the buffer, not the ack.
            await prod.send(settings.topic(topic), key=msg.user_id.encode(), value=stamped.to_json())
            if on_sent is not None:
                on_sent(stamped)
            if progress is not None and (n % 500 == 0 or n == total):
                progress(n, total)
        await prod.flush()
    finally:
        await prod.stop()
    return counts


async def publish(
    settings: Settings,
    replay: ReplayPlan,
    speed: float = 0.0,
    max_rate: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """The catalog, then the stream; returns counts."""
    counts = {"items": await publish_items(settings, replay.items)}
    counts.update(await publish_stream(settings, replay.stream, speed, max_rate, progress))
    return counts
