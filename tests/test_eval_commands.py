"""`rmu-lens eval` / `rmu-lens compare` through argparse, on a tiny model saved as an HF directory."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from rmu_lens.eval import EvalResult, evaluate, load_questions
from rmu_lens.eval.commands import register
from rmu_lens.models import build_random_model, load_model, save_hf_model

ROWS = [
    {"question": "What is the powerhouse of the cell?", "choices": ["Nucleus", "Mitochondrion", "Ribosome", "Vacuole"], "answer": 1, "subject": "biology"},
    {"question": "What carries genes?", "choices": ["DNA", "Fat", "Salt", "Air"], "answer": 0, "subject": "biology"},
    {"question": "Which virus causes flu?", "choices": ["Influenza", "Measles", "Rabies", "Polio"], "answer": 0, "subject": "virology"},
]


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="rmu-lens")
    register(root.add_subparsers(dest="command", required=True))
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    model, tokenizer = build_random_model("llama", n_layers=2, d_model=32, seed=7)
    return save_hf_model(load_model(model, tokenizer=tokenizer), tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


def test_eval_command_writes_the_same_result_as_evaluate(model_dir, data, tmp_path, capsys):
    out = tmp_path / "results.json"
    assert run(["eval", "--model", str(model_dir), "--data", str(data), "--mode", "letter", "--batch-size", "2", "--out", str(out)]) == 0
    written = EvalResult.load(out)
    direct = evaluate(str(model_dir), load_questions(data), mode="letter", progress=False)
    assert [r["prediction"] for r in written.records] == [r["prediction"] for r in direct.records]
    assert written.meta["data"] == str(data) and written.mode == "letter"
    assert "overall" in capsys.readouterr().out


def test_eval_command_applies_subjects_and_limit(model_dir, data, tmp_path):
    out = tmp_path / "results.json"
    run(["eval", "--model", str(model_dir), "--data", str(data), "--subjects", "biology", "--limit", "1", "--quiet", "--out", str(out)])
    written = EvalResult.load(out)
    assert [r["subject"] for r in written.records] == ["biology"]
    assert written.mode == "cloze"  # the default mode


def written_result(path, outcomes: dict[str, list[bool]]) -> str:
    """A cloze results file with the given right/wrong outcomes per subject."""
    records = []
    for subject, correct in outcomes.items():
        for i, right in enumerate(correct):
            records.append({"id": f"set/{subject}/{i}", "task": "set", "subject": subject, "answer": 0,
                            "loglikelihoods": [-1.0, -2.0, -3.0, -4.0] if right else [-2.0, -1.0, -3.0, -4.0],
                            "prediction": 0 if right else 1, "correct": right, "pred_norm": 0 if right else 1,
                            "correct_norm": right})
    EvalResult(mode="cloze", records=records).save(path)
    return str(path)


def test_compare_command_prints_flagged_table_and_writes_json(tmp_path, capsys):
    # Two different evaluations with known changes: virology 9/10 -> 2/10, biology 6/8 -> 5/8, history 7/7 -> 7/7.
    before = {"virology": [True] * 9 + [False], "biology": [True] * 6 + [False] * 2, "history": [True] * 7}
    after = {"virology": [True] * 2 + [False] * 8, "biology": [True] * 5 + [False] * 3, "history": [True] * 7}
    base, new = written_result(tmp_path / "base.json", before), written_result(tmp_path / "new.json", after)
    assert run(["compare", base, new, "--forget-subjects", "virology", "--out", str(tmp_path / "cmp.json")]) == 0
    printed = capsys.readouterr().out
    assert "virology" in printed and "forget" in printed and "collateral" in printed
    saved = json.loads((tmp_path / "cmp.json").read_text())
    rows = {row["subject"]: row for row in saved["subjects"]}
    for subject in before:
        expected = sum(after[subject]) / len(after[subject]) - sum(before[subject]) / len(before[subject])
        assert rows[subject]["delta"] == pytest.approx(expected, abs=1e-12)
        assert rows[subject]["role"] == ("forget" if subject == "virology" else "collateral")
    assert [row["subject"] for row in saved["subjects"]] == ["virology", "biology", "history"]  # largest drop first
    assert rows["virology"]["significant"] and not rows["history"]["significant"]


def test_eval_command_requires_model_data_and_out():
    with pytest.raises(SystemExit):
        parser().parse_args(["eval", "--data", "x.jsonl", "--out", "r.json"])


def test_importing_the_commands_does_not_import_torch():
    code = "import sys, rmu_lens.eval.commands, rmu_lens.eval; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_progress_keeps_the_table_and_quiet_prints_nothing(model_dir, data, tmp_path, capsys):
    from rmu_lens.cli import main

    common = ["eval", "--model", str(model_dir), "--data", str(data), "--mode", "letter"]
    assert main([*common, "--no-progress", "--out", str(tmp_path / "a.json")]) == 0
    printed = capsys.readouterr()
    assert "overall" in printed.out and printed.err.strip() == f"wrote {tmp_path / 'a.json'}"  # no progress bar
    assert main([*common, "--quiet", "--out", str(tmp_path / "b.json")]) == 0
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err == ""
    assert EvalResult.load(tmp_path / "a.json").records == EvalResult.load(tmp_path / "b.json").records
