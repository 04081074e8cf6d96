"""Intervals: Wilson against scipy and a float64 closed form; Newcombe's paired interval against the paper's formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest, norm

from rmu_lens.eval.stats import Z_95, PairedCounts, paired_difference_interval, wilson_interval


def wilson_float64(k: int, n: int) -> tuple[float, float]:
    """Wilson's interval as the roots of (p - k/n)^2 = z^2 p (1 - p) / n, solved in float64."""
    z = np.float64(norm.ppf(0.975))
    k, n = np.float64(k), np.float64(n)
    # (1 + z^2/n) p^2 - (2k/n + z^2/n) p + (k/n)^2 = 0
    a = 1 + z * z / n
    b = -(2 * k / n + z * z / n)
    c = (k / n) ** 2
    root = np.sqrt(b * b - 4 * a * c)
    return float((-b - root) / (2 * a)), float((-b + root) / (2 * a))


@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (0, 16), (5, 10), (7, 16), (16, 16), (123, 408), (1273, 1273)])
def test_wilson_interval_equals_float64_closed_form(k, n):
    low, high = wilson_interval(k, n)
    expected_low, expected_high = wilson_float64(k, n)
    assert low == pytest.approx(expected_low, abs=1e-12)
    assert high == pytest.approx(expected_high, abs=1e-12)


@pytest.mark.parametrize("k,n", [(3, 20), (10, 10), (250, 1000)])
def test_wilson_interval_equals_scipy(k, n):
    reference = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(k, n) == pytest.approx((reference.low, reference.high), abs=1e-12)


def test_z_is_the_normal_975_quantile():
    assert Z_95 == pytest.approx(norm.ppf(0.975), abs=1e-15)


def test_wilson_rejects_impossible_counts():
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


def newcombe_paired_reference(a: int, b: int, c: int, d: int) -> tuple[float, float, float]:
    """Newcombe (1998) method 10 for theta = p1 - p2, p1 = (a+b)/n, p2 = (a+c)/n, written from the paper."""
    n = a + b + c + d
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson_float64(a + b, n)
    l2, u2 = wilson_float64(a + c, n)
    e, f, g, h = a + b, c + d, a + c, b + d
    # the paper's phi: a positive ad - bc is reduced by n/2 (to no less than 0)
    excess = a * d - b * c
    excess = max(excess - n / 2, 0.0) if excess > 0 else excess
    phi = 0.0 if e * f * g * h == 0 else excess / math.sqrt(e * f * g * h)
    theta = p1 - p2
    # at phi = 1 the radicands are squares that rounding can push a hair below 0
    delta = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    epsilon = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return theta, theta - delta, theta + epsilon


@pytest.mark.parametrize("both,base_only,new_only,neither", [(10, 15, 5, 20), (40, 2, 3, 5), (0, 12, 0, 4), (8, 0, 0, 8), (30, 1, 9, 10)])
def test_paired_interval_equals_newcombe_method_10(both, base_only, new_only, neither):
    counts = PairedCounts(both, base_only, new_only, neither)
    # rmu_lens reports new - base; the reference's p1 is then the "new" accuracy: (both + new_only) / n
    expected = newcombe_paired_reference(both, new_only, base_only, neither)
    assert paired_difference_interval(counts) == pytest.approx(expected, abs=1e-12)


def test_uncorrelated_pairs_give_newcombe_hybrid_interval_for_independent_samples():
    counts = PairedCounts(both=4, base_only=2, new_only=6, neither=3)  # a*d == b*c, so phi = 0
    n = counts.n
    p_new, p_base = 10 / n, 6 / n
    new_low, new_high = wilson_float64(10, n)
    base_low, base_high = wilson_float64(6, n)
    low = p_new - p_base - math.hypot(p_new - new_low, base_high - p_base)
    high = p_new - p_base + math.hypot(new_high - p_new, p_base - base_low)
    assert paired_difference_interval(counts) == pytest.approx((p_new - p_base, low, high), abs=1e-12)


def test_paired_counts_from_outcomes():
    counts = PairedCounts.from_outcomes([True, True, False, False, True], [True, False, True, False, False])
    assert counts == PairedCounts(both=1, base_only=2, new_only=1, neither=1)
