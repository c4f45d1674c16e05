"""Integration fixtures: the real local stack (Kafka + Triton), started here if it is not running."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.settings import Settings, load_settings
from tests.support.stack import isolated_env
from workers.stack import control, triton
from workers.supervisor import WorkerProcess, free_port, settings_for


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack() -> Iterator[Settings]:
    settings = load_settings()
    state = control.status(settings)
    started_here = not state.all_up
    if started_here:
        control.up(settings)
    yield settings
    if started_here:
        control.down(settings)


@pytest.fixture
def env(stack: Settings, tmp_path: Path) -> dict[str, str]:
    """An isolated namespace (topics, group, state, web port) on the shared stack."""
    return isolated_env(tmp_path)


@pytest.fixture
def isolated(env: dict[str, str]) -> Settings:
    return settings_for(env)


@pytest.fixture
def worker_factory(env: dict[str, str], tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    workers: list[WorkerProcess] = []
    yield workers
    for w in workers:
        w.stop()


@pytest.fixture
def private_triton(stack: Settings, tmp_path: Path) -> Iterator[Settings]:
    """A Triton server of this test's own (free ports, own run dir) serving model_repo/, for fault injection."""
    settings = stack.model_copy(
        update={
            "triton_http_port": free_port(),
            "triton_grpc_port": free_port(),
            "triton_metrics_port": free_port(),
            "run_dir": tmp_path / "triton-run",
        }
    )
    triton.start(settings)
    yield settings
    proc = triton.process(settings)
    pid = proc.pid()
    if pid is not None:
        os.kill(pid, signal.SIGCONT)  # a paused server cannot handle SIGTERM
    triton.stop(settings)
