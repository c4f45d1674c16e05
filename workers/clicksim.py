"""A click simulator for the demo's learning loop: a simulation, not user data (docs/learning-loop.md).

Each simulated user is a real MovieLens user whose *held-out* behaviour (the items they rated after
the replayed slice, never sent to the pipeline) says what they want: shown one of those, they click
it with high probability, anything else rarely. Whether they look at a slot at all falls with its
rank (position bias: examination probability ``rank ** -bias``), so a ranker that puts what the
user will want higher collects more clicks, and the logged data carries the bias that exploration
propensities let an offline evaluation correct. Some clicks on wanted items convert (a purchase
with the same ``request_id``). Draws come from SHA-256 of (seed, request_id, item), so a run is
reproducible and a redelivered recommendation gets the same clicks.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from stream.records import Event, EventType
from stream.settings import Settings
from workers.kafka_clients import client_kwargs, producer
from workers.movielens import Interaction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClickModel:
    position_bias: float = 0.8  # examination probability at rank r: r ** -position_bias
    relevant_click: float = 0.8  # P(click | examined, the user later watches it)
    noise_click: float = 0.02  # P(click | examined, not wanted)
    convert: float = 0.3  # P(purchase | clicked a wanted item)

    def examined(self, rank: int) -> float:
        return float(rank) ** -self.position_bias


def held_out(interactions: Sequence[Interaction], replayed: int) -> dict[str, frozenset[str]]:
    """Per user, the items rated after the first ``replayed`` interactions (what the user wants next)."""
    later: dict[str, set[str]] = {}
    for row in interactions[replayed:]:
        later.setdefault(row.user_id, set()).add(row.item_id)
    return {u: frozenset(items) for u, items in later.items()}


def _uniform(seed: int, *parts: str) -> float:
    digest = hashlib.sha256("\x00".join((str(seed), *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@dataclass(frozen=True, slots=True)
class Reaction:
    item_id: str
    type: EventType


def react(rec: dict[str, Any], wants: frozenset[str], model: ClickModel, seed: int) -> list[Reaction]:
    """What the user does with one recommendation: clicks (and purchases) in rank order."""
    out = []
    rid = str(rec["request_id"])
    for item in rec["items"]:
        item_id, rank = str(item["item_id"]), int(item["rank"])
        if _uniform(seed, rid, item_id, "look") >= model.examined(rank):
            continue
        wanted = item_id in wants
        if _uniform(seed, rid, item_id, "click") >= (model.relevant_click if wanted else model.noise_click):
            continue
        out.append(Reaction(item_id, "click"))
        if wanted and _uniform(seed, rid, item_id, "buy") < model.convert:
            out.append(Reaction(item_id, "purchase"))
    return out


def events_for(rec: dict[str, Any], reactions: Iterable[Reaction], ts: float) -> list[Event]:
    return [
        Event(
            event_id=f"sim-{r.type}-{rec['request_id']}-{r.item_id}"[:64],
            user_id=rec["user_id"],
            item_id=r.item_id,
            type=r.type,
            ts=ts + 0.001 * n,
            request_id=rec["request_id"],
        )
        for n, r in enumerate(reactions)
    ]


class Stop(Protocol):
    def is_set(self) -> bool: ...


@dataclass
class ClickSimulator:
    """Reads ``recommendations`` as they arrive and answers them with simulated clicks on ``events``."""

    settings: Settings
    wants: dict[str, frozenset[str]]
    model: ClickModel = ClickModel()
    seed: int = 0
    seen: set[str] = field(default_factory=set)
    clicks: int = 0
    purchases: int = 0

    async def run(self, stop: Stop) -> None:
        consumer = AIOKafkaConsumer(
            self.settings.topic("recommendations"),
            **client_kwargs(self.settings),
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        out = producer(self.settings)
        await consumer.start()
        await out.start()
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200)
                now = time.time()
                for messages in batch.values():
                    for msg in messages:
                        await self._answer(out, orjson.loads(msg.value), now)
                await out.flush()
        finally:
            await out.stop()
            await consumer.stop()

    async def _answer(self, out: AIOKafkaProducer, rec: dict[str, Any], now: float) -> None:
        rid = rec["request_id"]
        if rid in self.seen or rec.get("trigger") != "query":
            return
        self.seen.add(rid)
        reactions = react(rec, self.wants.get(rec["user_id"], frozenset()), self.model, self.seed)
        for event in events_for(rec, reactions, now):
            self.clicks += event.type == "click"
            self.purchases += event.type == "purchase"
            await out.send(self.settings.topic("events"), key=event.user_id.encode(), value=event.to_json())
