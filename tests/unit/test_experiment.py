"""Variant assignment: a stable SHA-256 bucket, balanced shares, validated variants, and the wire-in."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from stream.experiment import (
    DEFAULT_VARIANTS,
    MAX_VARIANTS,
    Arm,
    Experiment,
    Variant,
    bucket,
    parse_variants,
)
from stream.profile import Profile
from stream.recommend import FALLBACK_MODEL
from stream.records import ModelVersion, Query
from stream.settings import SettingsError, load_settings
from tests.unit.test_recommend import FakeRanker, buyer, make, query
from workers.ranker_client import RankerUnavailable, RankRequest

HALVES = '{"control": 0.5, "treatment": 0.5}'


def experiment(raw: str = HALVES, salt: str = "ab-1") -> Experiment:
    return Experiment(salt=salt, variants=parse_variants(raw))


# --- the hash ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user_id", "prefix"),
    [
        # printf 'ab-1\0<user>' | sha256sum | cut -c1-16
        ("u-1", 0xAF424D247540494F),
        ("u-2", 0xEC9AAF3F74ABB18D),
        ("u-3", 0x48803903477DEB8F),
        ("u-4", 0x7A59C51145F49314),
        ("42", 0x862FE60E9A72DEE1),
    ],
)
def test_bucket_is_the_first_8_bytes_of_sha256(user_id: str, prefix: int) -> None:
    assert bucket("ab-1", user_id) == prefix / 2**64


def test_known_users_land_in_known_variants() -> None:
    exp = experiment()
    # u-3 at 0.283 and u-4 at 0.478 fall in control's [0, 0.5); u-1 at 0.685, u-2 at 0.924 in treatment.
    assert {u: exp.assign(u).name for u in ("u-1", "u-2", "u-3", "u-4")} == {
        "u-1": "treatment",
        "u-2": "treatment",
        "u-3": "control",
        "u-4": "control",
    }


def test_assignment_is_the_same_in_another_process_with_another_hash_seed() -> None:
    users = [f"user-{i}" for i in range(50)]
    here = [experiment().assign(u).name for u in users]
    code = (
        "from stream.experiment import Experiment, parse_variants\n"
        f"e = Experiment(salt='ab-1', variants=parse_variants({HALVES!r}))\n"
        f"print(','.join(e.assign(u).name for u in {users!r}))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip().split(",") == here


def test_the_salt_reshuffles_users() -> None:
    users = [f"user-{i}" for i in range(1000)]
    a = [experiment(salt="ab-1").assign(u).name for u in users]
    b = [experiment(salt="ab-2").assign(u).name for u in users]
    moved = sum(x != y for x, y in zip(a, b, strict=True)) / len(users)
    assert 0.4 < moved < 0.6  # independent halves disagree about half the time


def test_key_order_in_the_json_does_not_matter() -> None:
    a = experiment('{"control": 0.3, "treatment": 0.7}')
    b = experiment('{"treatment": 0.7, "control": 0.3}')
    assert a == b
    assert [v.name for v in a.variants] == ["control", "treatment"]


@pytest.mark.parametrize(
    "raw",
    [HALVES, '{"a": 0.2, "b": 0.3, "c": 0.5}', '{"a": 0.1, "b": 0.9}', '{"x": 0.25, "y": 0.25, "z": 0.5}'],
)
def test_shares_are_balanced_over_100k_users(raw: str) -> None:
    exp = experiment(raw)
    counts = Counter(exp.assign(f"synthetic-{i}").name for i in range(100_000))
    for v in exp.variants:
        assert abs(counts[v.name] / 100_000 - v.share) < 0.01, (v.name, counts)


def test_buckets_are_uniform() -> None:
    points = np.array([bucket("ab-1", str(i)) for i in range(20_000)])
    assert points.min() >= 0.0
    assert points.max() < 1.0
    hist, _ = np.histogram(points, bins=10, range=(0.0, 1.0))
    assert np.all(np.abs(hist / 20_000 - 0.1) < 0.01)


# --- validation ---------------------------------------------------------------------------------------


def test_empty_means_everyone_in_control() -> None:
    assert parse_variants("") == DEFAULT_VARIANTS
    assert parse_variants(None) == DEFAULT_VARIANTS
    exp = Experiment(salt="s", variants=DEFAULT_VARIANTS)
    assert {exp.assign(f"u{i}").name for i in range(100)} == {"control"}


def test_an_arm_is_parsed() -> None:
    [control, treatment] = parse_variants(
        '{"treatment": {"share": 0.25, "ranker": "fallback", "mmr_lambda": 0.7, "explore_epsilon": 0.1},'
        ' "control": {"share": 0.75, "version": "3"}}'
    )
    assert control == Variant(name="control", share=0.75, arm=Arm(version="3"))
    assert treatment.arm == Arm(ranker="fallback", mmr_lambda=0.7, explore_epsilon=0.1)
    assert treatment.arm.uses_fallback
    assert not control.arm.uses_fallback


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"a": 0.5, "b": 0.4}', "sum to 0.9"),
        ('{"a": 0.6, "b": 0.6}', "sum to 1.2"),
        ('{"a": 1.0, "b": 0.0}', "'b': share"),
        ('{"a": 1.5, "b": -0.5}', "share"),
        ('{"a": true}', "share"),
        ('{"a": "0.5", "b": 0.5}', "expected a share or an object"),
        ('{"Control": 1.0}', "pattern"),
        ('{"a b": 1.0}', "pattern"),
        ('{"' + "a" * 33 + '": 1.0}', "at most 32"),
        ('{"a": {"share": 1.0, "mmr_lambda": 1.5}}', "mmr_lambda"),
        ('{"a": {"share": 1.0, "explore_epsilon": -0.1}}', "explore_epsilon"),
        ('{"a": {"share": 1.0, "version": "newest"}}', "version"),
        ('{"a": {"share": 1.0, "ranker": "bad name"}}', "ranker"),
        ('{"a": {"share": 1.0, "lambda": 0.5}}', "lambda"),  # a misspelt field is an error, not ignored
        ('{"a": {"mmr_lambda": 0.5}}', "share"),
        ("{}", "non-empty JSON object"),
        ("[0.5, 0.5]", "non-empty JSON object"),
        ("{not json", "not valid JSON"),
        ("{" + ", ".join(f'"v{i}": 0.1' for i in range(10)) + "}", f"at most {MAX_VARIANTS}"),
    ],
)
def test_bad_variants_are_refused_with_a_reason(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_variants(raw)


def test_repeated_names_and_unsorted_variants_are_refused() -> None:
    a = Variant(name="a", share=0.5)
    with pytest.raises(ValueError, match="repeat"):
        parse_variants((a, a))
    with pytest.raises(ValueError, match="sorted"):
        Experiment(salt="s", variants=(Variant(name="b", share=0.5), a))


def test_rounding_at_the_top_of_the_range_still_assigns() -> None:
    thirds = Experiment(salt="s", variants=parse_variants('{"a": 0.3333333, "b": 0.3333333, "c": 0.3333334}'))
    assert {thirds.assign(f"u{i}").name for i in range(3000)} == {"a", "b", "c"}


# --- settings ---------------------------------------------------------------------------------------


def test_settings_read_variants_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "STREAMREC_VARIANTS", '{"treatment": {"share": 0.5, "ranker": "fallback"}, "control": 0.5}'
    )
    monkeypatch.setenv("STREAMREC_EXPERIMENT_SALT", "ab-7")
    settings = load_settings(_env_file=None)
    assert [v.name for v in settings.variants] == ["control", "treatment"]
    assert settings.variants[1].arm.uses_fallback
    assert settings.experiment_salt == "ab-7"


def test_settings_defaults_keep_one_control_variant_without_mmr_or_exploration() -> None:
    settings = load_settings(_env_file=None)
    assert settings.variants == DEFAULT_VARIANTS
    assert settings.mmr_lambda == 1.0
    assert settings.explore_epsilon == 0.0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"a": 0.5}', "STREAMREC_VARIANTS: .*sum to 0.5"),
        ('{"a": {"share": 1.0, "ranker": "ranker-v2"}}', "only STREAMREC_RANKER_MODEL"),
        ('{"a": {"share": 1.0, "version": "two"}}', "variant 'a': version"),
    ],
)
def test_settings_fail_fast_on_bad_or_unroutable_variants(
    monkeypatch: pytest.MonkeyPatch, raw: str, message: str
) -> None:
    monkeypatch.setenv("STREAMREC_VARIANTS", raw)
    with pytest.raises(SettingsError, match=message):
        load_settings(_env_file=None)


# --- wire-in ---------------------------------------------------------------------------------------


async def test_recommendations_carry_the_default_variant() -> None:
    rec, metrics, _ = make(FakeRanker(score=lambda r: np.arange(len(r.item_texts), dtype=np.float32)))
    [out] = await rec.recommend([(query(k=5), buyer())])
    assert out.variant == "control"
    assert all(i.propensity is None for i in out.items)
    assert metrics.registry.get_sample_value("streamrec_impressions_total", {"variant": "control"}) == 5
    assert metrics.registry.get_sample_value("streamrec_explored_items_total", {"variant": "control"}) == 0


async def test_a_fallback_arm_is_ranked_by_the_blend_without_calling_triton() -> None:
    client = FakeRanker(score=lambda r: np.arange(len(r.item_texts), dtype=np.float32))
    rec, metrics, _ = make(client, variants='{"blend": {"share": 1.0, "ranker": "fallback"}}')
    [out] = await rec.recommend([(query(k=5), buyer())])
    assert client.rank_calls == []
    assert out.variant == "blend"
    assert out.model == FALLBACK_MODEL
    assert out.fallback is False  # the blend answered by design, not because Triton failed
    assert out.items[0].item_id == "i11"  # the blend's leader (see test_recommend)
    assert metrics.registry.get_sample_value("streamrec_impressions_total", {"variant": "blend"}) == 5
    assert metrics.registry.get_sample_value("streamrec_fallbacks_total", {"cause": "breaker_open"}) is None


async def test_a_batch_mixing_arms_sends_only_ranker_rows_to_triton() -> None:
    client = FakeRanker(score=lambda r: np.arange(len(r.item_texts), dtype=np.float32), version="7")
    variants = '{"control": 0.5, "treatment": {"share": 0.5, "ranker": "fallback"}}'
    rec, _, _ = make(client, variants=variants, experiment_salt="ab-1")
    users = {"u-3": "control", "u-1": "treatment"}  # from the known vectors above
    requests = [(query(request_id=f"r-{u}", k=3).model_copy(update={"user_id": u}), buyer()) for u in users]
    outs = await rec.recommend(requests)
    assert [o.variant for o in outs] == list(users.values())
    [(ranked, _)] = client.rank_calls
    assert len(ranked) == 1
    assert outs[0].model.version == "7"
    assert outs[1].model == FALLBACK_MODEL


async def test_arms_route_to_their_versions_and_latest_follows_the_registry() -> None:
    client = FakeRanker(score=lambda r: np.arange(len(r.item_texts), dtype=np.float32), version="1")
    variants = '{"control": {"share": 0.5, "version": "1"}, "treatment": 0.5}'
    rec, _, _ = make(client, variants=variants, experiment_salt="ab-1")
    users = {"u-3": "control", "u-1": "treatment"}
    requests = [(query(request_id=f"r-{u}", k=3).model_copy(update={"user_id": u}), buyer()) for u in users]

    outs = await rec.recommend(requests)  # nothing promoted: "latest" is Triton's default ("")
    assert sorted(client.rank_versions) == ["", "1"]
    assert rec.routed_versions() == ["1"]  # Triton answered "" with 1 (the A/A test below)
    generation = rec.registry.generation
    assert [len(r) for r, _ in client.rank_calls] == [1, 1]  # one packed call per version

    rec.registry.apply(ModelVersion(model="ranker", version="2", status="promoted", ts=1.0))
    rec.registry.apply(ModelVersion(model="ranker", version="3", status="refused", ts=2.0))
    client.rank_versions.clear()
    outs = await rec.recommend(requests)
    assert sorted(client.rank_versions) == ["1", "2"] == rec.routed_versions()  # never the refused 3
    assert rec.registry.generation == generation + 2
    rec.registry.apply(ModelVersion(model="ranker", version="2", status="promoted", ts=1.0))
    assert rec.registry.generation == generation + 2  # a redelivered record changes nothing
    assert {o.variant: o.model.version for o in outs} == {"control": "1", "treatment": "2"}


def aa_requests() -> list[tuple[Query, Profile]]:
    users = ["u-3", "u-1"]  # control and treatment under salt ab-1 (see above)
    return [(query(request_id=f"r-{u}", k=3).model_copy(update={"user_id": u}), buyer()) for u in users]


async def test_an_aa_test_learns_triton_s_default_version_and_sends_one_call() -> None:
    client = FakeRanker(score=lambda r: np.arange(len(r.item_texts), dtype=np.float32), version="1")
    variants = '{"control": {"share": 0.5, "version": "1"}, "treatment": 0.5}'
    rec, _, _ = make(client, variants=variants, experiment_salt="ab-1")

    def batch_calls() -> list[tuple[str, int]]:
        calls = sorted(zip(client.rank_versions, (len(r) for r, _ in client.rank_calls), strict=True))
        client.rank_versions.clear()
        client.rank_calls.clear()
        return calls

    await rec.recommend(aa_requests())  # nothing learned yet: Triton's default is asked for ("")
    assert batch_calls() == [("", 1), ("1", 1)]
    outs = await rec.recommend(aa_requests())  # it answered "" with version 1: both arms are on 1
    assert batch_calls() == [("1", 2)]
    assert rec.routed_versions() == ["1"]
    assert {o.variant: o.model.version for o in outs} == {"control": "1", "treatment": "1"}

    # Forgotten when Triton may have changed: a recovery (a restart), an error on it, a registry change.
    client.recoveries += 1
    assert rec.routed_versions() == ["", "1"]
    await rec.recommend(aa_requests())
    assert batch_calls() == [("", 1), ("1", 1)]
    client.rank_error = "triton_error"
    await rec.recommend(aa_requests())
    assert batch_calls() == [("1", 2)]
    client.rank_error = None
    assert rec.routed_versions() == ["", "1"]
    await rec.recommend(aa_requests())
    assert rec.routed_versions() == ["1"]
    client.rank_error = "triton_error"  # a failed priming call on it forgets it too
    with pytest.raises(RankerUnavailable):
        await rec.prime(RankRequest("", ["Movie 1"], np.zeros((1, 8), dtype=np.float32)), deadline=1e12)
    client.rank_error = None
    assert rec.routed_versions() == ["", "1"]
    await rec.recommend(aa_requests())
    assert rec.routed_versions() == ["1"]
    rec.registry.apply(ModelVersion(model="ranker", version="2", status="refused", ts=1.0))
    assert rec.routed_versions() == ["", "1"]


async def test_a_default_that_is_another_version_is_not_merged_and_priming_learns_it() -> None:
    client = FakeRanker(score=lambda r: np.arange(len(r.item_texts), dtype=np.float32), version="2")
    variants = '{"control": {"share": 0.5, "version": "1"}, "treatment": 0.5}'
    rec, _, _ = make(client, variants=variants, experiment_salt="ab-1")
    request = RankRequest("", ["Movie 1"], np.zeros((1, 8), dtype=np.float32))
    await rec.prime(request, deadline=1e12)
    assert sorted(client.rank_versions) == ["", "1"]
    assert rec.routed_versions() == ["1", "2"]  # Triton's default answered as 2: still two versions
    outs = await rec.recommend(aa_requests())
    assert {o.variant: o.model.version for o in outs} == {"control": "1", "treatment": "2"}


async def test_answers_log_what_the_ranker_saw() -> None:
    client = FakeRanker(score=lambda r: np.arange(len(r.item_texts), dtype=np.float32), version="4")
    rec, _, _ = make(client, explore_epsilon=1.0)
    [answer] = await rec.answer([(query(request_id="r-imp", k=4), buyer())])
    imp, out = answer.impression, answer.recommendation
    assert (imp.request_id, imp.user_id, imp.variant, imp.model.version) == (
        out.request_id,
        out.user_id,
        out.variant,
        "4",
    )
    assert [i.item_id for i in imp.items] == [i.item_id for i in out.items]
    assert [i.propensity for i in imp.items] == [i.propensity for i in out.items]
    [(ranked, _)] = client.rank_calls
    sent = {t: row for t, row in zip(ranked[0].item_texts, ranked[0].features, strict=True)}
    assert imp.context == ranked[0].query_text
    for shown in imp.items:
        assert len(shown.features) == 8
        assert any(np.allclose(shown.features, row, atol=1e-5) for row in sent.values())
