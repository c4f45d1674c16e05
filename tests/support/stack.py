"""Helpers for integration tests: the real stack, isolated topic namespaces, worker processes, topic reads."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from stream.settings import ROOT, Settings, load_settings
from workers.kafka_clients import client_kwargs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def isolated_env(tmp: Path, **extra: str) -> dict[str, str]:
    """Environment for a worker/replay with its own topics, consumer group, state dir and web port."""
    tag = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_") or k in _KEEP}
    env.update(
        {
            "STREAMREC_TOPIC_PREFIX": f"t{tag}-",
            "STREAMREC_APP_ID": f"streamrec-t{tag}",
            "STREAMREC_RUN_DIR": str(tmp / "run"),
            "STREAMREC_WEB_PORT": str(free_port()),
            "STREAMREC_LOG_LEVEL": "info",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


# Ports and paths of the shared stack pass through to the isolated environment.
_KEEP = {
    "STREAMREC_KAFKA_PORT",
    "STREAMREC_KAFKA_HOST",
    "STREAMREC_TRITON_HOST",
    "STREAMREC_TRITON_GRPC_PORT",
    "STREAMREC_TRITON_HTTP_PORT",
    "STREAMREC_TRITON_METRICS_PORT",
    "STREAMREC_MODEL_ENV",
    "STREAMREC_KAFKA_HOME",
    "STREAMREC_TRITON_BACKENDS",
    "STREAMREC_DATA_DIR",
}


def settings_for(env: dict[str, str]) -> Settings:
    overrides = {
        k.removeprefix("STREAMREC_").lower(): v for k, v in env.items() if k.startswith("STREAMREC_")
    }
    return load_settings(**overrides)


@dataclass
class WorkerProcess:
    env: dict[str, str]
    log_path: Path
    name: str = "worker-0"
    proc: subprocess.Popen[bytes] | None = None
    started: list[float] = field(default_factory=list)

    @property
    def web_port(self) -> int:
        return int(self.env["STREAMREC_WEB_PORT"])

    def start(self) -> WorkerProcess:
        env = {**self.env, "STREAMREC_WORKER_INSTANCE_ID": self.name}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("streamrec")), "worker"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.started.append(time.monotonic())
        return self

    def ready(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/ready", timeout=2) as resp:
                return dict(json.loads(resp.read()))
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def wait_ready(self, timeout_s: float = 90.0, catalog_items: int = 0) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
            state = self.ready()
            if state and state.get("ready") and state.get("catalog_items", 0) >= catalog_items:
                return time.monotonic() - start
            time.sleep(0.5)
        raise TimeoutError(f"worker not ready after {timeout_s}s: {self.ready()}\n{self.tail()}")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != name:
            continue
        if labels and not all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            continue
        total += float(value)
    return total


async def read_topic(settings: Settings, name: str, timeout_s: float = 3.0) -> list[Any]:
    """Every message currently in topic ``name`` (all partitions, from the beginning), without a group."""
    consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(name) or set()
        if not partitions:
            await consumer._client.force_metadata_update()  # a fresh topic: fetch its metadata now
            partitions = consumer.partitions_for_topic(name) or set()
        tps = [TopicPartition(name, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            positions = [await consumer.position(tp) for tp in tps]
            if all(pos >= end[tp] for pos, tp in zip(positions, tps, strict=True)):
                break
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                out.extend(messages)
        return out
    finally:
        await consumer.stop()


def read_json_topic(settings: Settings, topic: str) -> list[dict[str, Any]]:
    messages = asyncio.run(read_topic(settings, settings.topic(topic)))
    return [json.loads(m.value) for m in messages if m.value is not None]


def wait_for(predicate: Any, timeout_s: float, interval_s: float = 1.0, what: str = "condition") -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if predicate():
            return time.monotonic() - start
        time.sleep(interval_s)
    raise TimeoutError(f"{what} not met within {timeout_s}s")


def ids(records: Iterable[dict[str, Any]], key: str = "request_id") -> list[str]:
    return [str(r[key]) for r in records]
