"""Publishing a new ranker version into the running Triton (explicit model control), behind a canary.

1. Reserve ``<model_repo>/<ranker>/<n>/`` (n = highest numeric directory + 1; ``mkdir`` is the lock
   against a concurrent publisher) and fill it with hard links to the base version's files
   (copies across file systems), the new ``head.json`` and ``publish.json`` (provenance).
2. ``load_model`` with the served config whose ``version_policy`` lists the versions READY now
   plus ``n``: Triton brings the listed versions up beside the running instances and swaps when
   they are ready, so the old versions keep answering and in-flight requests complete.
3. Canary: a probe batch inferred against version ``n`` explicitly must be finite, of the right
   shape and equal to ``workers.model.head.forward`` over the probe's cosines (|diff| < 1e-3).
4. ``promoted`` record on ``model-versions``; on any failure the previous served set is restored,
   the directory moves to ``<run_dir>/refused-models/`` and a ``refused`` record says why.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from stream.features import N_FEATURES
from stream.records import ModelVersion
from stream.settings import Settings
from workers.loop import registry
from workers.loop.probe import Probe, default_probe
from workers.model import head as head_mod
from workers.model.config import HEAD

PROVENANCE = "publish.json"
CANARY_TOLERANCE = 1e-3
SKIPPED = {"__pycache__", HEAD, PROVENANCE}  # never carried over from the base version


class PublishError(RuntimeError):
    pass


@dataclass
class Canary:
    ok: bool
    reason: str = ""
    rows: int = 0
    max_abs_diff: float | None = None  # None: no cosines in the probe, only sanity checks ran
    seconds: float = 0.0


@dataclass
class PublishResult:
    model: str
    version: str
    status: str  # "promoted" | "refused"
    reason: str
    base_version: str
    served: list[int]  # READY versions afterwards
    load_s: float | None = None
    canary: Canary | None = None
    path: Path | None = None  # where the version directory is now
    files: dict[str, str] = field(default_factory=dict)
    record: ModelVersion | None = None

    def summary(self) -> dict[str, Any]:
        canary = self.canary
        return {
            "model": self.model,
            "version": self.version,
            "status": self.status,
            "reason": self.reason,
            "base_version": self.base_version,
            "served": self.served,
            "load_s": self.load_s,
            "canary": None
            if canary is None
            else {
                "ok": canary.ok,
                "rows": canary.rows,
                "max_abs_diff": canary.max_abs_diff,
                "seconds": canary.seconds,
            },
            "path": str(self.path) if self.path else None,
        }


def version_numbers(model_dir: Path) -> list[int]:
    if not model_dir.is_dir():
        return []
    return sorted(
        int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit() and p.name[0] != "0"
    )


def next_version(model_dir: Path, taken: Iterable[int] = ()) -> int:
    return max([0, *version_numbers(model_dir), *taken]) + 1


def refused_dir(settings: Settings) -> Path:
    return settings.run_dir / "refused-models"


def _refused_numbers(settings: Settings, model: str) -> list[int]:
    """Versions refused before: their numbers are not reused, so a ``refused`` record keeps meaning."""
    root = refused_dir(settings)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        parts = p.name.split("-")
        if len(parts) >= 3 and "-".join(parts[:-2]) == model and parts[-2].isdigit():
            out.append(int(parts[-2]))
    return out


def reserve_version(model_dir: Path, taken: Iterable[int] = ()) -> tuple[int, Path]:
    taken = list(taken)
    while True:
        n = next_version(model_dir, taken)
        target = model_dir / str(n)
        try:
            target.mkdir()
        except FileExistsError:  # another publisher took it between the listing and the mkdir
            continue
        return n, target


def _link_or_copy(src: Path, dst: Path) -> str:
    try:
        os.link(src, dst)
        return "link"
    except OSError:
        shutil.copy2(src, dst)
        return "copy"


def assemble(base_dir: Path, target: Path, head_path: Path, provenance: dict[str, Any]) -> dict[str, str]:
    """Fill ``target``: the base version's files linked (never written through: a link shares the
    inode), the new head copied, the provenance written. name -> how it got there."""
    files: dict[str, str] = {}
    for src in sorted(base_dir.iterdir()):
        if src.name in SKIPPED or not src.is_file():
            continue
        files[src.name] = _link_or_copy(src, target / src.name)
    shutil.copyfile(head_path, target / HEAD)
    files[HEAD] = "new"
    (target / PROVENANCE).write_text(json.dumps(provenance, indent=1) + "\n")
    files[PROVENANCE] = "new"
    return files


def override_config(config: dict[str, Any], versions: Iterable[int]) -> str:
    """The served model config with a ``specific`` version policy: the JSON ``load_model`` takes."""
    body = {k: v for k, v in config.items() if k != "version_policy"}
    body["version_policy"] = {"specific": {"versions": sorted({int(v) for v in versions})}}
    return json.dumps(body)


def served_versions(client: grpcclient.InferenceServerClient, model: str) -> list[int]:
    index = client.get_model_repository_index(as_json=True).get("models", [])
    return sorted(
        int(m["version"])
        for m in index
        if m.get("name") == model and m.get("state") == "READY" and m.get("version")
    )


def _probe_inputs(probe: Probe) -> list[grpcclient.InferInput]:
    n = len(probe.queries)
    tensors = []
    for name, values in (("QUERY", probe.queries), ("ITEM", probe.items)):
        t = grpcclient.InferInput(name, [n, 1], "BYTES")
        t.set_data_from_numpy(np.asarray([[v.encode()] for v in values], dtype=object))
        tensors.append(t)
    feats = grpcclient.InferInput("FEATURES", [n, N_FEATURES], "FP32")
    feats.set_data_from_numpy(probe.features.astype(np.float32))
    tensors.append(feats)
    return tensors


def canary(
    client: grpcclient.InferenceServerClient, model: str, version: int, probe: Probe, head: dict[str, Any]
) -> Canary:
    started = time.perf_counter()
    rows = len(probe.queries)
    try:
        result = client.infer(model, _probe_inputs(probe), model_version=str(version), client_timeout=60)
    except InferenceServerException as exc:
        return Canary(False, f"probe request failed: {exc.message()}", rows)
    scores = result.as_numpy("SCORE")
    seconds = round(time.perf_counter() - started, 3)
    if scores is None or scores.shape != (rows, 1):
        shape = None if scores is None else scores.shape
        return Canary(False, f"SCORE has shape {shape}, expected ({rows}, 1)", rows, seconds=seconds)
    scores = scores.reshape(-1)
    if not np.all(np.isfinite(scores)):
        return Canary(False, f"{int((~np.isfinite(scores)).sum())} of {rows} scores are not finite", rows)
    expected = probe.expected(head)
    if expected is None:
        if rows > 1 and float(np.ptp(scores)) < 1e-6:
            return Canary(False, "every probe row scores the same", rows, seconds=seconds)
        return Canary(True, "finite, non-constant (no reference cosines)", rows, None, seconds)
    diff = float(np.max(np.abs(scores - expected)))
    if diff >= CANARY_TOLERANCE:
        return Canary(False, f"scores differ from head.json by up to {diff:.4g}", rows, diff, seconds)
    return Canary(True, "scores equal head.forward over the probe", rows, diff, seconds)


@contextlib.contextmanager
def _serving_lock(settings: Settings, model: str) -> Iterator[None]:
    """One change of the served set at a time: each computes 'READY now + mine'."""
    path = settings.run_dir / "locks" / f"publish-{model}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _client(settings: Settings) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(settings.triton_grpc_url)


def publish(
    settings: Settings,
    head_path: Path,
    *,
    base_version: str | None = None,
    probe: Probe | None = None,
    metrics: dict[str, float] | None = None,
    provenance: dict[str, Any] | None = None,
    load_timeout_s: float = 300.0,
) -> PublishResult:
    """Publish ``head_path`` as the next version of ``settings.ranker_model`` (base: the highest
    version served now, or ``base_version``). Never raises for a bad model: it is refused."""
    model = settings.ranker_model
    model_dir = settings.model_repo / model
    head = head_mod.load(head_path)
    with _serving_lock(settings, model):
        client = _client(settings)
        try:
            served_config = client.get_model_config(model, as_json=True)["config"]
            before = served_versions(client, model)
            if not before:
                raise PublishError(f"Triton at {settings.triton_grpc_url} serves no version of {model!r}")
            base = base_version or str(max(before))
            base_dir = model_dir / base
            if not (base_dir / HEAD).is_file():
                raise PublishError(f"base version directory {base_dir} has no {HEAD}")
            n, target = reserve_version(model_dir, _refused_numbers(settings, model))
            about = {
                "model": model,
                "version": str(n),
                "base_version": base,
                "head": str(head_path),
                "metrics": metrics or {},
                "published_at": time.time(),
                **(provenance or {}),
            }
            try:
                files = assemble(base_dir, target, head_path, about)
            except BaseException:  # a half-filled directory must not stay where Triton looks
                shutil.rmtree(target, ignore_errors=True)
                raise
            result = PublishResult(model, str(n), "refused", "", base, before, path=target, files=files)
            return _load_and_check(
                settings, client, served_config, before, result, head, probe, metrics, load_timeout_s
            )
        finally:
            client.close()


def _load_and_check(
    settings: Settings,
    client: grpcclient.InferenceServerClient,
    served_config: dict[str, Any],
    before: list[int],
    result: PublishResult,
    head: dict[str, Any],
    probe: Probe | None,
    metrics: dict[str, float] | None,
    load_timeout_s: float,
) -> PublishResult:
    model, n = result.model, int(result.version)
    started = time.perf_counter()
    try:
        client.load_model(
            model, config=override_config(served_config, [*before, n]), client_timeout=load_timeout_s
        )
    except InferenceServerException as exc:
        return _refuse(settings, client, served_config, before, result, f"load failed: {exc.message()}")
    result.load_s = round(time.perf_counter() - started, 3)
    now = served_versions(client, model)
    if n not in now or not set(before) <= set(now):
        return _refuse(
            settings, client, served_config, before, result, f"after the load READY versions are {now}"
        )
    result.canary = canary(client, model, n, probe or default_probe(), head)
    if not result.canary.ok:
        return _refuse(
            settings, client, served_config, before, result, f"canary failed: {result.canary.reason}"
        )
    result.served = now
    result.status = "promoted"
    result.reason = result.canary.reason
    extra = {"load_s": result.load_s, "canary_rows": float(result.canary.rows)}
    if result.canary.max_abs_diff is not None:
        extra["canary_max_abs_diff"] = result.canary.max_abs_diff
    result.record = registry.write(
        settings, registry.record(model, n, "promoted", metrics={**(metrics or {}), **extra})
    )
    return result


def _refuse(
    settings: Settings,
    client: grpcclient.InferenceServerClient,
    served_config: dict[str, Any],
    before: list[int],
    result: PublishResult,
    reason: str,
) -> PublishResult:
    """Back to the versions served before, the directory out of the repository, a ``refused`` record."""
    assert result.path is not None
    # Moved out first: restoring must not be able to pick the refused directory up again.
    dest = refused_dir(settings) / f"{result.model}-{result.version}-{int(time.time())}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(result.path), dest)
    result.path = dest
    if served_versions(client, result.model) != before:
        with contextlib.suppress(InferenceServerException):
            client.load_model(result.model, config=override_config(served_config, before), client_timeout=300)
    result.served = served_versions(client, result.model)
    result.status = "refused"
    result.reason = " ".join(reason.split())[:1000]  # Triton's message spans lines (a traceback)
    result.record = registry.write(
        settings, registry.record(result.model, result.version, "refused", reason=result.reason)
    )
    return result


def retire(settings: Settings, version: int | str, reason: str = "") -> ModelVersion:
    """Take ``version`` out of the served set (the others keep serving) and record it ``retired``."""
    model = settings.ranker_model
    with _serving_lock(settings, model):
        client = _client(settings)
        try:
            before = served_versions(client, model)
            keep = [v for v in before if v != int(version)]
            if not keep:
                raise PublishError(f"retiring {model} {version} would leave no version served ({before})")
            if keep != before:
                config = client.get_model_config(model, as_json=True)["config"]
                client.load_model(model, config=override_config(config, keep), client_timeout=300)
        finally:
            client.close()
    return registry.write(settings, registry.record(model, version, "retired", reason=reason))


def serve_registered(settings: Settings) -> list[int]:
    """After a Triton restart (which serves only the committed version 1): serve again every version
    the registry says is promoted and whose directory is still in the repository. Returns the READY set."""
    model = settings.ranker_model
    entries = [e for e in registry.read(settings).values() if e.model == model]
    status = {int(e.version): e.status for e in entries}
    on_disk = set(version_numbers(settings.model_repo / model))
    wanted = {v for v, s in status.items() if s == "promoted" and v in on_disk}
    if status.get(1) != "retired":
        wanted.add(1)
    with _serving_lock(settings, model):
        client = _client(settings)
        try:
            if set(served_versions(client, model)) != wanted:
                config = client.get_model_config(model, as_json=True)["config"]
                client.load_model(model, config=override_config(config, wanted), client_timeout=300)
            return served_versions(client, model)
        finally:
            client.close()
