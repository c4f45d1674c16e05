"""The delivery settings the chaos scenarios rely on, read from the worker's own app object.

Run in a subprocess: ``stream.app`` reads the settings once at import, and the unit tests import it
with an in-memory store of their own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from stream.settings import ROOT

PROBE = """
import asyncio, json
from stream.app import app

async def main():
    client = app.producer._new_producer()  # the aiokafka producer the worker starts
    print(json.dumps({
        "idempotent": client._txn_manager is not None,
        "acks": client._sender._acks,
        "transactional": client._txn_manager is not None and client._txn_manager.transactional_id,
        "instance_id": app.conf.consumer_group_instance_id,
        "commit_interval": app.conf.broker_commit_interval,
        "publish_on_commit": app.conf.stream_publish_on_commit,
        "consumer": type(app.consumer).__name__,
        "send_buffer": type(app.producer.buffer).__name__,
    }))
    await client.stop()

asyncio.run(main())
"""


def test_worker_producer_is_idempotent_with_acks_all_and_membership_is_static(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "STREAMREC_RUN_DIR": str(tmp_path),
        "STREAMREC_WORKER_INSTANCE_ID": "worker-7",
        "STREAMREC_BROKER_COMMIT_INTERVAL_S": "2",
    }
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    settings = json.loads(out.stdout.strip().splitlines()[-1])
    assert settings["idempotent"], "a retried send after a lost ack must not be written twice"
    assert settings["acks"] == -1, "acks=all: an output counts as sent once every in-sync replica has it"
    assert not settings["transactional"], "at-least-once (docs/guarantees.md), not transactions"
    assert settings["instance_id"] == "worker-7", "static membership: a restarted worker is its old self"
    assert settings["commit_interval"] == 2.0
    # Outputs are produced at once and flushed before each commit (not held until the commit).
    assert settings["publish_on_commit"] is False
    # A commit covers only finished work (stream/commits.py).
    assert settings["consumer"] == "InFlightSafeConsumer"
    assert settings["send_buffer"] == "DrainingProducerBuffer"
