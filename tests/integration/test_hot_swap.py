"""A running worker picks up a newly promoted ranker version for its A/B arm without a restart, and
never routes to a refused one. A private Triton serves a private copy of the model repository."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from stream.experiment import Experiment
from stream.records import Query
from stream.settings import Settings
from tests.integration.test_model_publish import NEEDED, SOURCE, _perturbed, _private_repo
from tests.support.stack import isolated_env, read_json_topic, wait_for
from workers.kafka_clients import ensure_topics, producer
from workers.loop import publish as pub
from workers.model import head as head_mod
from workers.movielens import load_items
from workers.replay import publish_items
from workers.stack import triton
from workers.supervisor import WorkerProcess, free_port, settings_for

VARIANTS = '{"control": {"share": 0.5, "version": "1"}, "treatment": {"share": 0.5}}'
ITEMS = 300


class Queries:
    """Queries from users of both arms at a steady rate on another thread, until stopped."""

    def __init__(self, settings: Settings, users: list[str]) -> None:
        self.settings, self.users = settings, users
        self.sent: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self.run()), daemon=True)

    async def run(self) -> None:
        out = producer(self.settings)
        await out.start()
        try:
            n = 0
            while not self.stop.is_set():
                user = self.users[n % len(self.users)]
                query = Query(request_id=f"swap-{n}", user_id=user, text="comedy", ts=time.time(), k=5)
                await out.send_and_wait(
                    self.settings.topic("queries"), key=user.encode(), value=query.to_json()
                )
                self.sent[query.request_id] = query.ts
                n += 1
                await asyncio.sleep(0.25)
        finally:
            await out.stop()


def _repo_with_encoder(root: Path) -> Path:
    """The private ranker repository plus the encoder the worker embeds the catalog with."""
    repo = _private_repo(root)
    source = SOURCE.parent / "encoder"
    (repo / "encoder" / "1").mkdir(parents=True)
    os.link(source / "config.pbtxt", repo / "encoder" / "config.pbtxt")
    for f in (source / "1").iterdir():
        if f.is_file():
            os.link(f, repo / "encoder" / "1" / f.name)
    return repo


def _serving_worker(env: dict[str, str], settings: Settings, log: Path) -> WorkerProcess:
    """A worker whose catalog (the first ITEMS MovieLens items) is embedded and in the ranker's cache."""
    worker = WorkerProcess(env, log).start()
    worker.wait_ready()
    items = list(load_items().values())[:ITEMS]
    asyncio.run(publish_items(settings, items))
    worker.wait_ready(timeout_s=240, catalog_items=len(items), primed=True)
    # Before any promotion "latest" is whatever Triton's config serves, and control is pinned to 1:
    # priming asked Triton's default ("") and was answered by version 1, so both arms route there.
    assert (worker.ready() or {}).get("ranker_versions") == ["1"]
    return worker


def _promote_v2(settings: Settings, worker: WorkerProcess, tmp_path: Path) -> float:
    """Publish a changed head as version 2; when it was promoted."""
    head = _perturbed(tmp_path / "v2.json", w2=[-w for w in head_mod.load(SOURCE / "1" / "head.json")["w2"]])
    promoted = pub.publish(settings, head, base_version="1")
    assert promoted.status == "promoted", promoted.reason
    promoted_at = time.time()
    # /ready names the versions the arms route to, and is primed again only once the reloaded
    # versions' caches are warm (what the demo waits for before its phase 2).
    worker.wait_ready(timeout_s=120, primed=True, versions=["1", "2"])
    return promoted_at


def _recs(settings: Settings) -> list[dict[str, Any]]:
    return read_json_topic(settings, "recommendations")


def test_a_promoted_version_takes_its_arm_without_a_restart_and_a_refused_one_never_serves(
    stack: Settings, tmp_path: Path, worker_factory: list[WorkerProcess]
) -> None:
    if any(not (SOURCE / "1" / n).exists() for n in NEEDED):
        pytest.skip("ranker not built: run python -m workers.model.build")
    repo = _repo_with_encoder(tmp_path)
    ports = {f"STREAMREC_TRITON_{p}_PORT": str(free_port()) for p in ("HTTP", "GRPC", "METRICS")}
    env = isolated_env(
        tmp_path,
        STREAMREC_MODEL_REPO=str(repo),
        STREAMREC_VARIANTS=VARIANTS,
        STREAMREC_EXPERIMENT_SALT="hot-swap",
        STREAMREC_RANKER_DEADLINE_MS="3000",  # this test is about routing, not about load
        **ports,
    )
    settings = settings_for(env)
    asyncio.run(ensure_topics(settings))
    triton.start(settings)
    try:
        worker_factory.append(worker := _serving_worker(env, settings, tmp_path / "worker.log"))

        experiment = Experiment(salt=settings.experiment_salt, variants=settings.variants)
        arm = {u: experiment.assign(u).name for u in (f"user-{n}" for n in range(40))}
        users = [u for u in arm if arm[u] == "control"][:4] + [u for u in arm if arm[u] == "treatment"][:4]
        queries = Queries(settings, users)
        queries.thread.start()
        try:
            wait_for(lambda: len(_recs(settings)) >= 8, timeout_s=60, what="answers before the swap")
            promoted_at = _promote_v2(settings, worker, tmp_path)

            def first_v2() -> float | None:
                found = [r["produced_at"] for r in _recs(settings) if r["model"]["version"] == "2"]
                return min(found) if found else None

            wait_for(
                lambda: first_v2() is not None, timeout_s=30, interval_s=0.5, what="treatment on version 2"
            )
            switched_at = first_v2()
            assert switched_at is not None
            base_w1 = head_mod.load(SOURCE / "1" / "head.json")["w1"]
            broken = pub.publish(settings, _perturbed(tmp_path / "v3.json", w1=base_w1[:3]), base_version="1")
            assert broken.status == "refused"
            time.sleep(4.0)
        finally:
            queries.stop.set()
            queries.thread.join(30)

        sent = dict(queries.sent)
        wait_for(
            lambda: sent.keys() <= {r["request_id"] for r in _recs(settings)},
            timeout_s=60,
            what="every query answered",
        )
    finally:
        triton.stop(settings)

    recs = [r for r in _recs(settings) if r["request_id"] in sent]
    assert len(recs) == len({r["request_id"] for r in recs}) == len(sent)  # none lost, none twice
    assert [r for r in recs if r["fallback"]] == []  # the swap and the refusal cost no request
    assert {r["model"]["version"] for r in recs if r["variant"] == "control"} == {"1"}
    after = [r for r in recs if r["variant"] == "treatment" and sent[r["request_id"]] > switched_at]
    assert after and {r["model"]["version"] for r in after} == {"2"}
    assert all(r["model"]["version"] != broken.version for r in recs)
    assert switched_at - promoted_at < 5.0
    assert {r["variant"] for r in recs} == {"control", "treatment"}
    assert {r["user_id"] for r in recs} == set(users)
    assert all(arm[r["user_id"]] == r["variant"] for r in recs)
