"""SASL/PLAIN on a private broker (free ports, own data dir): streamrec's security settings reach the
worker, the replay producer and the admin client; a wrong password fails fast and says why."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.errors import KafkaError
from pydantic import SecretStr

from stream.records import Item, Query
from stream.settings import ROOT, Settings
from tests.support.stack import isolated_env, read_json_topic, wait_for
from workers.kafka_clients import ensure_topics
from workers.replay import publish_items, publish_stream
from workers.stack import kafka
from workers.supervisor import WorkerProcess, free_port, settings_for

USER = "recommender"


@pytest.fixture
def sasl_broker(stack: Settings, tmp_path: Path) -> Iterator[Settings]:
    """A broker whose only client listener is SASL_PLAINTEXT/PLAIN, and settings that log in to it."""
    password = secrets.token_urlsafe(16)
    settings = stack.model_copy(
        update={
            "kafka_port": free_port(),
            "kafka_controller_port": free_port(),
            "run_dir": tmp_path / "kafka-run",
            "kafka_heap_mb": 256,
            "kafka_security_protocol": "SASL_PLAINTEXT",
            "kafka_sasl_mechanism": "PLAIN",
            "kafka_sasl_username": USER,
            "kafka_sasl_password": SecretStr(password),
        }
    )
    kafka.start(settings, sasl_users={USER: password})
    yield settings
    kafka.stop(settings)


def _env(broker: Settings, tmp_path: Path, password: str) -> dict[str, str]:
    return isolated_env(
        tmp_path,
        STREAMREC_KAFKA_PORT=str(broker.kafka_port),
        STREAMREC_KAFKA_CONTROLLER_PORT=str(broker.kafka_controller_port),
        STREAMREC_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        STREAMREC_KAFKA_SASL_MECHANISM="PLAIN",
        STREAMREC_KAFKA_SASL_USERNAME=USER,
        STREAMREC_KAFKA_SASL_PASSWORD=password,
    )


def _catalog() -> list[Item]:
    genres = ("Comedy", "Drama", "Sci-Fi")
    return [
        Item(
            item_id=f"s{i}",
            title=f"{genres[i % 3]} story {i}",
            categories=[genres[i % 3]],
            updated_at=time.time(),
        )
        for i in range(20)
    ]


def test_worker_and_replay_log_in_with_sasl_plain(sasl_broker: Settings, tmp_path: Path) -> None:
    assert sasl_broker.kafka_sasl_password is not None
    # The listener really requires SASL: the same port without it gives no metadata.
    plaintext = sasl_broker.model_copy(update={"kafka_security_protocol": "PLAINTEXT"})
    assert not kafka.metadata_ok(plaintext)

    env = _env(sasl_broker, tmp_path, sasl_broker.kafka_sasl_password.get_secret_value())
    settings = settings_for(env)
    asyncio.run(ensure_topics(settings))  # the admin client
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        worker.wait_ready(timeout_s=60)
        catalog = _catalog()
        asyncio.run(publish_items(settings, catalog))  # the replay producer
        worker.wait_ready(catalog_items=len(catalog), timeout_s=30)
        query = Query(request_id="sasl-1", user_id="u1", text="comedy", ts=time.time(), k=5)
        asyncio.run(publish_stream(settings, [query]))
        wait_for(lambda: read_json_topic(settings, "recommendations"), timeout_s=30, what="answer")
        (rec,) = read_json_topic(settings, "recommendations")  # the consumer helper logs in too
        assert rec["request_id"] == "sasl-1" and len(rec["items"]) == 5
    finally:
        worker.stop()


def test_a_wrong_password_fails_fast_with_a_clear_error(
    sasl_broker: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = _env(sasl_broker, tmp_path, "not-the-password")
    settings = settings_for(env)
    started = time.monotonic()
    # aiokafka raises "Unable to bootstrap" and logs the broker's reason; both within seconds.
    with pytest.raises(KafkaError):
        asyncio.run(ensure_topics(settings))
    assert time.monotonic() - started < 15
    assert "Authentication failed: Invalid username or password" in caplog.text

    started = time.monotonic()
    result = subprocess.run(
        [str(Path(sys.executable).with_name("streamrec")), "worker"],
        env={**env, "STREAMREC_WORKER_INSTANCE_ID": "worker-bad"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-2000:]
    assert "authentication failed" in output.lower(), output[-2000:]
    assert elapsed < 45, f"the worker took {elapsed:.0f}s to give up"
