"""Confidence intervals for accuracies and their changes (pure Python floats, no dependencies).

* Wilson score interval for one proportion (good coverage at small n and near 0 or 1).
* Newcombe's interval for a difference of two proportions measured on the SAME questions
  (Newcombe 1998, "Improved confidence intervals for the difference between binomial proportions
  based on paired data", method 10): it combines the two Wilson intervals and corrects for the
  correlation of the paired outcomes, estimated as the paper defines it (a positive ``ad - bc`` is
  reduced by n/2), so the interval keeps a width when no pair is discordant. With the correlation
  set to 0 it is Newcombe's hybrid score interval for independent samples.

Both are closed forms, so ``scipy.stats.bootstrap`` has no place here (the tests compare them with
float64 recomputations and scipy's own Wilson interval). The one bootstrap of the package, the
audits' recovery ratio (``rmu_lens.audit.recovery_stats``), keeps its own resampling: draws in which
nothing was removed leave the ratio undefined and are dropped and counted, whereas
``scipy.stats.bootstrap`` returns a NaN interval as soon as one draw's statistic is NaN. Its test
checks it against ``scipy.stats.bootstrap(paired=True, method="percentile")`` where no draw is undefined.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z_95 = 1.959963984540054  # standard normal quantile at 0.975


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of ``successes / n``; ``(0, 1)`` when ``n`` is 0."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"wilson_interval needs 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class PairedCounts:
    """Outcomes of the same questions under two models (base, new)."""

    both: int  # right under both
    base_only: int  # right under base, wrong under new
    new_only: int  # wrong under base, right under new
    neither: int

    @property
    def n(self) -> int:
        return self.both + self.base_only + self.new_only + self.neither

    @classmethod
    def from_outcomes(cls, base: list[bool], new: list[bool]) -> PairedCounts:
        if len(base) != len(new):
            raise ValueError(f"paired outcomes need equal lengths, got {len(base)} and {len(new)}")
        pairs = list(zip(base, new))
        return cls(
            both=sum(b and n for b, n in pairs),
            base_only=sum(b and not n for b, n in pairs),
            new_only=sum(n and not b for b, n in pairs),
            neither=sum(not b and not n for b, n in pairs),
        )


def _paired_correlation(a: int, b: int, c: int, d: int) -> float:
    """Newcombe's phi for method 10: the 2x2 correlation with ``ad - bc`` shrunk by n/2 when positive.

    Without the shrinkage a table with no discordant pair (b = c = 0, a and d > 0) has phi = 1 and
    the interval collapses to a single point however few questions there are.
    """
    n = a + b + c + d
    marginals = (a + b) * (c + d) * (a + c) * (b + d)
    if not marginals:
        return 0.0
    excess = a * d - b * c
    if excess > n / 2:
        excess -= n / 2
    elif excess > 0:
        excess = 0.0
    return excess / math.sqrt(marginals)


def paired_difference_interval(counts: PairedCounts, z: float = Z_95) -> tuple[float, float, float]:
    """(delta, low, high) for accuracy(new) - accuracy(base) on paired questions (Newcombe method 10)."""
    a, b, c, d, n = counts.both, counts.base_only, counts.new_only, counts.neither, counts.n
    if n == 0:
        return 0.0, -1.0, 1.0
    p_base, p_new = (a + b) / n, (a + c) / n
    low_base, high_base = wilson_interval(a + b, n, z)
    low_new, high_new = wilson_interval(a + c, n, z)
    phi = _paired_correlation(a, b, c, d)
    delta = p_new - p_base
    below = math.sqrt(max(0.0, (p_new - low_new) ** 2 - 2 * phi * (p_new - low_new) * (high_base - p_base) + (high_base - p_base) ** 2))
    above = math.sqrt(max(0.0, (high_new - p_new) ** 2 - 2 * phi * (high_new - p_new) * (p_base - low_base) + (p_base - low_base) ** 2))
    return delta, max(-1.0, delta - below), min(1.0, delta + above)
