"""Chaos fixtures: the integration fixtures (shared stack, isolated namespaces, private Triton) plus a
private Kafka broker that a test may stop and restart without touching the shared one."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stream.settings import Settings
from tests.chaos.scenario import FULL, FULL_SCALE, SHORT_SCALE, Scale
from tests.integration.conftest import (  # noqa: F401  (fixtures, re-exported for this directory)
    env,
    isolated,
    private_triton,
    stack,
    worker_factory,
)
from workers.stack import kafka
from workers.supervisor import free_port


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: injects a fault into the real stack and accounts for it")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/chaos/" in str(item.fspath):
            item.add_marker(pytest.mark.chaos)
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def scale() -> Scale:
    return FULL_SCALE if FULL else SHORT_SCALE


@dataclass(frozen=True)
class PrivateKafka:
    settings: Settings

    def start(self) -> float:
        return kafka.start(self.settings)

    def stop(self) -> None:
        kafka.stop(self.settings)

    def kill9(self) -> None:
        pid = kafka.process(self.settings).pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        kafka.stop(self.settings)  # reaps the pid file; the process is already gone

    def env(self) -> dict[str, str]:
        return {
            "STREAMREC_KAFKA_PORT": str(self.settings.kafka_port),
            "STREAMREC_KAFKA_CONTROLLER_PORT": str(self.settings.kafka_controller_port),
        }


@pytest.fixture
def private_kafka(stack: Settings, tmp_path: Path) -> Iterator[PrivateKafka]:  # noqa: F811
    """A broker of this test's own (free ports, own data dir) that the test may stop and restart."""
    settings = stack.model_copy(
        update={
            "kafka_port": free_port(),
            "kafka_controller_port": free_port(),
            "run_dir": tmp_path / "kafka-run",
            "kafka_heap_mb": 256,
        }
    )
    broker = PrivateKafka(settings)
    broker.start()
    yield broker
    broker.stop()
