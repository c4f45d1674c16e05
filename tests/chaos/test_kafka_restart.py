"""The Kafka broker restarted mid-replay, on a broker of the test's own (the shared one is never
touched): same ports, same data dir. Every query answered, state equal to the fold."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.chaos.accounting import Prober, account, one_user_per_partition
from tests.chaos.conftest import PrivateKafka
from tests.chaos.scenario import FULL, BackgroundReplay, Scale, publish_catalog, slice_plan, start_worker
from workers.supervisor import WorkerProcess, settings_for

RECOVERY_TARGET_S = 30.0
DOWN_S = 3.0  # long enough for every client to see refused connections and fail over to retrying

STOPS = ["sigterm", pytest.param("kill9", marks=pytest.mark.skipif(not FULL, reason="STREAMREC_CHAOS_FULL"))]


@pytest.mark.parametrize("stop", STOPS)
def test_broker_restart_mid_replay(
    stop: str,
    private_kafka: PrivateKafka,
    env: dict[str, str],
    tmp_path: Path,
    worker_factory: list[WorkerProcess],
    scale: Scale,
) -> None:
    env.update(private_kafka.env())
    settings = settings_for(env)
    worker = start_worker(env, tmp_path, worker_factory)
    replay = BackgroundReplay(settings, slice_plan(scale.events, scale.queries, seed=17), scale.rate)
    publish_catalog(settings, replay.replay)
    worker.wait_ready(timeout_s=120, catalog_items=len(replay.replay.items))
    replay.start()
    replay.wait_sent(0.35)
    if stop == "kill9":
        private_kafka.kill9()
    else:
        private_kafka.stop()
    time.sleep(DOWN_S)
    private_kafka.start()
    back = time.time()
    prober = Prober(
        settings, one_user_per_partition(replay.users, settings.topic_partitions), "probe"
    ).start()
    recovery_s = prober.wait_recovered(back, timeout_s=90)
    probes = prober.stop()
    replay.join()

    result = account(
        f"Kafka broker stopped ({stop}) {DOWN_S:.0f} s mid-replay, restarted",
        settings,
        replay.query_ids | {q.request_id for q in probes},
        replay.items,
        recovery_s,
        "broker ready → every partition answers a new query",
        worker_restarts=len(worker.started) - 1,
    )
    assert worker.alive(), f"the worker survives a broker restart:\n{worker.tail()}"
    assert result.missing == 0, result.to_json()
    assert result.divergent == 0, result.to_json()
    assert result.divergent_items == 0, result.to_json()
    # docs/guarantees.md: no worker crashed, so exactly one recommendation per request.
    assert result.duplicates == 0, result.to_json()
    assert result.recovery_s is not None and result.recovery_s < RECOVERY_TARGET_S, result.to_json()
