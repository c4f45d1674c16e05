"""Publishing ranker versions into a running tritonserver (explicit model control), and the whole
``streamrec train --from-stream`` command.

A private Triton (free ports, own run dir) serves a private copy of the model repository (hard
links under the test's temp dir): nothing here touches the shared ``model_repo/`` or the shared
server. Registry records go to an isolated topic namespace on the shared broker.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from stream.features import N_FEATURES
from stream.records import ModelInfo, TrainingExample
from stream.settings import ROOT, Settings
from stream.text import user_text
from tests.support.stack import isolated_env, read_json_topic
from workers.kafka_clients import ensure_topics, producer
from workers.loop import publish as pub
from workers.loop.command import EXIT_TOO_FEW, RetrainOptions, retrain_and_publish
from workers.loop.probe import Probe
from workers.model import head as head_mod
from workers.model.runner import ModelEnvMissing, model_env_vars, model_python
from workers.movielens import load_items
from workers.replay import publish_items
from workers.stack import triton
from workers.supervisor import free_port, settings_for

SOURCE = ROOT / "model_repo" / "ranker"
NEEDED = ("model.py", "head.json", "encoder.int8.onnx", "tokenizer.json")


@dataclass
class Served:
    settings: Settings
    env: dict[str, str]
    probe: Probe
    log: Path
    notes: dict[str, Any] = field(default_factory=dict)


def _private_repo(root: Path) -> Path:
    repo = root / "model_repo"
    (repo / "ranker" / "1").mkdir(parents=True)
    shutil.copy(SOURCE / "config.pbtxt", repo / "ranker" / "config.pbtxt")
    for f in (SOURCE / "1").iterdir():
        if f.is_file() and f.name != "encoder.onnx":  # the fp32 export is not what the ranker serves
            os.link(f, repo / "ranker" / "1" / f.name)
    return repo


@pytest.fixture(scope="module")
def served(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    missing = [n for n in NEEDED if not (SOURCE / "1" / n).exists()]
    if missing:
        pytest.skip(f"ranker not built ({missing}): run python -m workers.model.build")
    try:
        python = str(model_python())
    except ModelEnvMissing as exc:
        pytest.skip(str(exc))
    root = tmp_path_factory.mktemp("publish")
    repo = _private_repo(root)
    ports = {f"STREAMREC_TRITON_{p}_PORT": str(free_port()) for p in ("HTTP", "GRPC", "METRICS")}
    env = isolated_env(root, STREAMREC_MODEL_REPO=str(repo), **ports)
    settings = settings_for(env)
    args = ["probe", "--base-dir", str(repo / "ranker" / "1"), "--out", str(root / "probe.json")]
    out = subprocess.run(
        [python, "-m", "workers.loop.retrain", *args],
        capture_output=True,
        text=True,
        env=model_env_vars(),
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    asyncio.run(ensure_topics(settings))
    triton.start(settings)
    try:
        yield Served(settings, env, Probe.load(root / "probe.json"), triton.process(settings).log_file)
    finally:
        triton.stop(settings)


def _client(settings: Settings) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(settings.triton_grpc_url)


def _infer(client: grpcclient.InferenceServerClient, probe: Probe, version: str) -> np.ndarray:
    result = client.infer("ranker", pub._probe_inputs(probe), model_version=version, client_timeout=30)
    scores = result.as_numpy("SCORE")
    assert scores is not None
    return scores.reshape(-1)


def _perturbed(path: Path, **change: Any) -> Path:
    body = head_mod.load(SOURCE / "1" / "head.json")
    body.update(change)
    path.write_text(json.dumps(body))
    return path


class Traffic:
    """Requests to version 1 in a loop on another thread: every answer and error, with its time."""

    def __init__(self, settings: Settings, probe: Probe) -> None:
        self.settings, self.probe = settings, probe
        self.done: list[float] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        client = _client(self.settings)
        few = Probe(self.probe.queries[:4], self.probe.items[:4], self.probe.features[:4])
        try:
            while not self.stop.is_set():
                try:
                    scores = _infer(client, few, "1")
                    assert np.all(np.isfinite(scores))
                    self.done.append(time.monotonic())
                except Exception as exc:
                    self.errors.append(repr(exc)[:300])
        finally:
            client.close()

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def _registry(settings: Settings) -> dict[str, dict[str, Any]]:
    return {f"{r['model']}:{r['version']}": r for r in read_json_topic(settings, "model-versions")}


def test_a_new_version_is_loaded_beside_the_old_one_without_dropping_requests(
    served: Served, tmp_path: Path
) -> None:
    settings, probe = served.settings, served.probe
    client = _client(settings)
    v1_before = _infer(client, probe, "1")
    head = _perturbed(
        tmp_path / "head.json", b2=1.0, w2=[1.3 * w for w in head_mod.load(SOURCE / "1" / "head.json")["w2"]]
    )
    with Traffic(settings, probe) as traffic:
        time.sleep(0.5)
        started = time.monotonic()
        result = pub.publish(settings, head, probe=probe, metrics={"holdout_mrr": 0.42})
        finished = time.monotonic()
        time.sleep(0.5)
    served.notes["load_s"] = result.load_s
    assert result.status == "promoted", result.reason
    assert result.version == "2" and result.base_version == "1"
    assert traffic.errors == []
    assert sum(started <= t <= finished for t in traffic.done) >= 3  # answered during the swap, too
    assert pub.served_versions(client, "ranker") == [1, 2]
    # v2 answers with its own head, exactly what head.forward gives on the served encoder's cosines
    v2 = _infer(client, probe, "2")
    expected = probe.expected(head_mod.load(head))
    assert expected is not None
    np.testing.assert_allclose(v2, expected, atol=pub.CANARY_TOLERANCE)
    assert result.canary is not None and result.canary.max_abs_diff is not None
    assert np.max(np.abs(v2 - _infer(client, probe, "1"))) > 0.1
    np.testing.assert_allclose(_infer(client, probe, "1"), v1_before, atol=1e-5)  # v1 unchanged
    assert (settings.model_repo / "ranker" / "2" / "head.json").read_bytes() == head.read_bytes()
    record = _registry(settings)["ranker:2"]
    assert record["status"] == "promoted" and record["metrics"]["holdout_mrr"] == 0.42
    client.close()


def test_broken_versions_are_refused_and_traffic_stays_on_the_served_ones(
    served: Served, tmp_path: Path
) -> None:
    settings, probe = served.settings, served.probe
    client = _client(settings)
    before = pub.served_versions(client, "ranker")
    assert 1 in before
    reference = {v: _infer(client, probe, str(v)) for v in before}
    base_w1 = head_mod.load(SOURCE / "1" / "head.json")["w1"]
    wrong_width = _perturbed(tmp_path / "narrow.json", w1=base_w1[:N_FEATURES])
    nan_scores = _perturbed(tmp_path / "nan.json", b2=float("nan"))
    with Traffic(settings, probe) as traffic:
        refused_load = pub.publish(settings, wrong_width, probe=probe)
        refused_canary = pub.publish(settings, nan_scores, probe=probe)
    assert traffic.errors == []
    assert refused_load.status == "refused" and "head expects" in refused_load.reason
    assert refused_canary.status == "refused" and "not finite" in refused_canary.reason
    assert int(refused_canary.version) == int(refused_load.version) + 1  # a refused number is not reused
    assert pub.served_versions(client, "ranker") == before
    for v, scores in reference.items():
        np.testing.assert_allclose(_infer(client, probe, str(v)), scores, atol=1e-5)
    registry = _registry(settings)
    for result in (refused_load, refused_canary):
        assert not (settings.model_repo / "ranker" / result.version).exists()
        assert result.path is not None and result.path.parent == settings.run_dir / "refused-models"
        assert (result.path / "head.json").exists()
        record = registry[f"ranker:{result.version}"]
        assert record["status"] == "refused" and record["reason"] == result.reason
    client.close()


def _examples(items: list[Any], requests: int, shown: int, seed: int) -> list[TrainingExample]:
    """Requests over real catalog items; the clicked one has a high ``lexical`` feature, which the
    committed head ignores, so a retrain has something to learn that held-out data confirms."""
    rng = np.random.default_rng(seed)
    out = []
    for r in range(requests):
        picked = [items[i] for i in rng.choice(len(items), size=shown + 3, replace=False)]
        history, candidates = picked[:3], picked[3:]
        context = user_text("", [i.title for i in history], history[0].categories)
        clicked = int(rng.integers(shown))
        for rank, item in enumerate(candidates, start=1):
            features = rng.random(N_FEATURES) * 0.6
            features[0] = 0.85 + 0.15 * rng.random() if rank - 1 == clicked else 0.7 * rng.random()
            out.append(
                TrainingExample(
                    request_id=f"req-{r:04d}",
                    user_id=f"u{r % 17}",
                    item_id=item.item_id,
                    rank=rank,
                    score=0.0,
                    propensity=0.5 if rank == shown else 1.0,
                    features=[float(x) for x in features],
                    context=context,
                    variant="control",
                    model=ModelInfo(name="ranker", version="1"),
                    fallback=False,
                    shown_at=1.76e9 + 60 * r,
                    outcome="click" if rank - 1 == clicked else "none",
                    outcome_at=1.76e9 + 60 * r + 5 if rank - 1 == clicked else None,
                    label=int(rank - 1 == clicked),
                )
            )
    return out


async def _send(settings: Settings, batch: list[TrainingExample]) -> None:
    prod = producer(settings)
    await prod.start()
    try:
        for e in batch:
            await prod.send(settings.topic("training-examples"), key=e.key.encode(), value=e.to_json())
        await prod.flush()
    finally:
        await prod.stop()


def test_train_from_stream_retrains_gates_and_publishes(served: Served, tmp_path: Path) -> None:
    settings = served.settings
    catalog = list(load_items().values())[:150]
    asyncio.run(publish_items(settings, catalog))
    batch = _examples(catalog, requests=60, shown=8, seed=1)
    duplicates = batch[:40]  # what a worker that crashed before committing would write again
    asyncio.run(_send(settings, batch + duplicates))

    # too few: nothing trained, nothing published
    before = pub.version_numbers(settings.model_repo / "ranker")
    short = retrain_and_publish(settings, RetrainOptions(min_examples=10_000))
    assert short.exit_code == EXIT_TOO_FEW and short.decision == "too_few_examples" and short.version is None
    assert pub.version_numbers(settings.model_repo / "ranker") == before

    started = time.monotonic()
    out = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "streamrec"), "train", "--from-stream", "--min-examples", "200"],
        capture_output=True,
        text=True,
        env=served.env,
        cwd=ROOT,
        timeout=240,
        check=False,
    )
    seconds = time.monotonic() - started
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["decision"] == "promoted", report
    assert report["counts"]["examples"] == len(batch) and report["counts"]["duplicates"] == len(duplicates)
    assert report["counts"]["holdout_requests"] == 12
    assert report["new"]["mrr"] >= report["base"]["mrr"] + 0.1
    version = report["version"]
    assert int(version) > max(before)
    client = _client(settings)
    assert int(version) in pub.served_versions(client, "ranker")
    client.close()
    record = _registry(settings)[f"ranker:{version}"]
    assert record["status"] == "promoted"
    assert record["metrics"]["holdout_mrr"] == pytest.approx(report["new"]["mrr"])
    served.notes["cli_s"] = round(seconds, 1)
    print(json.dumps({"cli_seconds": round(seconds, 1), **report["seconds"], "notes": served.notes}))
