"""The worker process settings (workers.worker): one OpenBLAS thread, a tuned garbage collector.

OpenBLAS starts a thread per core when numpy is imported; those threads spin after each call, and
on two cores one of them held a whole core of the worker's (docs/performance.md, fifth session).
Counted from /proc in a fresh interpreter, with and without the limit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stream.settings import ROOT

COUNT = (
    "import os, numpy; numpy.ones((64, 64)) @ numpy.ones((64, 64)); print(len(os.listdir('/proc/self/task')))"
)


def _output(code: str, env: dict[str, str]) -> str:
    """``code``'s output in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def _threads(prelude: str) -> int:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    return int(_output(prelude + COUNT, env))


def test_the_worker_limits_blas_to_its_own_thread() -> None:
    limited = _threads("from workers.worker import single_threaded_blas; single_threaded_blas(); ")
    assert limited == 1
    if (os.cpu_count() or 1) > 1:  # the limit is what makes the difference, not the machine
        assert _threads("") > limited


def test_the_limit_refuses_to_run_after_numpy() -> None:
    from workers.worker import single_threaded_blas

    pytest.importorskip("numpy")
    with pytest.raises(RuntimeError, match="numpy was imported"):
        single_threaded_blas()


def test_the_worker_freezes_startup_state_and_collects_less_often() -> None:
    import gc

    from workers.worker import tune_gc

    before = gc.get_threshold()
    try:
        tune_gc(20_000)
        assert gc.get_freeze_count() > 0  # what startup built is out of the collector's walks
        assert gc.get_threshold() == (20_000, before[1], before[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def _fresh(code: str, tmp: str) -> str:
    """``code``'s output in a fresh interpreter with the unit tests' app settings (no broker)."""
    return _output(code, {**os.environ, "STREAMREC_STORE_URL": "memory://", "STREAMREC_RUN_DIR": tmp})


ROOT_LEVEL = """
import logging, faust
from stream.app import Worker, app
w = {cls}(app, loglevel="warn", redirect_stdouts=False)
w._setup_logging()  # what the worker's start runs
print(logging.getLogger().getEffectiveLevel(), logging.getLogger("aiokafka.consumer.fetcher").isEnabledFor(logging.DEBUG))
"""


def test_a_worker_at_warn_builds_no_debug_records(tmp_path: Path) -> None:
    # Faust's spinner sets the root logger to DEBUG at WARN and above: every library debug call
    # (aiokafka's fetcher, one per partition per fetch) then built a record.
    assert _fresh(ROOT_LEVEL.format(cls="faust.Worker"), str(tmp_path)) == "10 True"
    assert _fresh(ROOT_LEVEL.format(cls="Worker"), str(tmp_path)) == "30 False"
