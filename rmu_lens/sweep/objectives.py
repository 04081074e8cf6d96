"""The sweep's two objectives and its Pareto front.

- ``forget_excess`` (minimize) = max(forget accuracy − chance, 0): what matters is the distance to
  chance, and accuracy below chance is no better than chance (a model that avoids the right answer
  still knows it), so every trial at or below chance ties at 0.
- ``retain_acc`` (maximize): accuracy on a distant question set (unrelated subjects).

The adjacent set's accuracy, the raw forget accuracy and the training signals are recorded as user
attributes of each trial, not optimized.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

OBJECTIVES = ("forget_excess", "retain_acc")
DIRECTIONS = ("minimize", "maximize")
DEFAULT_QUESTIONS = {
    "forget": ["bundled:virology:dev", "bundled:cybersecurity:dev"],
    "retain": ["bundled:mathematics:dev"],  # a domain neither the forget nor the retain corpus covers
    "adjacent": ["bundled:biology:dev"],
}
"""The command's question sets: dev splits, so the test splits stay unseen by the search."""


def chance_level(questions: Sequence[Any]) -> float:
    """Expected accuracy of uniform guessing: the mean of 1 / (number of choices)."""
    return sum(1.0 / len(q.choices) for q in questions) / len(questions)


def forget_excess(forget_acc: float, chance: float) -> float:
    """Forget accuracy above chance, floored at 0."""
    return max(forget_acc - chance, 0.0)


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str] = DIRECTIONS) -> bool:
    """Whether ``a`` is at least as good as ``b`` in every objective and better in one."""
    signs = [1.0 if d == "minimize" else -1.0 for d in directions]
    at_least = all(s * x <= s * y for s, x, y in zip(signs, a, b))
    better = any(s * x < s * y for s, x, y in zip(signs, a, b))
    return at_least and better


def pareto_front(values: Sequence[Sequence[float]], directions: Sequence[str] = DIRECTIONS) -> list[int]:
    """Indices of the points no other point dominates (ties are all kept), in input order."""
    return [i for i, v in enumerate(values) if not any(dominates(w, v, directions) for j, w in enumerate(values) if j != i)]
