"""Publishing a ranker version without a server: numbering, the version directory, the load config,
the canary and the refuse/restore path against a stand-in Triton client; the registry records; and
the committed config that keeps a fresh server on version 1."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from stream.features import N_FEATURES
from stream.records import ModelVersion
from stream.settings import ROOT, Settings
from workers.loop import publish as pub
from workers.loop import registry
from workers.loop.probe import Probe, default_probe
from workers.model import head as head_mod

BASE_HEAD = ROOT / "model_repo" / "ranker" / "1" / "head.json"


def head_file(path: Path, scale: float = 1.0, width: int = N_FEATURES + 1) -> Path:
    body = head_mod.load(BASE_HEAD)
    body["w1"] = (np.asarray(body["w1"])[:width] * scale).tolist()
    body["b2"] = float(body["b2"]) + scale
    path.write_text(json.dumps(body))
    return path


def base_version(root: Path) -> Path:
    d = root / "ranker" / "1"
    (d / "__pycache__").mkdir(parents=True)
    (d / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"x")
    (d / "model.py").write_text("# the model\n")
    (d / "encoder.int8.onnx").write_bytes(b"onnx" * 100)
    (d / "tokenizer.json").write_text("{}")
    (d / "build.json").write_text('{"version": "1"}')
    head_file(d / "head.json")
    return d


# --- numbering and the version directory ---------------------------------------------------------


def test_next_version_is_one_past_the_highest_numeric_directory(tmp_path: Path) -> None:
    model = tmp_path / "ranker"
    assert pub.next_version(model) == 1
    for name in ("1", "2", "10", "07", "x3", "4.bak"):
        (model / name).mkdir(parents=True)
    (model / "12").write_text("a file is not a version")
    assert pub.version_numbers(model) == [1, 2, 10]
    assert pub.next_version(model) == 11
    assert pub.next_version(model, taken=[14]) == 15  # refused numbers are not reused


def test_reserve_skips_a_number_another_publisher_took(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "ranker"
    (model / "1").mkdir(parents=True)
    real = pub.next_version
    calls: list[int] = []

    def racing(model_dir: Path, taken: Any = ()) -> int:
        n = real(model_dir, taken)
        if not calls:  # the other publisher creates 2 right after our listing
            (model_dir / str(n)).mkdir()
        calls.append(n)
        return n

    monkeypatch.setattr(pub, "next_version", racing)
    n, target = pub.reserve_version(model)
    assert (n, target) == (3, model / "3") and calls == [2, 3] and target.is_dir()


def test_refused_numbers_come_from_the_refused_directory(tmp_path: Path) -> None:
    settings = Settings(run_dir=tmp_path)
    for name in ("ranker-4-1700000000", "ranker-9-1700000001", "other-model-12-1700000000", "junk"):
        (pub.refused_dir(settings) / name).mkdir(parents=True)
    assert sorted(pub._refused_numbers(settings, "ranker")) == [4, 9]
    assert pub._refused_numbers(settings, "other-model") == [12]


def test_assemble_links_the_base_files_and_replaces_only_the_head(tmp_path: Path) -> None:
    base = base_version(tmp_path)
    before = {p.name: p.read_bytes() for p in base.iterdir() if p.is_file()}
    new_head = head_file(tmp_path / "new-head.json", scale=2.0)
    target = tmp_path / "ranker" / "2"
    target.mkdir()
    files = pub.assemble(base, target, new_head, {"base_version": "1", "metrics": {"mrr": 0.5}})
    assert files == {
        "build.json": "link",
        "encoder.int8.onnx": "link",
        "model.py": "link",
        "tokenizer.json": "link",
        "head.json": "new",
        "publish.json": "new",
    }
    for name in ("encoder.int8.onnx", "model.py", "tokenizer.json"):
        assert os.stat(target / name).st_ino == os.stat(base / name).st_ino
    assert (target / "head.json").read_bytes() == new_head.read_bytes()
    assert os.stat(target / "head.json").st_ino != os.stat(base / "head.json").st_ino
    assert not (target / "__pycache__").exists()
    assert json.loads((target / "publish.json").read_text())["base_version"] == "1"
    assert {p.name: p.read_bytes() for p in base.iterdir() if p.is_file()} == before  # base untouched


def test_assemble_copies_when_links_are_impossible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = base_version(tmp_path)
    target = tmp_path / "ranker" / "2"
    target.mkdir()

    def no_links(src: Any, dst: Any) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(pub.os, "link", no_links)
    files = pub.assemble(base, target, base / "head.json", {})
    assert files["encoder.int8.onnx"] == "copy"
    assert (target / "encoder.int8.onnx").read_bytes() == (base / "encoder.int8.onnx").read_bytes()
    assert os.stat(target / "encoder.int8.onnx").st_ino != os.stat(base / "encoder.int8.onnx").st_ino


def test_override_config_lists_exactly_the_versions_to_serve() -> None:
    served = {
        "name": "ranker",
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": 256,
        "parameters": {"onnx_file": {"string_value": "encoder.int8.onnx"}},
    }
    body = json.loads(pub.override_config(served, [2, 1, 2]))
    assert body["version_policy"] == {"specific": {"versions": [1, 2]}}
    assert {k: v for k, v in body.items() if k != "version_policy"} == {
        k: v for k, v in served.items() if k != "version_policy"
    }
    assert served["version_policy"] == {"latest": {"num_versions": 1}}  # the input is not changed
    # Triton's own parser accepts it
    from google.protobuf import json_format

    parsed = json_format.Parse(json.dumps(body), model_config_pb2.ModelConfig())
    assert list(parsed.version_policy.specific.versions) == [1, 2]


# --- canary and the publish flow against a stand-in client ---------------------------------------


class FakeResult:
    def __init__(self, scores: np.ndarray) -> None:
        self.scores = scores

    def as_numpy(self, name: str) -> np.ndarray:
        assert name == "SCORE"
        return self.scores


class FakeTriton:
    """The repository API as tritonserver 2.51 behaves (tests/integration/test_model_publish.py
    checks the real one): listed versions load or the load fails and the running ones stay READY."""

    def __init__(self, repo: Path, probe: Probe) -> None:
        self.repo = repo
        self.probe = probe
        self.states: dict[int, str] = {1: "READY"}
        self.heads: dict[int, dict[str, Any]] = {1: head_mod.load(repo / "ranker" / "1" / "head.json")}
        self.loads: list[list[int]] = []
        self.answer: dict[int, str] = {}  # version -> "nan" | "shape" | "stale" (the base head's scores)

    def get_model_config(self, model: str, as_json: bool = False) -> dict[str, Any]:
        return {
            "config": {
                "name": model,
                "version_policy": {"specific": {"versions": ["1"]}},
                "max_batch_size": 256,
            }
        }

    def get_model_repository_index(self, as_json: bool = False) -> dict[str, Any]:
        return {"models": [{"name": "ranker", "version": str(v), "state": s} for v, s in self.states.items()]}

    def load_model(self, model: str, config: str, client_timeout: float | None = None) -> None:
        versions = [int(v) for v in json.loads(config)["version_policy"]["specific"]["versions"]]
        self.loads.append(versions)
        heads = {}
        for v in versions:
            path = self.repo / model / str(v) / "head.json"
            if not path.exists() or len(head_mod.load(path)["w1"]) != N_FEATURES + 1:
                self.states[v] = "UNAVAILABLE"
                raise InferenceServerException(
                    f"load failed for model '{model}': version {v} is at UNAVAILABLE"
                )
            heads[v] = head_mod.load(path)
        self.heads = heads
        self.states = {v: "READY" for v in versions}

    def infer(self, model: str, inputs: list[Any], model_version: str, client_timeout: float) -> FakeResult:
        v = int(model_version)
        if self.states.get(v) != "READY":
            raise InferenceServerException(f"version {v} is not at ready state")
        assert [t.name() for t in inputs] == ["QUERY", "ITEM", "FEATURES"]
        assert inputs[2].shape() == [len(self.probe.queries), N_FEATURES]
        assert self.probe.cosines is not None
        head = self.heads[1] if self.answer.get(v) == "stale" else self.heads[v]
        scores = head_mod.forward(head, head_mod.inputs(self.probe.features, self.probe.cosines)).reshape(
            -1, 1
        )
        if self.answer.get(v) == "nan":
            scores[0] = np.nan
        if self.answer.get(v) == "shape":
            scores = scores[:-1]
        return FakeResult(scores)

    def close(self) -> None:
        pass


World = tuple[Settings, FakeTriton, list[ModelVersion], Probe]


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    base_version(tmp_path / "repo")
    settings = Settings(model_repo=tmp_path / "repo", run_dir=tmp_path / "run")
    plain = default_probe()
    probe = Probe(plain.queries, plain.items, plain.features, np.linspace(-0.2, 0.9, len(plain.queries)))
    fake = FakeTriton(tmp_path / "repo", probe)
    written: list[ModelVersion] = []

    def write(s: Settings, entry: ModelVersion) -> ModelVersion:
        written.append(entry)
        return entry

    monkeypatch.setattr(pub, "_client", lambda s: fake)
    monkeypatch.setattr(registry, "write", write)
    return settings, fake, written, probe


def test_publish_loads_the_new_version_beside_the_served_one(world: World, tmp_path: Path) -> None:
    settings, fake, written, probe = world
    result = pub.publish(
        settings, head_file(tmp_path / "h.json", 1.5), probe=probe, metrics={"holdout_mrr": 0.4}
    )
    assert (result.status, result.version, result.base_version) == ("promoted", "2", "1")
    assert fake.loads == [[1, 2]] and result.served == [1, 2]
    assert result.canary is not None and result.canary.max_abs_diff is not None
    assert result.canary.max_abs_diff < pub.CANARY_TOLERANCE
    assert result.path == settings.model_repo / "ranker" / "2" and (result.path / "head.json").exists()
    (entry,) = written
    assert (entry.key, entry.status) == ("ranker:2", "promoted")
    assert entry.metrics["holdout_mrr"] == 0.4 and entry.metrics["load_s"] >= 0
    # the next one goes beside both
    again = pub.publish(settings, head_file(tmp_path / "h3.json", 0.5), probe=probe)
    assert again.version == "3" and fake.loads[-1] == [1, 2, 3] and again.base_version == "2"


@pytest.mark.parametrize(
    ("answer", "why"),
    [("nan", "not finite"), ("shape", "shape"), ("stale", "differ from head.json")],
)
def test_a_version_failing_the_canary_is_unloaded_moved_out_and_refused(
    world: World, tmp_path: Path, answer: str, why: str
) -> None:
    settings, fake, written, probe = world
    fake.answer[2] = answer
    result = pub.publish(settings, head_file(tmp_path / "h.json", 1.5), probe=probe)
    assert result.status == "refused" and why in result.reason
    assert fake.loads == [[1, 2], [1]] and fake.states == {1: "READY"}  # the previous set restored
    assert not (settings.model_repo / "ranker" / "2").exists()
    assert result.path is not None and result.path.parent == pub.refused_dir(settings)
    assert (result.path / "head.json").exists()
    (entry,) = written
    assert (entry.key, entry.status) == ("ranker:2", "refused") and why in entry.reason


def test_a_version_that_fails_to_load_is_refused_and_its_number_not_reused(
    world: World, tmp_path: Path
) -> None:
    settings, fake, written, probe = world
    result = pub.publish(settings, head_file(tmp_path / "bad.json", width=N_FEATURES), probe=probe)
    assert result.status == "refused" and result.reason.startswith("load failed")
    # Triton kept version 1 READY: nothing to restore
    assert fake.loads == [[1, 2]] and fake.states[1] == "READY" and result.served == [1]
    assert [e.status for e in written] == ["refused"]
    good = pub.publish(settings, head_file(tmp_path / "good.json", 1.2), probe=probe)
    assert good.version == "3" and good.status == "promoted"


def test_without_reference_cosines_the_canary_still_rejects_a_constant_answer(
    world: World, tmp_path: Path
) -> None:
    settings, _, _, probe = world
    flat = head_mod.load(BASE_HEAD)
    flat["w2"] = [0.0] * len(flat["w2"])
    (tmp_path / "flat.json").write_text(json.dumps(flat))
    plain = Probe(probe.queries, probe.items, probe.features)  # no cosines: sanity checks only
    result = pub.publish(settings, tmp_path / "flat.json", probe=plain)
    assert result.status == "refused" and "same" in result.reason
    ok = pub.publish(settings, head_file(tmp_path / "h.json", 1.1), probe=plain)
    assert ok.status == "promoted" and ok.canary is not None and ok.canary.max_abs_diff is None


def test_retire_unloads_one_version_and_keeps_the_rest(world: World, tmp_path: Path) -> None:
    settings, fake, _, probe = world
    pub.publish(settings, head_file(tmp_path / "h.json", 1.5), probe=probe)
    entry = pub.retire(settings, "1", reason="v2 won the A/B")
    assert fake.loads[-1] == [2] and fake.states == {2: "READY"}
    assert (entry.key, entry.status, entry.reason) == ("ranker:1", "retired", "v2 won the A/B")
    with pytest.raises(pub.PublishError, match="no version served"):
        pub.retire(settings, "2")


# --- registry and committed files ----------------------------------------------------------------


def test_registry_records_and_latest_promoted() -> None:
    entry = registry.record("ranker", 3, "refused", reason="x" * 5000)
    assert entry.key == "ranker:3" and len(entry.reason) == 2000
    assert ModelVersion.model_validate_json(entry.to_json()) == entry
    entries = {
        e.key: e
        for e in (
            registry.record("ranker", 2, "promoted"),
            registry.record("ranker", 3, "refused"),
            registry.record("ranker", 4, "retired"),
            registry.record("other", 9, "promoted"),
        )
    }
    assert registry.latest_promoted(entries, "ranker") == "2"
    assert registry.latest_promoted(entries, "missing") is None


def test_a_fresh_server_serves_only_the_committed_version() -> None:
    text = (ROOT / "model_repo" / "ranker" / "config.pbtxt").read_text()
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert config.version_policy.WhichOneof("policy_choice") == "specific"
    assert list(config.version_policy.specific.versions) == [1]
    assert (ROOT / "model_repo" / "ranker" / "1" / "head.json").is_file()


def test_published_versions_are_git_ignored_and_version_1_is_not() -> None:
    def ignored(path: str) -> bool:
        out = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT, check=False)
        return out.returncode == 0

    assert ignored("model_repo/ranker/2/head.json")
    assert ignored("model_repo/ranker/17/model.py")
    assert not ignored("model_repo/ranker/1/head.json")
    assert not ignored("model_repo/ranker/1/model.py")
    assert not ignored("model_repo/ranker/config.pbtxt")


def test_after_a_restart_the_promoted_versions_are_served_again(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, fake, written, probe = world
    for scale in (1.5, 1.2, 0.8):
        pub.publish(settings, head_file(tmp_path / f"h{scale}.json", scale), probe=probe)
    retired = pub.retire(settings, "3")
    refused = registry.record("ranker", 5, "refused")
    entries = {e.key: e for e in [*written, retired, refused]}
    monkeypatch.setattr(registry, "read", lambda s: entries)
    fake.load_model("ranker", pub.override_config({}, [1]))  # a fresh server: version 1 only
    assert pub.serve_registered(settings) == [1, 2, 4]
    assert fake.loads[-1] == [1, 2, 4]
