"""Retraining from logged examples: dedupe, grouping, the time split, IPS weights, the listwise
fine-tune, held-out metrics and the publish gate (numpy, app env), and the model-env step itself
(``python -m workers.loop.retrain`` through the model environment's Python)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream.features import N_FEATURES
from stream.records import Item, ModelInfo, TrainingExample
from stream.settings import ROOT
from workers.loop import examples, train
from workers.loop.command import RetrainOptions, too_few
from workers.loop.retrain import served_params
from workers.model import head as head_mod

BASE_HEAD = ROOT / "model_repo" / "ranker" / "1" / "head.json"
SIGNAL = 0  # "lexical": the committed head gives it ~0 weight, so only a retrain can use it


def example(
    request: str, item: str, label: int, rank: int = 1, shown_at: float = 1.7e9, **kw: Any
) -> TrainingExample:
    body: dict[str, Any] = {
        "request_id": request,
        "user_id": "u1",
        "item_id": item,
        "rank": rank,
        "score": 0.5,
        "propensity": 1.0,
        "features": [0.1] * N_FEATURES,
        "context": "watched: Heat (1995)",
        "variant": "control",
        "model": ModelInfo(name="ranker", version="1"),
        "fallback": False,
        "shown_at": shown_at,
        "outcome": "click" if label else "none",
        "outcome_at": shown_at + 5 if label else None,
        "label": label,
    }
    body.update(kw)
    return TrainingExample(**body)


def msg(e: TrainingExample) -> tuple[bytes, bytes]:
    return e.key.encode(), e.to_json()


def synthetic_rows(requests: int, shown: int = 8, seed: int = 0) -> list[dict[str, Any]]:
    """Requests where the clicked item has a high ``features[SIGNAL]`` (a learnable signal)."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(requests):
        pos = int(rng.integers(shown))
        for j in range(shown):
            features = rng.random(N_FEATURES).tolist()
            features[SIGNAL] = 0.9 + 0.1 * float(rng.random()) if j == pos else 0.8 * features[SIGNAL]
            rows.append(
                {
                    "request_id": f"r{r:04d}",
                    "item_id": str(j),
                    "rank": j + 1,
                    "shown_at": 1.7e9 + r,
                    "label": int(j == pos),
                    "propensity": 1.0,
                    "features": features,
                    "context": f"user {r % 7}",
                    "item_text": f"item {j}",
                }
            )
    return rows


def groups_of(rows: list[dict[str, Any]], seed: int = 0) -> list[train.Group]:
    cosines = np.random.default_rng(seed + 1).random(len(rows)).astype(np.float32) * 0.5
    return train.build_groups(rows, cosines)


# --- dedupe and the JSONL ------------------------------------------------------------------------


def test_dedupe_keeps_one_example_per_request_item_and_counts_the_rest() -> None:
    a, b = example("q1", "10", 0), example("q1", "11", 1, rank=2)
    replayed = example("q1", "10", 1, outcome_at=1.7e9 + 9)  # written again after a crash, outcome changed
    out = examples.dedupe([msg(a), msg(b), (b"junk", b"{not json"), msg(replayed), msg(b)])
    assert sorted(e.key for e in out.examples) == ["q1:10", "q1:11"]
    assert out.duplicates == 2 and out.invalid == 1
    assert next(e for e in out.examples if e.key == "q1:10").label == 1  # the last one read wins


def test_item_texts_follow_the_compacted_catalog() -> None:
    def item(item_id: str, title: str) -> tuple[bytes, bytes]:
        return item_id.encode(), Item(
            item_id=item_id, title=title, categories=["Drama"], updated_at=1.7e9
        ).to_json()

    texts = examples.item_texts([item("1", "Old"), item("2", "Heat (1995)"), item("1", "New"), (b"2", None)])
    assert texts == {"1": "New. Drama."}


def test_rows_without_item_text_are_skipped_and_groups_counted(tmp_path: Path) -> None:
    batch = [
        example("q1", "1", 1),
        example("q1", "2", 0, rank=2),
        example("q2", "1", 0),
        example("q3", "9", 1),
    ]
    rows, missing = examples.write_rows(tmp_path / "x.jsonl", batch, {"1": "one.", "2": "two."})
    assert (rows, missing) == (3, 1)
    lines = [json.loads(line) for line in (tmp_path / "x.jsonl").read_text().splitlines()]
    assert [r["key"] for r in lines] == ["q1:1", "q1:2", "q2:1"]
    assert lines[0]["item_text"] == "one." and lines[0]["features"] == [0.1] * N_FEATURES
    # q1 has a click and a non-click; q2 only a non-click; q3 only a click
    assert examples.positive_groups(batch) == (3, 1)


