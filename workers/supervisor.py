"""Worker processes started and watched from Python: the demo, the benchmarks and the tests use it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream.settings import ROOT, Settings, load_settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_for(env: dict[str, str]) -> Settings:
    overrides = {
        k.removeprefix("STREAMREC_").lower(): v for k, v in env.items() if k.startswith("STREAMREC_")
    }
    return load_settings(**overrides)


# A supervised process (a worker, the benchmark's baseline) is told its supervisor's pid here and
# stops once that process is gone (stream.settings.exit_with_parent_pid).
SUPERVISOR_PID_ENV = "STREAMREC_EXIT_WITH_PARENT_PID"


def supervised_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a child that must not outlive this process."""
    return {**env, SUPERVISOR_PID_ENV: str(os.getpid())}


def supervisor_gone(parent: int | None) -> bool:
    """True when this process was started under supervisor ``parent`` and has been orphaned since."""
    return parent is not None and os.getppid() != parent


@dataclass
class WorkerProcess:
    """One ``streamrec worker`` subprocess in its own process group, with a log file."""

    env: dict[str, str]
    log_path: Path
    name: str = "worker-0"
    proc: subprocess.Popen[bytes] | None = None
    started: list[float] = field(default_factory=list)

    @property
    def web_port(self) -> int:
        return int(self.env["STREAMREC_WEB_PORT"])

    def start(self) -> WorkerProcess:
        env = supervised_env({**self.env, "STREAMREC_WORKER_INSTANCE_ID": self.name})
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("streamrec")), "worker"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.started.append(time.monotonic())
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _get(self, path: str) -> bytes | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}{path}", timeout=2) as resp:
                return bytes(resp.read())
        except urllib.error.HTTPError as exc:
            return bytes(exc.read())
        except (urllib.error.URLError, OSError):
            return None

    def ready(self) -> dict[str, Any] | None:
        body = self._get("/ready")
        try:
            return dict(json.loads(body)) if body else None
        except ValueError:
            return None

    def wait_ready(
        self,
        timeout_s: float = 90.0,
        catalog_items: int = 0,
        vectors: bool = False,
        primed: bool = False,
        versions: Collection[str] = (),
    ) -> float:
        """Seconds until /ready says ready, the catalog holds ``catalog_items`` (with all their
        embeddings if ``vectors``), the A/B arms route to every ranker version in ``versions`` and,
        if ``primed``, the ranker's item cache is warm for the versions routed to."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
            state = self.ready()
            if (
                state
                and state.get("ready")
                and state.get("catalog_items", 0) >= catalog_items
                and (not vectors or state.get("catalog_vectors", 0) >= catalog_items)
                and (not primed or state.get("ranker_primed"))
                and set(versions) <= set(state.get("ranker_versions", ()))
            ):
                return time.monotonic() - start
            time.sleep(0.5)
        raise TimeoutError(f"worker not ready after {timeout_s}s: {self.ready()}\n{self.tail()}")

    def metrics(self) -> str:
        body = self._get("/metrics")
        return body.decode() if body else ""

    def kill9(self) -> None:
        self._signal(signal.SIGKILL, wait_s=10)

    def stop(self, timeout_s: float = 30.0) -> None:
        if not self.alive():
            return
        try:
            self._signal(signal.SIGTERM, wait_s=timeout_s)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL, wait_s=10)

    def _signal(self, sig: signal.Signals, wait_s: float) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(wait_s)

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """Sum of the samples of ``name`` in a Prometheus exposition whose labels include ``labels``."""
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
