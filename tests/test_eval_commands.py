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


def test_compare_command_prints_flagged_table_and_writes_json(model_dir, data, tmp_path, capsys):
    base, new = tmp_path / "base.json", tmp_path / "new.json"
    for out in (base, new):
        run(["eval", "--model", str(model_dir), "--data", str(data), "--quiet", "--out", str(out)])
    capsys.readouterr()
    assert run(["compare", str(base), str(new), "--forget-subjects", "virology", "--out", str(tmp_path / "cmp.json")]) == 0
    printed = capsys.readouterr().out
    assert "virology" in printed and "forget" in printed and "collateral" in printed
    saved = json.loads((tmp_path / "cmp.json").read_text())
    assert all(row["delta"] == 0 for row in saved["subjects"])  # same model twice


def test_eval_command_requires_model_data_and_out():
    with pytest.raises(SystemExit):
        parser().parse_args(["eval", "--data", "x.jsonl", "--out", "r.json"])


def test_importing_the_commands_does_not_import_torch():
    code = "import sys, rmu_lens.eval.commands, rmu_lens.eval; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
