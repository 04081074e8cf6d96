"""compare(metric=...) reads the metric it is given: cloze results whose acc and acc_norm disagree."""

from __future__ import annotations

import random

import pytest

from rmu_lens.eval import EvalResult, compare

SUBJECTS = ("virology", "anatomy")


def cloze_records(seed: int) -> list[dict]:
    """Cloze records where the length-normalised pick differs from the plain pick on about half the rows."""
    rng = random.Random(seed)
    records = []
    for i in range(60):
        subject = SUBJECTS[i % 2]
        prediction, pred_norm = rng.randrange(4), rng.randrange(4)
        records.append({
            "id": f"mmlu/{subject}/{i}", "task": "mmlu", "subject": subject, "answer": 0,
            "prediction": prediction, "correct": prediction == 0,
            "pred_norm": pred_norm, "correct_norm": pred_norm == 0,
        })
    return records


def plain_change(base: list[dict], new: list[dict], key: str, subject: str) -> tuple[float, float]:
    """Accuracy before and after over one subject's questions, counted by hand."""
    def acc(records):
        rows = [r[key] for r in records if r["subject"] == subject]
        return sum(rows) / len(rows)
    return acc(base), acc(new)


@pytest.mark.parametrize("metric, key", [("acc", "correct"), ("acc_norm", "correct_norm")])
def test_compare_reports_the_chosen_metric(metric, key):
    base, new = cloze_records(0), cloze_records(1)
    for records in (base, new):
        assert sum(r["correct"] != r["correct_norm"] for r in records) >= 15, "the metrics must disagree"
    comparison = compare(EvalResult(mode="cloze", records=base), EvalResult(mode="cloze", records=new), metric=metric)
    assert comparison.metric == metric
    for subject in SUBJECTS:
        row = comparison.by_subject()[subject]
        before, after = plain_change(base, new, key, subject)
        assert (row["base_acc"], row["new_acc"]) == pytest.approx((before, after), abs=1e-12)
        assert row["delta"] == pytest.approx(after - before, abs=1e-12)


def test_the_two_metrics_give_different_comparisons_on_this_data():
    base, new = cloze_records(0), cloze_records(1)
    rows = {m: compare(EvalResult(mode="cloze", records=base), EvalResult(mode="cloze", records=new), metric=m).by_subject()
            for m in ("acc", "acc_norm")}
    assert any(rows["acc"][s]["base_acc"] != rows["acc_norm"][s]["base_acc"] for s in SUBJECTS)
