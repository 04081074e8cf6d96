"""Honest chance: a forget set scored reliably below chance is flagged, and cloze tables carry acc_norm too.

The reference interval is a plain float64 Wilson score interval written out here; results are
built by hand in the documented record layout.
"""

from __future__ import annotations

import math

import pytest

from rmu_lens.eval import EvalResult, compare
from rmu_lens.eval.compare import BELOW_CHANCE, chance_flag
from rmu_lens.report.headline import role_accuracy


def wilson_upper(k: int, n: int, z: float = 1.959963984540054) -> float:
    p = k / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre + spread) / (1 + z * z / n)


def result(subject_outcomes: dict[str, list[tuple[bool, bool]]], n_choices: int = 4, tag: str = "") -> EvalResult:
    """A cloze result; per subject a list of (correct under acc, correct under acc_norm)."""
    records = []
    for subject, outcomes in subject_outcomes.items():
        for i, (acc, norm) in enumerate(outcomes):
            wrong = [-2.0] * n_choices
            records.append({
                "id": f"{subject}/{i}", "task": "t", "subject": subject, "answer": 0,
                "loglikelihoods": ([-1.0] + wrong[1:]) if acc else ([-3.0, -1.0] + wrong[2:]),
                "prediction": 0 if acc else 1, "correct": acc, "pred_norm": 0 if norm else 1, "correct_norm": norm,
            })
    return EvalResult(mode="cloze", records=records, meta={"model": tag})


def outcomes(n: int, k: int, k_norm: int | None = None) -> list[tuple[bool, bool]]:
    k_norm = k if k_norm is None else k_norm
    return [(i < k, i < k_norm) for i in range(n)]


def threshold(n: int, chance: float) -> int:
    """Largest k whose reference interval still lies wholly below chance."""
    return max(k for k in range(n + 1) if wilson_upper(k, n) < chance)


@pytest.mark.parametrize("n, n_choices", [(200, 4), (107, 4), (120, 3)])
def test_flag_turns_on_exactly_where_the_interval_leaves_chance(n, n_choices):
    chance = 1 / n_choices
    k = threshold(n, chance)
    assert chance_flag(result({"virology": outcomes(n, k)}, n_choices)) == BELOW_CHANCE
    assert chance_flag(result({"virology": outcomes(n, k + 1)}, n_choices)) is None
    assert chance_flag(result({"virology": outcomes(n, round(n * chance))}, n_choices)) is None


def test_flag_reads_the_chosen_metric_and_subjects():
    evaluation = result({"virology": outcomes(200, 10, 150), "history": outcomes(200, 190)})
    assert chance_flag(evaluation, ["virology"]) == BELOW_CHANCE
    assert chance_flag(evaluation, ["virology"], metric="acc_norm") is None
    assert chance_flag(evaluation, ["history"]) is None
    with pytest.raises(ValueError, match="no records of subjects"):
        chance_flag(evaluation, ["geography"])


def test_comparison_shows_acc_norm_beside_acc_and_notes_the_forget_row():
    base = result({"virology": outcomes(200, 150, 160), "history": outcomes(200, 160, 150)}, tag="base")
    new = result({"virology": outcomes(200, 10, 60), "history": outcomes(200, 10, 140)}, tag="new")
    comparison = compare(base, new, forget_subjects=["virology"])
    rows = {r.subject: r for r in comparison.rows + comparison.pooled}
    assert rows["virology"].other_metric == "acc_norm"
    assert (rows["virology"].base_other, rows["virology"].new_other) == pytest.approx((0.80, 0.30))
    assert rows["virology"].note == BELOW_CHANCE and rows["all forget"].note == BELOW_CHANCE
    assert rows["history"].note is None, "a collateral set below chance is damage, not a forget-set artefact"
    text = comparison.table()
    assert "base acc_norm" in text and BELOW_CHANCE in text
    assert BELOW_CHANCE in comparison._repr_html_()
    by_norm = compare(base, new, forget_subjects=["virology"], metric="acc_norm")
    assert by_norm.other_metric == "acc" and {r.subject: r for r in by_norm.rows}["virology"].note is None


def test_letter_comparison_has_no_second_metric():
    letter = EvalResult(mode="letter", records=[{k: v for k, v in r.items() if "norm" not in k}
                                                for r in result({"virology": outcomes(50, 5)}).records])
    comparison = compare(letter, letter, forget_subjects=["virology"])
    assert comparison.other_metric is None and "acc_norm" not in comparison.table()


def test_headline_roles_carry_acc_norm_chance_and_the_note():
    base = result({"virology": outcomes(200, 150, 160), "history": outcomes(200, 160, 150)})
    new = result({"virology": outcomes(200, 10, 60), "history": outcomes(200, 150, 140)})
    rows = {r.role: r for r in role_accuracy(base, new, {"virology": "forget", "history": "distant"})}
    forget = rows["forget"]
    assert forget.chance == pytest.approx(0.25) and forget.note == BELOW_CHANCE
    assert (forget.other_metric, forget.base_other, forget.unlearned_other) == ("acc_norm", pytest.approx(0.8), pytest.approx(0.3))
    assert rows["distant"].note is None
    assert role_accuracy(base, new, {"virology": "forget"}, metric="acc_norm")[0].note is None
