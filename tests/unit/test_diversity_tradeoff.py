"""The paired statistics of bench/diversity_tradeoff.py against hand-computed values."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from bench.diversity_tradeoff import paired_difference, relative_change


def test_paired_difference_by_hand() -> None:
    # differences 1, 0, -1, 2: mean 0.5, sample variance (0.25 + 0.25 + 2.25 + 2.25) / 3 = 5/3
    mean, se = paired_difference([1.0, 1.0, 1.0, 0.0], [2.0, 1.0, 0.0, 2.0])
    assert mean == pytest.approx(0.5)
    assert se == pytest.approx(math.sqrt(5 / 3) / 2)


def test_identical_lists_differ_by_zero_with_zero_error() -> None:
    assert paired_difference([0.3, 0.0, 1.0], [0.3, 0.0, 1.0]) == (0.0, 0.0)
    assert relative_change([0.3, 0.0, 1.0], [0.3, 0.0, 1.0]) == (0.0, 0.0)


def test_pairing_removes_the_shared_variation() -> None:
    # Widely spread per-query values, every one lowered by the same 0.01: the unpaired error would
    # be large, the paired one is 0.
    rng = np.random.default_rng(0)
    base = rng.random(200)
    mean, se = paired_difference(base, base - 0.01)
    assert mean == pytest.approx(-0.01)
    assert se == pytest.approx(0.0, abs=1e-12)


def test_relative_change_by_hand() -> None:
    # means 1.0 and 0.75: -25 %; residuals o - 0.75 b = (0, 0.5, -0.5, 0) -> var 1/6, n 4
    rel, se = relative_change([1.0, 2.0, 0.0, 1.0], [0.75, 2.0, -0.5, 0.75])
    assert rel == pytest.approx(-0.25)
    assert se == pytest.approx(math.sqrt(1 / 6) / 2)


def test_a_proportional_change_has_no_error() -> None:
    base = [0.0, 0.5, 1.0, 0.2]
    rel, se = relative_change(base, [0.9 * b for b in base])
    assert rel == pytest.approx(-0.1)
    assert se == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("fn", [paired_difference, relative_change])
def test_unpaired_or_empty_input_is_refused(fn: Callable[..., tuple[float, float]]) -> None:
    with pytest.raises(ValueError, match="paired"):
        fn([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="paired"):
        fn([], [])


def test_relative_change_of_a_zero_base_is_refused() -> None:
    with pytest.raises(ValueError, match="undefined"):
        relative_change([0.0, 0.0], [0.1, 0.0])


def test_single_pair_has_zero_error() -> None:
    assert paired_difference([1.0], [0.5]) == (-0.5, 0.0)
    assert relative_change([1.0], [0.5]) == (-0.5, 0.0)
