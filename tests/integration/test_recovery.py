"""Crash recovery and erasure against the real broker: kill -9 mid-replay, state restored from the changelog."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from stream.profile import Profile, record_query, update_profile
from stream.records import ErasureRequest, Event, Query
from stream.settings import Settings
from tests.support.stack import read_json_topic, read_topic, wait_for
from workers.kafka_clients import producer
from workers.replay import plan, publish_items, publish_stream
from workers.supervisor import WorkerProcess, free_port, metric_value


def changelog_state(settings: Settings, table: str) -> dict[str, Any]:
    """The latest value per key in a table's changelog (None for a tombstone)."""
    messages = asyncio.run(read_topic(settings, f"{settings.app_id}-{table}-changelog"))
    state: dict[str, Any] = {}
    for msg in messages:
        state[json.loads(msg.key)] = json.loads(msg.value) if msg.value is not None else None
    return state


def expected_profiles(settings: Settings, items: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The pure fold of every event and query in the topics, per user in partition order."""
    profiles: dict[str, Profile] = {}
    for msg in asyncio.run(read_topic(settings, settings.topic("events"))):
        event = Event.model_validate_json(msg.value)
        before = profiles.get(event.user_id) or Profile(user_id=event.user_id)
        profiles[event.user_id] = update_profile(before, event, items.get(event.item_id), offset=msg.offset)
    for msg in asyncio.run(read_topic(settings, settings.topic("queries"))):
        query = Query.model_validate_json(msg.value)
        before = profiles.get(query.user_id) or Profile(user_id=query.user_id)
        profiles[query.user_id] = record_query(before, query.text, query.ts)
    return {u: p.to_dict() for u, p in profiles.items()}


def test_kill_9_mid_replay_restores_state_and_answers_every_query(
    env: dict[str, str], isolated: Settings, tmp_path: Path, worker_factory: list[WorkerProcess]
) -> None:
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    worker_factory.append(worker)
    worker.wait_ready()
    replay = plan(3000, 120, seed=11)
    asyncio.run(publish_items(isolated, replay.items))
    worker.wait_ready(catalog_items=len(replay.items))

    sender = threading.Thread(
        target=lambda: asyncio.run(publish_stream(isolated, replay.stream, max_rate=400))
    )
    sender.start()
    time.sleep(3.0)
    worker.kill9()
    # Drop the local RocksDB files: the restarted worker must rebuild its state from the changelog.
    shutil.rmtree(isolated.run_dir / "workers" / "worker-0", ignore_errors=True)
    restarted = time.monotonic()
    worker.start()
    recovery_s = worker.wait_ready(timeout_s=120)
    sender.join(120)
    assert not sender.is_alive()

    queries = {m.request_id for m in replay.stream if isinstance(m, Query)}
    try:
        wait_for(
            lambda: queries <= {r["request_id"] for r in read_json_topic(isolated, "recommendations")},
            timeout_s=180,
            interval_s=2,
            what="every query answered after the restart",
        )
    except TimeoutError:
        answered = {r["request_id"] for r in read_json_topic(isolated, "recommendations")}
        sent = {
            json.loads(m.value)["request_id"]: (m.partition, m.offset)
            for m in asyncio.run(read_topic(isolated, isolated.topic("queries")))
        }
        missing = sorted(queries - answered)
        raise AssertionError(
            f"unanswered: {[(q, sent.get(q)) for q in missing]}; dead letters: {read_json_topic(isolated, 'dead-letters')[:3]}"
        ) from None
    items = {i.item_id: i for i in replay.items}
    expected = expected_profiles(isolated, items)
    assert len(expected) >= 30

    def converged() -> bool:
        return changelog_state(isolated, "profiles") == expected

    try:
        wait_for(converged, timeout_s=120, interval_s=3, what="changelog state equals the pure replay")
    except TimeoutError:
        actual = changelog_state(isolated, "profiles")
        diffs = {u: _diff(actual.get(u), p) for u, p in expected.items() if actual.get(u) != p}
        raise AssertionError(f"{len(diffs)} users diverge; first: {list(diffs.items())[:2]}") from None
    assert recovery_s < 60, f"restart to ready took {recovery_s:.1f}s"
    assert time.monotonic() - restarted < 400


def test_erasure_removes_state_and_survives_restart(
    env: dict[str, str], isolated: Settings, tmp_path: Path, worker_factory: list[WorkerProcess]
) -> None:
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    worker_factory.append(worker)
    worker.wait_ready()
    replay = plan(600, 0, seed=2)
    asyncio.run(publish_items(isolated, replay.items))
    worker.wait_ready(catalog_items=len(replay.items))
    asyncio.run(publish_stream(isolated, replay.stream))
    victim = replay.stream[0].user_id
    wait_for(lambda: changelog_state(isolated, "profiles").get(victim), timeout_s=60, what="victim profile")

    async def erase() -> None:
        prod = producer(isolated)
        await prod.start()
        try:
            request = ErasureRequest(user_id=victim, request_id="erase-1")
            await prod.send(isolated.topic("user-erasure"), key=victim.encode(), value=request.to_json())
            await prod.flush()
        finally:
            await prod.stop()

    asyncio.run(erase())
    wait_for(
        lambda: read_json_topic(isolated, "user-erasure-confirmations"), timeout_s=60, what="confirmation"
    )
    (confirmation,) = read_json_topic(isolated, "user-erasure-confirmations")
    assert confirmation["user_id"] == victim and confirmation["request_id"] == "erase-1"
    state = changelog_state(isolated, "profiles")
    assert victim in state and state[victim] is None, "a tombstone is the latest changelog entry"

    worker.kill9()
    shutil.rmtree(isolated.run_dir / "workers" / "worker-0", ignore_errors=True)
    worker.start()
    worker.wait_ready(timeout_s=120, catalog_items=len(replay.items))
    query = Query(request_id="after-erase", user_id=victim, text="", ts=time.time(), k=10)
    asyncio.run(publish_stream(isolated, [query]))
    wait_for(lambda: read_json_topic(isolated, "recommendations"), timeout_s=60, what="answer")
    (rec,) = read_json_topic(isolated, "recommendations")
    assert not any(i["reason"].startswith("because you watched") for i in rec["items"]), "history forgotten"
    assert changelog_state(isolated, "profiles").get(victim) is None


def _diff(actual: dict[str, Any] | None, expected: dict[str, Any]) -> dict[str, Any]:
    if actual is None:
        return {"missing": True}
    return {k: (str(actual.get(k))[:300], str(v)[:300]) for k, v in expected.items() if actual.get(k) != v}


def test_two_workers_share_partitions_and_one_takes_over_when_the_other_dies(
    env: dict[str, str], isolated: Settings, tmp_path: Path, worker_factory: list[WorkerProcess]
) -> None:
    first = WorkerProcess(env, tmp_path / "w0.log", name="worker-0").start()
    second = WorkerProcess(
        {**env, "STREAMREC_WEB_PORT": str(free_port())}, tmp_path / "w1.log", name="worker-1"
    )
    worker_factory.extend([first, second.start()])
    first.wait_ready()
    second.wait_ready()
    replay = plan(2000, 100, seed=13)
    asyncio.run(publish_items(isolated, replay.items))
    first.wait_ready(timeout_s=300, catalog_items=len(replay.items))
    second.wait_ready(timeout_s=300, catalog_items=len(replay.items))
    half = len(replay.stream) // 2
    asyncio.run(publish_stream(isolated, replay.stream[:half], max_rate=1000))
    wait_for(
        lambda: all((w.ready() or {}).get("assigned_partitions", 0) > 0 for w in (first, second)),
        timeout_s=60,
        what="both workers own partitions",
    )
    shares = [metric_value(w.metrics(), "streamrec_events_total") for w in (first, second)]
    second.kill9()
    asyncio.run(publish_stream(isolated, replay.stream[half:], max_rate=1000))
    queries = {m.request_id for m in replay.stream if isinstance(m, Query)}
    wait_for(
        lambda: queries <= {r["request_id"] for r in read_json_topic(isolated, "recommendations")},
        timeout_s=180,
        interval_s=2,
        what="every query answered, including those of the dead worker's partitions",
    )
    assert all(s > 0 for s in shares), f"both workers applied events before the kill: {shares}"
    items = {i.item_id: i for i in replay.items}
    wait_for(
        lambda: changelog_state(isolated, "profiles") == expected_profiles(isolated, items),
        timeout_s=120,
        interval_s=3,
        what="state equals the pure replay after the takeover",
    )
