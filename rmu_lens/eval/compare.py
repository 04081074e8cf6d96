"""Compare two evaluations of the same questions: per-subject accuracy change with 95% intervals.

Questions are paired by id, so each interval is Newcombe's interval for a difference of paired
proportions (see stats.py). Subjects named as forget targets are flagged ``forget``; every other
subject is ``collateral`` (what the unlearning should have left alone). Two pooled rows summarise
each group.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rmu_lens.eval.results import EvalResult, format_table
from rmu_lens.eval.stats import PairedCounts, paired_difference_interval

COMPARISON_FORMAT = "rmu_lens.comparison/1"


@dataclass(frozen=True)
class SubjectChange:
    """Accuracy of one subject (or pooled group) before and after, and the change with its interval."""

    subject: str
    role: str  # "forget", "collateral", or "pooled"
    n: int
    base_acc: float
    new_acc: float
    delta: float
    ci_low: float
    ci_high: float

    @property
    def significant(self) -> bool:
        """True when the 95% interval of the change excludes 0."""
        return self.ci_low > 0 or self.ci_high < 0

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "significant": self.significant}


@dataclass
class Comparison:
    """Per-subject changes, sorted from the largest drop to the largest gain, plus pooled rows."""

    metric: str
    rows: list[SubjectChange]
    pooled: list[SubjectChange]
    meta: dict[str, Any] = field(default_factory=dict)

    def by_subject(self) -> dict[str, dict[str, Any]]:
        return {row.subject: row.to_dict() for row in self.rows}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": COMPARISON_FORMAT,
            "metric": self.metric,
            "meta": self.meta,
            "subjects": [row.to_dict() for row in self.rows],
            "pooled": [row.to_dict() for row in self.pooled],
        }

    def save(self, path: str | os.PathLike) -> Path:
        from rmu_lens._io import atomic_write_json

        return atomic_write_json(path, self.to_dict())

    def table(self) -> str:
        headers = ["subject", "role", "n", "base", "new", "change", "95% CI", ""]
        lines = [
            [r.subject, r.role, str(r.n), f"{r.base_acc:.3f}", f"{r.new_acc:.3f}", f"{r.delta:+.3f}",
             f"[{r.ci_low:+.3f}, {r.ci_high:+.3f}]", "*" if r.significant else ""]
            for r in self.rows + self.pooled
        ]
        note = f"{self.metric}; change = new - base; * = 95% interval excludes 0 (Newcombe, paired by question)"
        return format_table(headers, lines) + "\n" + note

    def _repr_html_(self) -> str:
        """Notebook summary: per-subject change, drops in red and gains in green when the interval excludes 0."""
        from rmu_lens._templates import macro

        return macro("widgets.html", "comparison", self.metric, self.rows + self.pooled).strip()


def _normal(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def _as_result(value: EvalResult | str | os.PathLike) -> EvalResult:
    return value if isinstance(value, EvalResult) else EvalResult.load(value)


def _change(subject: str, role: str, base: list[bool], new: list[bool]) -> SubjectChange:
    counts = PairedCounts.from_outcomes(base, new)
    delta, low, high = paired_difference_interval(counts)
    n = counts.n
    return SubjectChange(subject, role, n, sum(base) / n, sum(new) / n, delta, low, high)


def compare(
    base: EvalResult | str | os.PathLike,
    new: EvalResult | str | os.PathLike,
    forget_subjects: Sequence[str] | None = None,
    *,
    metric: str = "acc",
) -> Comparison:
    """Per-subject change from ``base`` to ``new`` (results or their JSON files), paired by question id.

    ``forget_subjects`` names the forget targets (subjects or tasks; case, spaces, ``-`` and ``_``
    are ignored); the rest is collateral. ``metric`` is ``acc`` or, for cloze results, ``acc_norm``.
    """
    base_result, new_result = _as_result(base), _as_result(new)
    if base_result.mode != new_result.mode:
        raise ValueError(f"Cannot compare a {base_result.mode}-mode result with a {new_result.mode}-mode one: evaluate both in one mode")
    base_outcomes, new_outcomes = base_result.outcomes(metric), new_result.outcomes(metric)
    shared = [i for i in base_outcomes if i in new_outcomes]
    if not shared:
        raise ValueError("The two results share no question ids: evaluate both models on the same question set")
    records = {r["id"]: r for r in base_result.records}
    groups: dict[str, list[str]] = {}
    for question_id in shared:
        groups.setdefault(records[question_id]["subject"], []).append(question_id)

    wanted = {_normal(s) for s in forget_subjects or []}
    tasks = {subject: {_normal(records[i]["task"]) for i in ids} for subject, ids in groups.items()}
    known = {_normal(s) for s in groups} | set().union(*tasks.values())
    unknown = sorted(wanted - known)
    if unknown:
        raise ValueError(f"forget subject(s) {unknown} are not in the results; subjects: {sorted(groups)}")

    def role(subject: str) -> str:
        return "forget" if _normal(subject) in wanted or tasks[subject] & wanted else "collateral"

    rows = [
        _change(subject, role(subject), [base_outcomes[i] for i in ids], [new_outcomes[i] for i in ids])
        for subject, ids in groups.items()
    ]
    rows.sort(key=lambda r: (r.delta, r.subject))
    pooled = []
    for name in ("forget", "collateral"):
        ids = [i for subject, members in groups.items() if role(subject) == name for i in members]
        if ids and wanted:
            pooled.append(_change(f"all {name}", "pooled", [base_outcomes[i] for i in ids], [new_outcomes[i] for i in ids]))
    pooled.append(_change("overall", "pooled", [base_outcomes[i] for i in shared], [new_outcomes[i] for i in shared]))
    meta = {
        "base_model": base_result.meta.get("model"),
        "new_model": new_result.meta.get("model"),
        "mode": base_result.mode,
        "n_paired": len(shared),
        "only_in_base": len(base_outcomes) - len(shared),
        "only_in_new": len(new_outcomes) - len(shared),
        "forget_subjects": list(forget_subjects or []),
    }
    return Comparison(metric=metric, rows=rows, pooled=pooled, meta=meta)
