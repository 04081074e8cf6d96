"""EvalResult files and compare() on synthetic results written by hand."""

from __future__ import annotations

import json
import math

import pytest

from rmu_lens.eval import EvalResult, ResultFileError, compare
from rmu_lens.eval.stats import PairedCounts, paired_difference_interval, wilson_interval

# (subject, task, correct under base, correct under new) per question
OUTCOMES = (
    [("virology", "mmlu", True, False)] * 7 + [("virology", "mmlu", False, False)] * 3
    + [("anatomy", "mmlu", True, True)] * 6 + [("anatomy", "mmlu", True, False)] + [("anatomy", "mmlu", False, True)] * 2
    + [("wmdp-bio", "wmdp-bio", True, False)] * 5 + [("wmdp-bio", "wmdp-bio", False, True)] + [("wmdp-bio", "wmdp-bio", False, False)] * 4
)


def synthetic_file(path, which: int, mode: str = "letter") -> str:
    """A results file in the documented JSON layout, with only the records filled in."""
    records = []
    for i, (subject, task, *correct) in enumerate(OUTCOMES):
        right = correct[which]
        record = {
            "id": f"{task}/{subject}/{i}", "task": task, "subject": subject, "answer": 0,
            "loglikelihoods": [-1.0, -2.0, -3.0, -4.0] if right else [-2.0, -1.0, -3.0, -4.0],
            "prediction": 0 if right else 1, "correct": right,
        }
        if mode == "cloze":
            record |= {"pred_norm": record["prediction"], "correct_norm": right}
        records.append(record)
    path.write_text(json.dumps({"format": "rmu_lens.eval/1", "mode": mode, "meta": {"model": f"model{which}"}, "records": records}))
    return str(path)


@pytest.fixture
def files(tmp_path):
    return synthetic_file(tmp_path / "base.json", 0), synthetic_file(tmp_path / "new.json", 1)


def test_by_subject_gives_accuracy_and_wilson_interval(files):
    result = EvalResult.load(files[0])
    table = result.by_subject()
    assert table["virology"]["n"] == 10 and table["virology"]["acc"] == pytest.approx(0.7)
    assert table["anatomy"]["acc"] == pytest.approx(7 / 9)
    low, high = wilson_interval(7, 10)
    assert (table["virology"]["ci_low"], table["virology"]["ci_high"]) == pytest.approx((low, high))
    assert result.accuracy == pytest.approx(19 / 29)
    assert set(result.by_task()) == {"mmlu", "wmdp-bio"}


def test_save_and_load_round_trip_keeps_records_and_meta(files, tmp_path):
    result = EvalResult.load(files[1])
    path = result.save(tmp_path / "out" / "again.json")
    again = EvalResult.load(path)
    assert again.records == result.records and again.meta == result.meta and again.mode == "letter"
    saved = json.loads(path.read_text())
    assert saved["by_subject"]["virology"]["acc"] == 0.0
    assert saved["overall"]["n"] == len(OUTCOMES)


def test_cloze_results_report_acc_norm(tmp_path):
    result = EvalResult.load(synthetic_file(tmp_path / "c.json", 0, mode="cloze"))
    assert result.accuracy_norm == pytest.approx(19 / 29)
    assert "acc_norm" in result.by_subject()["anatomy"]
    assert "acc_norm" in result.table()


def test_letter_results_have_no_acc_norm(files):
    with pytest.raises(ValueError, match="acc_norm"):
        EvalResult.load(files[0]).accuracy_norm


def test_table_lists_every_subject_and_overall(files):
    text = EvalResult.load(files[0]).table()
    for name in ("virology", "anatomy", "wmdp-bio", "overall", "95% CI"):
        assert name in text


def test_load_rejects_files_that_are_not_results(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"results": {}}))
    with pytest.raises(ResultFileError, match="not an rmu_lens evaluation"):
        EvalResult.load(bad)
    bad.write_text("{oops")
    with pytest.raises(ResultFileError, match="not valid JSON"):
        EvalResult.load(bad)
    bad.write_text(json.dumps({"format": "rmu_lens.eval/1", "mode": "letter", "records": [{"id": "x"}]}))
    with pytest.raises(ResultFileError, match="record 1 lacks"):
        EvalResult.load(bad)


def test_compare_gives_per_subject_change_sorted_from_largest_drop(files):
    comparison = compare(*files, forget_subjects=["virology", "wmdp-bio"])
    assert [r.subject for r in comparison.rows] == ["virology", "wmdp-bio", "anatomy"]
    by_subject = {r.subject: r for r in comparison.rows}
    assert by_subject["virology"].delta == pytest.approx(-0.7)
    assert by_subject["wmdp-bio"].delta == pytest.approx(1 / 10 - 5 / 10)
    assert by_subject["anatomy"].delta == pytest.approx(8 / 9 - 7 / 9)


def test_compare_flags_forget_targets_and_collateral(files):
    comparison = compare(*files, forget_subjects=["Virology", "wmdp_bio"])
    roles = {r.subject: r.role for r in comparison.rows}
    assert roles == {"virology": "forget", "wmdp-bio": "forget", "anatomy": "collateral"}
    pooled = {r.subject: r for r in comparison.pooled}
    assert pooled["all forget"].n == 20 and pooled["all collateral"].n == 9 and pooled["overall"].n == 29


def test_compare_interval_is_newcombe_paired_on_each_subjects_questions(files):
    row = {r.subject: r for r in compare(*files).rows}["anatomy"]
    expected = paired_difference_interval(PairedCounts(both=6, base_only=1, new_only=2, neither=0))
    assert (row.delta, row.ci_low, row.ci_high) == pytest.approx(expected)
    assert row.ci_low < row.delta < row.ci_high and not row.significant
    assert {r.subject: r for r in compare(*files).rows}["virology"].significant


def test_compare_task_name_marks_all_its_subjects(files):
    roles = {r.subject: r.role for r in compare(*files, forget_subjects=["mmlu"]).rows}
    assert roles == {"virology": "forget", "anatomy": "forget", "wmdp-bio": "collateral"}


def test_compare_rejects_unknown_forget_subject_and_disjoint_results(files, tmp_path):
    with pytest.raises(ValueError, match="astronomy"):
        compare(*files, forget_subjects=["astronomy"])
    other = json.loads(open(files[1]).read())
    for record in other["records"]:
        record["id"] = "other/" + record["id"]
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match="share no question ids"):
        compare(files[0], tmp_path / "other.json")


def test_compare_rejects_mixed_modes(files, tmp_path):
    with pytest.raises(ValueError, match="mode"):
        compare(files[0], synthetic_file(tmp_path / "c.json", 1, mode="cloze"))


def test_comparison_table_and_json(files, tmp_path):
    comparison = compare(*files, forget_subjects=["virology"])
    text = comparison.table()
    assert "virology" in text and "forget" in text and "collateral" in text and "Newcombe" in text
    saved = json.loads(comparison.save(tmp_path / "cmp.json").read_text())
    assert saved["subjects"][0]["subject"] == "virology"
    assert math.isclose(saved["subjects"][0]["delta"], -0.7)
    assert saved["meta"]["n_paired"] == 29
