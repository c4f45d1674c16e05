"""The worker's store directory fills up mid-replay (a size-limited tmpfs mounted over its parent,
then filled): RocksDB writes fail with ENOSPC. The worker must say so and stop, not skip the batch;
once space is back and it is restarted, every query is answered and state equals the fold."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.settings import Settings
from tests.chaos.accounting import Prober, account, one_user_per_partition
from tests.chaos.scenario import BackgroundReplay, Scale, publish_catalog, slice_plan, start_worker
from workers.supervisor import WorkerProcess

RECOVERY_TARGET_S = 30.0
MAX_ANSWERS_AFTER_ONE_CRASH = 2
TMPFS_SIZE = "32m"  # ~8x what the slice's stores need, so the worker starts; then filled to the brim


@pytest.fixture
def small_disk(isolated: Settings) -> Iterator[Path]:
    """A size-limited tmpfs over the worker's store directory (its parent, ``run/workers``)."""
    target = isolated.run_dir / "workers"
    target.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0755", "tmpfs", str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        yield target
    finally:
        # Lazy: a worker the test failed to stop may still hold files open.
        subprocess.run(["umount", "-l", str(target)], check=False)


def fill(directory: Path) -> Path:
    """Write zeros into ``directory`` until the filesystem refuses (ENOSPC)."""
    filler = directory / "filler"
    chunk = bytes(1 << 20)
    with filler.open("wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(chunk)
            out.flush()
    return filler


def test_disk_full_mid_replay_stops_the_worker_and_loses_nothing(
    small_disk: Path,
    env: dict[str, str],
    isolated: Settings,
    tmp_path: Path,
    worker_factory: list[WorkerProcess],
    scale: Scale,
) -> None:
    worker = start_worker(env, tmp_path, worker_factory)
    replay = BackgroundReplay(isolated, slice_plan(scale.events, scale.queries, seed=19), scale.rate)
    publish_catalog(isolated, replay.replay)
    worker.wait_ready(timeout_s=120, catalog_items=len(replay.replay.items))
    replay.start()
    replay.wait_sent(0.35)
    filled_at = time.monotonic()
    filler = fill(small_disk)
    assert worker.proc is not None
    try:
        status = worker.proc.wait(60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker kept running on a full disk:\n{worker.tail()}")
    stopped_s = time.monotonic() - filled_at
    log = worker.log_path.read_text(errors="replace")
    declared = re.search(r"exiting with status (\d+)", log)

    filler.unlink()
    restarted = time.time()
    worker.start()
    prober = Prober(
        isolated, one_user_per_partition(replay.users, isolated.topic_partitions), "probe"
    ).start()
    ready_s = worker.wait_ready(timeout_s=120)
    recovery_s = prober.wait_recovered(restarted, timeout_s=90)
    probes = prober.stop()
    replay.join()

    result = account(
        f"store disk full ({TMPFS_SIZE} tmpfs filled) mid-replay; freed, worker restarted",
        isolated,
        replay.query_ids | {q.request_id for q in probes},
        replay.items,
        recovery_s,
        "restart → every partition answers a new query",
        exit_status=status,
        stopped_after_s=round(stopped_s, 1),
        ready_s=round(ready_s, 1),
    )
    # A clear error: the cause in the log, and a non-zero exit a supervisor (k8s) restarts on.
    assert "No space left on device" in log, worker.tail()
    assert declared is not None and status == int(declared.group(1)) != 0, (status, worker.tail())
    assert result.missing == 0, result.to_json()
    assert result.divergent == 0, result.to_json()
    assert result.divergent_items == 0, result.to_json()
    assert result.max_answers <= MAX_ANSWERS_AFTER_ONE_CRASH, result.to_json()
    assert result.recovery_s is not None and result.recovery_s < RECOVERY_TARGET_S, result.to_json()
