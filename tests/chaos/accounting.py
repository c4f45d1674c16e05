"""Exact accounting of a chaos scenario: queries sent vs recommendations received, the profiles
changelog vs the pure fold of every event and query in the topics, and the item-stats changelog vs
the fold of the item-activity topic."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2

from stream.records import Item, Query
from stream.settings import Settings
from tests.support.stack import read_json_topic, read_topic
from tests.support.state import changelog_state, divergence, expected_item_stats, expected_profiles
from workers.kafka_clients import client_kwargs, producer

REPORT_ENV = "STREAMREC_CHAOS_REPORT"

COLUMNS = (
    "scenario",
    "sent",
    "received",
    "distinct",
    "duplicates",
    "missing",
    "divergent users",
    "divergent items",
    "fallback",
    "recovery (s)",
    "recovery measured",
)


@dataclass(frozen=True)
class Accounting:
    """What one scenario measured; ``row()`` is its line in docs/reliability.md."""

    scenario: str
    sent: int
    received: int
    distinct: int
    missing: int
    users: int
    divergent: int
    fallback: int
    recovery_s: float | None
    recovery_what: str = ""
    max_answers: int = 0
    notes: dict[str, Any] = field(default_factory=dict)
    # Rows recorded before the item statistics were accounted for (the sixth session's) have neither.
    stat_items: int = 0
    divergent_items: int = 0

    @property
    def duplicates(self) -> int:
        return self.received - self.distinct

    def row(self) -> str:
        recovery = "not recovered" if self.recovery_s is None else f"{self.recovery_s:.1f}"
        cells = [
            self.scenario,
            self.sent,
            self.received,
            self.distinct,
            self.duplicates,
            self.missing,
            f"{self.divergent} of {self.users}",
            f"{self.divergent_items} of {self.stat_items}",
            self.fallback,
            recovery,
            self.recovery_what,
        ]
        return "| " + " | ".join(str(c) for c in cells) + " |"

    def to_json(self) -> str:
        """Also the chaos tests' assertion message: pytest cuts any other object's repr to 240
        characters, which hid where the missing queries were."""
        return json.dumps({**asdict(self), "duplicates": self.duplicates}, sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> Accounting:
        data = json.loads(line)
        data.pop("duplicates", None)
        return cls(**data)

    def report(self) -> Accounting:
        """Append this row to the file named by ``STREAMREC_CHAOS_REPORT`` (if set), even when the
        test then fails: the table must show what was measured, not what was hoped for."""
        target = os.environ.get(REPORT_ENV)
        if target:
            with Path(target).open("a", encoding="utf-8") as out:
                out.write(self.to_json() + "\n")
        return self


def table(rows: Iterable[Accounting]) -> str:
    head = "| " + " | ".join(COLUMNS) + " |"
    rule = "|" + "|".join(" --- " for _ in COLUMNS) + "|"
    return "\n".join([head, rule, *(r.row() for r in rows)])


# --- answers -------------------------------------------------------------------------------------


def answers(settings: Settings) -> list[dict[str, Any]]:
    return read_json_topic(settings, "recommendations")


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 2.0) -> bool:
    """Like ``wait_for`` but returns False on timeout: the accounting then shows what is missing."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def account(
    scenario: str,
    settings: Settings,
    sent: Iterable[str],
    items: dict[str, Item],
    recovery_s: float | None,
    recovery_what: str,
    answer_timeout_s: float = 120.0,
    state_timeout_s: float = 60.0,
    **notes: Any,
) -> Accounting:
    """Wait (bounded) for every sent query to be answered and the changelog to settle, then count."""
    sent_ids = set(sent)

    def answered() -> bool:
        return sent_ids <= {a["request_id"] for a in answers(settings)}

    wait_until(answered, answer_timeout_s, interval_s=1.0)
    expected = expected_profiles(settings, items)
    wait_until(lambda: changelog_state(settings, "profiles") == expected, state_timeout_s, interval_s=1.5)
    diverging = divergence(changelog_state(settings, "profiles"), expected)
    expected_stats = expected_item_stats(settings)
    wait_until(lambda: changelog_state(settings, "item-stats") == expected_stats, state_timeout_s, 1.5)
    diverging_items = divergence(changelog_state(settings, "item-stats"), expected_stats)
    ours = [a for a in answers(settings) if a["request_id"] in sent_ids]
    counts = Counter(a["request_id"] for a in ours)
    if diverging:
        notes["first_divergent"] = dict(list(diverging.items())[:2])
    if diverging_items:
        notes["first_divergent_items"] = dict(list(diverging_items.items())[:2])
    most = max(counts.values(), default=0)
    if most > 1:
        # When each answer of the most-answered request was produced tells a crash's replay apart
        # from a later rebalance's.
        worst = next(r for r, n in counts.items() if n == most)
        notes["most_answered"] = {
            "request_id": worst,
            "produced_at": sorted(round(a["produced_at"], 2) for a in ours if a["request_id"] == worst),
        }
    missing = sorted(sent_ids - set(counts))
    if missing:
        notes["first_missing"] = missing[:5]
        notes["missing_where"] = asyncio.run(where_missing(settings, missing[:5]))
    return Accounting(
        scenario=scenario,
        sent=len(sent_ids),
        received=len(ours),
        distinct=len(counts),
        missing=len(missing),
        users=len(set(expected) | set(changelog_state(settings, "profiles"))),
        divergent=len(diverging),
        stat_items=len(set(expected_stats) | set(changelog_state(settings, "item-stats"))),
        divergent_items=len(diverging_items),
        fallback=sum(1 for a in ours if a["fallback"]),
        recovery_s=recovery_s,
        recovery_what=recovery_what,
        max_answers=most,
        notes=notes,
    ).report()


