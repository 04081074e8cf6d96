"""The report's headline: accuracy per role before → after, and the layer-l signatures of RMU.

Every number is recomputed here from per-question records and step records, so the headline
can be checked against the JSON files it came from. Cloze evaluations carry the other metric
(``acc_norm`` beside ``acc``), and a forget role scored reliably below chance carries the note
``below chance: check answer-format bias`` (see :func:`rmu_lens.eval.compare.chance_flag`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rmu_lens.eval.compare import BELOW_CHANCE, OTHER_METRIC, below_chance, chance_level
from rmu_lens.eval.results import EvalResult, accuracy_summary

ROLES = ("forget", "adjacent", "distant")
ROLE_LABELS = {
    "forget": "forget (should fall to chance)",
    "adjacent": "adjacent (collateral damage)",
    "distant": "retain / distant (should stay)",
}
SIGNATURE_TAIL = 5
"""Training signatures average the last this-many steps of each topic (single steps are noisy)."""


@dataclass
class RoleAccuracy:
    """Pooled accuracy of the subjects of one role, before and after RMU, with Wilson intervals."""

    role: str
    subjects: list[str]
    n: int
    base_acc: float
    base_ci: tuple[float, float]
    unlearned_acc: float
    unlearned_ci: tuple[float, float]
    other_metric: str | None = None
    """Cloze only: the other metric (``acc_norm`` for ``acc`` and back), whose accuracies follow."""
    base_other: float | None = None
    unlearned_other: float | None = None
    chance: float | None = None
    """Expected accuracy of a uniform guess over these questions (1 / number of choices)."""
    note: str | None = None
    """Forget role: ``below chance: check answer-format bias`` when the unlearned interval lies below chance."""

    @property
    def change(self) -> float:
        return self.unlearned_acc - self.base_acc


@dataclass
class Headline:
    """What the report opens with; ``to_dict`` is what summary.json stores."""

    metric: str
    accuracy: list[RoleAccuracy] = field(default_factory=list)
    training: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per forget topic: c, forget norm first → last, retain norm, cos(updated, frozen) forget / retain."""
    representations: dict[str, Any] = field(default_factory=dict)
    """The analysis's own headline (``Analysis.summary()``), when an analysis ran."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "accuracy": {
                row.role: {**asdict(row), "base_ci": list(row.base_ci), "unlearned_ci": list(row.unlearned_ci), "change": row.change}
                for row in self.accuracy
            },
            "training": self.training,
            "representations": self.representations,
        }


def roles_by_subject(roles: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """``{"forget": [subjects], ...}`` turned into ``{subject: role}``; a subject in two roles is an error."""
    out: dict[str, str] = {}
    for role, subjects in roles.items():
        for subject in subjects:
            if subject in out and out[subject] != role:
                raise ValueError(f"subject {subject!r} is given two roles, {out[subject]!r} and {role!r}: give each subject one role")
            out[subject] = role
    return out


def role_accuracy(
    base: EvalResult, unlearned: EvalResult, subject_roles: Mapping[str, str], metric: str = "acc"
) -> list[RoleAccuracy]:
    """Pooled accuracy per role over the questions both results share (paired by id)."""
    key = "correct" if metric == "acc" else "correct_norm"
    other = OTHER_METRIC[metric] if base.mode == unlearned.mode == "cloze" else None
    other_key = {"acc": "correct", "acc_norm": "correct_norm"}.get(other or "")
    after = {r["id"]: r for r in unlearned.records}
    unknown = sorted(set(subject_roles) - {r["subject"] for r in base.records})
    if unknown:
        raise ValueError(f"roles name subjects {unknown} that are not in the base evaluation; subjects: {sorted({r['subject'] for r in base.records})}")
    rows = []
    ordered = [r for r in ROLES if r in subject_roles.values()] + sorted(set(subject_roles.values()) - set(ROLES))
    for role in ordered:
        subjects = sorted(s for s, r in subject_roles.items() if r == role)
        shared = [r for r in base.records if r["subject"] in subjects and r["id"] in after]
        if not shared:
            continue
        paired = [(r[key], after[r["id"]][key]) for r in shared]
        before_summary = accuracy_summary(b for b, _ in paired)
        after_summary = accuracy_summary(a for _, a in paired)
        chance = chance_level([after[r["id"]] for r in shared])
        extra: dict[str, Any] = {}
        if other_key:
            extra = {"other_metric": other,
                     "base_other": accuracy_summary(r[other_key] for r in shared)["acc"],
                     "unlearned_other": accuracy_summary(after[r["id"]][other_key] for r in shared)["acc"]}
        if role == "forget" and below_chance(sum(a for _, a in paired), len(paired), chance):
            extra["note"] = BELOW_CHANCE
        rows.append(RoleAccuracy(
            role=role, subjects=subjects, n=len(paired),
            base_acc=before_summary["acc"], base_ci=(before_summary["ci_low"], before_summary["ci_high"]),
            unlearned_acc=after_summary["acc"], unlearned_ci=(after_summary["ci_low"], after_summary["ci_high"]),
            chance=chance, **extra,
        ))
    return rows


def training_signatures(history: Sequence[Mapping[str, Any]], tail: int = SIGNATURE_TAIL) -> dict[str, dict[str, float]]:
    """Per topic: c, the forget norm at the first step and over the last ``tail`` steps, retain norm and cosines."""
    signatures: dict[str, dict[str, float]] = {}
    for topic in dict.fromkeys(h["topic"] for h in history):
        steps = [h for h in history if h["topic"] == topic]
        last = steps[-tail:]

        def mean(key: str, rows: Sequence[Mapping[str, Any]] = last) -> float:
            values = [float(r[key]) for r in rows if r.get(key) is not None]
            return sum(values) / len(values) if values else float("nan")

        signatures[topic] = {
            "steering_coeff": float(steps[0].get("steering_coeff", float("nan"))),
            "forget_norm_start": float(steps[0]["forget_norm"]),
            "forget_norm_end": mean("forget_norm"),
            "retain_norm_end": mean("retain_norm"),
            "forget_cos_end": mean("forget_cos"),
            "retain_cos_end": mean("retain_cos"),
            "steps": len(steps),
            "tail": len(last),
        }
    return signatures


def build_headline(
    base: EvalResult | None = None,
    unlearned: EvalResult | None = None,
    subject_roles: Mapping[str, str] | None = None,
    *,
    history: Sequence[Mapping[str, Any]] | None = None,
    representations: Mapping[str, Any] | None = None,
    metric: str = "acc",
) -> Headline:
    """Assemble the headline from whatever is available (evaluations, a run's history, an analysis summary)."""
    headline = Headline(metric=metric)
    if (base is None) != (unlearned is None):
        raise ValueError("give both base and unlearned evaluations, or neither")
    if base is not None and unlearned is not None:
        headline.accuracy = role_accuracy(base, unlearned, subject_roles or {}, metric)
    if history:
        headline.training = training_signatures(history)
    if representations:
        headline.representations = dict(representations)
    return headline
