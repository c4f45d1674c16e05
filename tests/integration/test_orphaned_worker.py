"""A worker started by a supervisor (a test, a benchmark) stops once that supervisor is gone, even
after a ``kill -9`` that left it no chance to clean up: no orphan keeps eating the machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.stack import wait_for
from workers.supervisor import ROOT

SUPERVISOR = """
import json, sys, time
from pathlib import Path
from workers.supervisor import WorkerProcess
worker = WorkerProcess(json.loads(sys.argv[1]), Path(sys.argv[2])).start()
worker.wait_ready(timeout_s=120)
print(worker.proc.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as gone.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_worker_stops_when_its_supervisor_is_killed(env: dict[str, str], tmp_path: Path) -> None:
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, json.dumps(env), str(tmp_path / "worker.log")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert supervisor.stdout is not None
        worker_pid = int(supervisor.stdout.readline())
        assert _alive(worker_pid)
        supervisor.send_signal(signal.SIGKILL)
        supervisor.wait(10)
        wait_for(lambda: not _alive(worker_pid), timeout_s=30, interval_s=0.2, what="orphan stopped")
    finally:
        supervisor.kill()
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert "is gone: stopping" in log