async def where_missing(settings: Settings, request_ids: list[str]) -> dict[str, Any]:
    """Where each unanswered request stands: its place in ``queries``, the consumer group's committed
    offset there, and any dead letter naming it. A query past the committed offset that nobody
    answered was skipped by a commit; one before it was never delivered; one dead-lettered failed."""
    wanted = set(request_ids)
    placed: dict[str, dict[str, Any]] = {}
    for m in await read_topic(settings, settings.topic("queries")):
        try:
            request_id = json.loads(m.value).get("request_id")
        except (ValueError, AttributeError):
            continue
        if request_id in wanted:
            placed[request_id] = {"partition": m.partition, "offset": m.offset}
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        committed = {
            tp.partition: meta.offset
            for tp, meta in (await admin.list_consumer_group_offsets(settings.app_id)).items()
            if tp.topic == settings.topic("queries")
        }
    finally:
        await admin.close()
    dead = {
        rid: d["reason"]
        for d in (json.loads(m.value) for m in await read_topic(settings, settings.topic("dead-letters")))
        for rid in wanted
        if rid in base64.b64decode(d.get("raw", "")).decode("utf-8", errors="replace")
    }
    return {
        rid: {
            **placed.get(rid, {"partition": None}),
            "committed": committed.get(placed.get(rid, {}).get("partition", -1)),
            "dead_letter": dead.get(rid),
        }
        for rid in request_ids
    }


# --- probes --------------------------------------------------------------------------------------


class Prober:
    """Publishes a query every ``interval_s`` from its own thread and producer, so the time to
    recover is measured from the fault's removal to the first answer of a query sent after it."""

    def __init__(self, settings: Settings, users: list[str], prefix: str, interval_s: float = 0.25) -> None:
        self.settings = settings
        self.users = users
        self.prefix = prefix
        self.interval_s = interval_s
        self.sent: list[Query] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> Prober:
        self._thread.start()
        return self

    def stop(self) -> list[Query]:
        self._stop.set()
        self._thread.join(60)
        return list(self.sent)

    async def _run(self) -> None:
        prod = producer(self.settings)
        await prod.start()
        try:
            n = 0
            while not self._stop.is_set():
                query = Query(
                    request_id=f"{self.prefix}-{n}",
                    user_id=self.users[n % len(self.users)],
                    text="comedy",
                    ts=time.time(),
                    k=10,
                )
                await prod.send(
                    self.settings.topic("queries"), key=query.user_id.encode(), value=query.to_json()
                )
                self.sent.append(query)
                n += 1
                await asyncio.sleep(self.interval_s)
            await prod.flush()
        finally:
            await prod.stop()

    def recovery_s(
        self, since: float, accept: Callable[[dict[str, Any]], bool] = lambda a: True
    ) -> float | None:
        """Seconds from ``since`` (wall clock) until every probed user (one per partition) has an
        accepted answer to a probe sent after it: the slowest partition decides."""
        after = {q.request_id: q.user_id for q in self.sent if q.ts >= since}
        first: dict[str, float] = {}
        for a in answers(self.settings):
            user = after.get(a["request_id"])
            if user is not None and accept(a):
                first[user] = min(first.get(user, a["produced_at"]), a["produced_at"])
        if set(first) != set(self.users):
            return None
        return max(first.values()) - since

    def wait_recovered(
        self,
        since: float,
        timeout_s: float,
        accept: Callable[[dict[str, Any]], bool] = lambda a: True,
    ) -> float | None:
        """Keep probing until every partition answers (or ``timeout_s``); returns the recovery time."""
        result: list[float | None] = [None]

        def done() -> bool:
            result[0] = self.recovery_s(since, accept)
            return result[0] is not None

        wait_until(done, timeout_s, interval_s=0.5)
        return result[0]


def one_user_per_partition(users: Iterable[str], partitions: int) -> list[str]:
    """A user keyed to each partition (the producer's murmur2 partitioner), so probes reach every
    partition, including those a dead worker owned."""
    chosen: dict[int, str] = {}
    for user in sorted(set(users)):
        chosen.setdefault((murmur2(user.encode()) & 0x7FFFFFFF) % partitions, user)
    if len(chosen) < partitions:
        raise ValueError(f"users cover {len(chosen)} of {partitions} partitions")
    return [chosen[p] for p in range(partitions)]
