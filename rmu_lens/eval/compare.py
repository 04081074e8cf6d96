"""Compare two evaluations of the same questions: per-subject accuracy change with 95% intervals.

Questions are paired by id, so each interval is Newcombe's interval for a difference of paired
proportions (see stats.py). Subjects named as forget targets are flagged ``forget``; every other
subject is ``collateral`` (what the unlearning should have left alone). Two pooled rows summarise
each group. Cloze comparisons carry the other metric (``acc_norm`` beside ``acc``) so the two can be
read side by side, and :func:`chance_flag` marks a forget set scored reliably *below* chance: that is
a sign the model keys on the answers' form (length, wording), not a sign of unlearning.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rmu_lens.eval.results import EvalResult, accuracy_summary, format_table
from rmu_lens.eval.stats import PairedCounts, paired_difference_interval, wilson_interval

COMPARISON_FORMAT = "rmu_lens.comparison/1"
BELOW_CHANCE = "below chance: check answer-format bias"
"""The note for a forget set whose 95% interval lies entirely below chance (1 / number of choices)."""
OTHER_METRIC = {"acc": "acc_norm", "acc_norm": "acc"}


def chance_level(records: Sequence[dict[str, Any]]) -> float:
    """Expected accuracy of a uniform guess: the mean of 1 / (number of choices) over the records."""
    if not records:
        raise ValueError("no records: chance is undefined for an empty evaluation")
    return sum(1 / len(r["loglikelihoods"]) for r in records) / len(records)


def below_chance(successes: int, n: int, chance: float) -> bool:
    """True when the 95% Wilson interval of ``successes / n`` lies entirely below ``chance``."""
    return n > 0 and wilson_interval(successes, n)[1] < chance


def chance_flag(
    result: EvalResult | str | os.PathLike, subjects: Sequence[str] | None = None, *, metric: str = "acc"
) -> str | None:
    """:data:`BELOW_CHANCE` when ``result`` (its ``subjects`` only, if given) scores reliably below chance, else None.

    Call it on the unlearned model's evaluation of each forget set: accuracy *below* chance is not
    forgetting (a model that knew nothing would score chance) but a preference for some answer form.
    """
    evaluation = _as_result(result)
    outcomes = evaluation.outcomes(metric)
    records = evaluation.records
    if subjects is not None:
        wanted = {_normal(s) for s in subjects}
        records = [r for r in records if _normal(r["subject"]) in wanted or _normal(r["task"]) in wanted]
        if not records:
            raise ValueError(f"no records of subjects {list(subjects)}; subjects: {sorted({r['subject'] for r in evaluation.records})}")
    correct = sum(outcomes[r["id"]] for r in records)
    return BELOW_CHANCE if below_chance(correct, len(records), chance_level(records)) else None


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
    other_metric: str | None = None
    """Cloze only: the other metric (``acc_norm`` for ``acc`` and back), whose accuracies follow."""
    base_other: float | None = None
    new_other: float | None = None
    note: str | None = None
    """Forget rows: :data:`BELOW_CHANCE` when the new accuracy's 95% interval lies below chance."""

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

    @property
    def other_metric(self) -> str | None:
        """The metric shown beside :attr:`metric` (cloze comparisons), else None."""
        return next((r.other_metric for r in self.rows + self.pooled if r.other_metric), None)

    def _headers(self) -> list[str]:
        other = self.other_metric
        extra = [f"base {other}", f"new {other}"] if other else []
        return ["subject", "role", "n", "base", "new", "change", "95% CI", "", *extra, "note"]

    def _cells(self, r: SubjectChange) -> list[str]:
        extra = [f"{r.base_other:.3f}", f"{r.new_other:.3f}"] if self.other_metric else []
        return [r.subject, r.role, str(r.n), f"{r.base_acc:.3f}", f"{r.new_acc:.3f}", f"{r.delta:+.3f}",
                f"[{r.ci_low:+.3f}, {r.ci_high:+.3f}]", "*" if r.significant else "", *extra, r.note or ""]

    def table(self) -> str:
        lines = [self._cells(r) for r in self.rows + self.pooled]
        note = f"{self.metric}; change = new - base; * = 95% interval excludes 0 (Newcombe, paired by question)"
        if any(r.note for r in self.rows + self.pooled):
            note += f"; {BELOW_CHANCE}: the new accuracy's 95% interval lies below chance"
        return format_table(self._headers(), lines) + "\n" + note

    def _repr_html_(self) -> str:
        """Notebook summary: per-subject change, drops in red and gains in green when the interval excludes 0."""
        from rmu_lens._templates import macro

        rows = [(("#c0392b" if r.delta < 0 else "#1e8449") if r.significant else "inherit", self._cells(r))
                for r in self.rows + self.pooled]
        return macro("widgets.html", "comparison", self.metric, self._headers(), rows).strip()


def _normal(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def _as_result(value: EvalResult | str | os.PathLike) -> EvalResult:
    return value if isinstance(value, EvalResult) else EvalResult.load(value)


def _change(
    subject: str, role: str, base: list[bool], new: list[bool], *,
    other: tuple[str, list[bool], list[bool]] | None = None, chance: float | None = None,
) -> SubjectChange:
    """One row; ``other`` is (metric, base, new) outcomes of the second metric; ``chance`` flags a forget row."""
    counts = PairedCounts.from_outcomes(base, new)
    delta, low, high = paired_difference_interval(counts)
    n = counts.n
    extra: dict[str, Any] = {}
    if other is not None:
        name, base_other, new_other = other
        extra = {"other_metric": name, "base_other": accuracy_summary(base_other)["acc"], "new_other": accuracy_summary(new_other)["acc"]}
    if chance is not None and below_chance(sum(new), n, chance):
        extra["note"] = BELOW_CHANCE
    return SubjectChange(subject, role, n, sum(base) / n, sum(new) / n, delta, low, high, **extra)


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

    other_metric = OTHER_METRIC[metric] if base_result.mode == "cloze" else None
    if other_metric:
        base_other, new_other = base_result.outcomes(other_metric), new_result.outcomes(other_metric)
    new_records = {r["id"]: r for r in new_result.records}

    def row(subject: str, row_role: str, ids: list[str], forget: bool) -> SubjectChange:
        other = (other_metric, [base_other[i] for i in ids], [new_other[i] for i in ids]) if other_metric else None
        chance = chance_level([new_records[i] for i in ids]) if forget else None
        return _change(subject, row_role, [base_outcomes[i] for i in ids], [new_outcomes[i] for i in ids], other=other, chance=chance)

    rows = [row(subject, role(subject), ids, role(subject) == "forget") for subject, ids in groups.items()]
    rows.sort(key=lambda r: (r.delta, r.subject))
    pooled = []
    for name in ("forget", "collateral"):
        ids = [i for subject, members in groups.items() if role(subject) == name for i in members]
        if ids and wanted:
            pooled.append(row(f"all {name}", "pooled", ids, name == "forget"))
    pooled.append(row("overall", "pooled", shared, False))
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
