"""Recovery statistics: the ratio, the paired bootstrap interval, and the removed≈0 guard."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy.stats import bootstrap

from rmu_lens.audit.recovery_stats import Recovery, recovery


def outcomes(correct: list[bool]) -> dict[str, bool]:
    return {f"q{i}": c for i, c in enumerate(correct)}


def planted(n: int = 200, base: float = 0.9, unlearned: float = 0.3, audited: float = 0.6, seed: int = 0):
    rng = random.Random(seed)
    rows = [(rng.random() < base, rng.random() < unlearned, rng.random() < audited) for _ in range(n)]
    return tuple(outcomes([r[k] for r in rows]) for k in range(3))


def test_recovery_is_the_share_of_removed_accuracy_brought_back():
    base, unlearned, audited = planted()
    acc = [sum(o.values()) / len(o) for o in (base, unlearned, audited)]
    result = recovery(base, unlearned, audited)
    assert result.base_acc == pytest.approx(acc[0]) and result.unlearned_acc == pytest.approx(acc[1])
    assert result.recovery == pytest.approx((acc[2] - acc[1]) / (acc[0] - acc[1]))
    assert result.ci_low < result.recovery < result.ci_high
    assert result.n == 200


def test_paired_bootstrap_gives_a_point_interval_when_the_audit_restores_every_answer():
    # An unpaired bootstrap would give a wide interval here; resampling questions jointly gives exactly 1.
    base, unlearned, _ = planted()
    result = recovery(base, unlearned, dict(base))
    assert result.recovery == 1.0 and result.ci_low == 1.0 and result.ci_high == 1.0


def test_an_audit_that_changes_nothing_recovers_exactly_zero():
    base, unlearned, _ = planted()
    result = recovery(base, unlearned, dict(unlearned))
    assert (result.recovery, result.ci_low, result.ci_high) == (0.0, 0.0, 0.0)


def test_interval_matches_a_plain_python_bootstrap():
    base, unlearned, audited = planted(n=60, seed=3)
    ids = sorted(base)
    result = recovery(base, unlearned, audited, n_bootstrap=4000, seed=1)
    rng = random.Random(7)
    ratios = []
    for _ in range(4000):
        sample = [rng.choice(ids) for _ in ids]
        b, u, a = (sum(o[i] for i in sample) / len(sample) for o in (base, unlearned, audited))
        if b - u > 0:
            ratios.append((a - u) / (b - u))
    ratios.sort()
    low, high = ratios[int(0.025 * len(ratios))], ratios[int(0.975 * len(ratios))]
    assert result.ci_low == pytest.approx(low, abs=0.06) and result.ci_high == pytest.approx(high, abs=0.06)


def _recovery_ratio(base, unlearned, audited, axis=-1):
    b, u, a = base.mean(axis), unlearned.mean(axis), audited.mean(axis)
    return (a - u) / (b - u)


def test_interval_is_scipys_95_percent_paired_bootstrap():
    # scipy.stats.bootstrap(paired=True, method="percentile") is the reference. With 20,000 draws the
    # bounds move < 0.004 between seeds, while a 90% interval's bounds sit ~0.02 inside the 95% ones:
    # the tolerance below separates the two levels.
    base, unlearned, audited = planted(n=200, seed=3)
    ids = sorted(base)
    columns = tuple(np.array([o[i] for i in ids], dtype=float) for o in (base, unlearned, audited))
    result = recovery(base, unlearned, audited, n_bootstrap=20000, seed=1)
    intervals = {
        level: bootstrap(columns, _recovery_ratio, paired=True, vectorized=True, method="percentile",
                         confidence_level=level, n_resamples=20000, random_state=0).confidence_interval
        for level in (0.90, 0.95)
    }
    assert intervals[0.95].low < intervals[0.90].low - 0.012 and intervals[0.90].high < intervals[0.95].high - 0.012
    assert result.ci_low == pytest.approx(intervals[0.95].low, abs=0.006)
    assert result.ci_high == pytest.approx(intervals[0.95].high, abs=0.006)


def test_raw_recovery_is_kept_and_only_display_is_clamped():
    base = outcomes([True] * 5 + [False] * 5)
    unlearned = outcomes([False] * 10)
    audited = outcomes([True] * 10)  # more than the base knew
    result = recovery(base, unlearned, audited)
    assert result.recovery == pytest.approx(2.0)
    assert result.clamped == 1.0
    assert result.describe().startswith("100%")


def test_nothing_removed_gives_nan_and_a_message_saying_why():
    base, _, audited = planted()
    result = recovery(base, dict(base), audited)
    assert math.isnan(result.recovery) and math.isnan(result.ci_low)
    assert "removed" in result.note and "n/a" in result.describe()


def test_outcomes_over_different_questions_are_refused():
    base, unlearned, audited = planted()
    audited.pop("q0")
    with pytest.raises(ValueError, match="same forget questions"):
        recovery(base, unlearned, audited)


def test_recovery_round_trips_through_a_dict():
    result = recovery(*planted())
    again = Recovery.from_dict(result.to_dict())
    assert again == result and result.to_dict()["removed"] == pytest.approx(result.removed)