def test_too_few_examples_or_positive_groups_stops_before_training(tmp_path: Path) -> None:
    def collected(rows: int, positive: int) -> examples.Collected:
        return examples.Collected(tmp_path, rows, rows // 8, positive, 0, 0, 0, 0.0)

    opts = RetrainOptions(min_examples=200, min_positive_groups=10)
    assert too_few(collected(199, 50), opts) is not None
    assert "requests with both" in (too_few(collected(400, 9), opts) or "")
    assert too_few(collected(200, 10), opts) is None


# --- grouping, split, weights --------------------------------------------------------------------


def test_groups_are_requests_in_shown_order_with_the_cosine_last() -> None:
    rows = synthetic_rows(3, shown=4)
    rows.reverse()  # arrival order must not matter
    cosines = np.arange(len(rows), dtype=np.float32) / 100
    groups = train.build_groups(rows, cosines)
    assert sorted(g.request_id for g in groups) == ["r0000", "r0001", "r0002"]
    g = next(g for g in groups if g.request_id == "r0001")
    assert list(g.ranks) == [1, 2, 3, 4]
    assert g.x.shape == (4, N_FEATURES + 1) and g.labels.sum() == 1
    first = next(i for i, r in enumerate(rows) if r["request_id"] == "r0001" and r["rank"] == 1)
    assert g.x[0, -1] == pytest.approx(cosines[first])
    np.testing.assert_allclose(g.x[0, :N_FEATURES], rows[first]["features"], rtol=1e-6)
    with pytest.raises(ValueError, match="cosines"):
        train.build_groups(rows, cosines[:-1])


def test_time_split_holds_out_the_newest_requests() -> None:
    groups = groups_of(synthetic_rows(50))
    rng = np.random.default_rng(3)
    shuffled = [groups[i] for i in rng.permutation(len(groups))]
    fit, held = train.time_split(shuffled, 0.2)
    assert len(held) == 10 and len(fit) == 40
    assert max(g.shown_at for g in fit) < min(g.shown_at for g in held)
    assert train.time_split(groups[:1], 0.2) == (groups[:1], [])


def test_ips_weights_are_inverse_propensities_capped() -> None:
    np.testing.assert_allclose(
        train.ips_weight(np.array([1.0, 0.5, 0.2, 0.01, 0.0]), 10.0), [1, 2, 5, 10, 10]
    )
    rows = synthetic_rows(2, shown=4)
    clicked = next(r for r in rows if r["request_id"] == "r0001" and r["label"])
    clicked["propensity"] = 0.02  # shown by exploration: 1/0.02 = 50, capped at 10
    batch = train._batch(groups_of(rows), cap=10.0)
    assert batch.term_weight[1] / batch.term_weight[0] == pytest.approx(10.0)
    assert batch.term_weight.sum() == pytest.approx(1.0)


def test_every_click_is_scored_against_the_non_clicks_only() -> None:
    rows = synthetic_rows(1, shown=5)
    for r in rows[:2]:
        r["label"] = 1
    rows[2]["label"] = 0
    batch = train._batch(groups_of(rows), cap=10.0)
    labels = np.array([r["label"] for r in rows], dtype=bool)
    assert len(batch.term_pos) == labels.sum()
    for mask, pos in zip(batch.term_mask, batch.term_pos, strict=True):
        assert mask[pos] and mask[: len(rows)].sum() == (~labels).sum() + 1


def test_gradient_matches_finite_differences() -> None:
    batch = train._batch(groups_of(synthetic_rows(6, shown=5)), cap=10.0)
    params = train._params(head_mod.load(BASE_HEAD))
    params["w1"] = params["w1"] + np.random.default_rng(0).normal(0, 0.3, params["w1"].shape)
    _, grads = train.loss_and_grad(params, batch)
    rng = np.random.default_rng(1)
    for name in train.PARAMS:
        flat = params[name].reshape(-1)
        for idx in rng.choice(flat.size, size=min(4, flat.size), replace=False):
            shifted = {k: v.copy() for k, v in params.items()}
            eps = 1e-5
            shifted[name].reshape(-1)[idx] += eps
            up = train.loss_and_grad(shifted, batch)[0]
            shifted[name].reshape(-1)[idx] -= 2 * eps
            down = train.loss_and_grad(shifted, batch)[0]
            assert grads[name].reshape(-1)[idx] == pytest.approx((up - down) / (2 * eps), rel=1e-3, abs=1e-7)


# --- fine-tune, metrics, gate --------------------------------------------------------------------


def test_fine_tune_learns_a_signal_the_served_head_ignores() -> None:
    groups = groups_of(synthetic_rows(200))
    fit, held = train.time_split(groups, 0.2)
    base = head_mod.load(BASE_HEAD)
    weights, info = train.fine_tune(base, fit)
    new = {**base, **weights}
    assert info["loss_last"] < info["loss_first"]
    before, after = train.evaluate(base, held), train.evaluate(new, held)
    assert before.groups == after.groups == 40
    assert after.mrr > before.mrr + 0.2 and after.ndcg > before.ndcg
    assert np.asarray(weights["w1"]).shape == np.asarray(base["w1"]).shape
    assert train.decide(before, after, 0.0).publish


def test_rank_metrics_by_hand() -> None:
    labels = np.array([False, True, False, True])
    rr, ndcg = train.rank_metrics(np.array([1, 2, 3, 4]), labels, k=10)
    assert rr == pytest.approx(0.5)
    assert ndcg == pytest.approx((1 / np.log2(3) + 1 / np.log2(5)) / (1 + 1 / np.log2(3)))
    assert train.rank_metrics(np.array([3, 1, 2]), np.array([False, True, False]), k=10) == (1.0, 1.0)
    assert train.rank_metrics(np.array([1, 2, 3]), np.array([False, False, True]), k=2)[1] == 0.0


def test_constant_head_scores_as_chance_not_as_perfect() -> None:
    groups = groups_of(synthetic_rows(300, shown=8))
    flat = {"w1": np.zeros((N_FEATURES + 1, 2)), "b1": np.zeros(2), "w2": np.zeros(2), "b2": 0.0}
    chance = train.evaluate(flat, groups)
    expected = np.mean([1 / r for r in range(1, 9)])  # a random rank among 8
    assert chance.mrr == pytest.approx(expected, abs=0.05)
    oracle = {
        **flat,
        "w1": np.eye(N_FEATURES + 1, 2) * 1.0,
        "w2": np.array([1.0, 0.0]),
    }  # scores = features[0]
    assert train.evaluate(oracle, groups).mrr == 1.0
    assert train.evaluate(None, groups).mrr == pytest.approx(expected, abs=0.05)  # the logged order: random


def test_gate_publishes_only_when_not_worse_within_the_tolerance() -> None:
    base = train.Metrics(mrr=0.50, ndcg=0.6, groups=40)
    assert train.decide(base, train.Metrics(0.50, 0.5, 40), 0.0).publish
    assert not train.decide(base, train.Metrics(0.49, 0.9, 40), 0.0).publish
    assert train.decide(base, train.Metrics(0.49, 0.5, 40), 0.02).publish
    assert not train.decide(base, train.Metrics(0.0, 0.0, 0), 1.0).publish


def test_retrain_reads_the_served_config() -> None:
    params = served_params(ROOT / "model_repo" / "ranker" / "1")
    assert params["onnx_file"] == "encoder.int8.onnx" and params["max_seq_len"] == "64"


# --- the model-env step --------------------------------------------------------------------------


def _model_env() -> tuple[str, dict[str, str]]:
    from workers.model.runner import ModelEnvMissing, model_env_vars, model_python

    try:
        return str(model_python()), model_env_vars()
    except ModelEnvMissing as exc:
        pytest.skip(str(exc))


def test_retrain_fit_in_the_model_env(tmp_path: Path) -> None:
    base_dir = ROOT / "model_repo" / "ranker" / "1"
    if not (base_dir / "encoder.int8.onnx").exists():
        pytest.skip("model_repo/ranker/1 not built (python -m workers.model.build)")
    python, env = _model_env()
    rows = synthetic_rows(60, shown=6)
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["fit", "--examples", str(path), "--base-dir", str(base_dir), "--out", str(tmp_path / "out")]
    out = subprocess.run(
        [python, "-m", "workers.loop.retrain", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=240,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout == ""  # the CLI's stdout is reserved for its JSON line
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["counts"]["holdout_requests"] == 12 and result["counts"]["examples"] == len(rows)
    assert result["new"]["mrr"] > result["base"]["mrr"]
    head = head_mod.load(tmp_path / "out" / "head.json")
    assert head["inputs"] == list(head_mod.INPUTS) and head["meta"]["base_version"] == "1"
    probe = json.loads((tmp_path / "out" / "probe.json").read_text())
    held = {f"r{r:04d}" for r in range(48, 60)}
    assert len(probe["cosines"]) == 16 and all(-1.0 <= c <= 1.0 for c in probe["cosines"])
    assert {r["context"] for r in rows if r["request_id"] in held} >= set(probe["queries"])
