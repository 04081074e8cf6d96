"""`rmu-lens eval --metric perplexity` through argparse, on a tiny model saved as an HF directory."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from rmu_lens.eval.commands import register
from rmu_lens.models import build_random_model, load_model, save_hf_model
from rmu_lens.utility.perplexity import perplexity

TEXTS = Path(__file__).parent / "lm_eval_tasks" / "perplexity_texts.jsonl"


def run(argv: list[str]) -> int:
    root = argparse.ArgumentParser(prog="rmu-lens")
    register(root.add_subparsers(dest="command", required=True))
    args = root.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    model, tokenizer = build_random_model("llama", n_layers=2, d_model=32, seed=7)
    return save_hf_model(load_model(model, tokenizer=tokenizer), tmp_path_factory.mktemp("tiny") / "model")


def test_eval_perplexity_writes_what_perplexity_computes(model_dir, tmp_path, capsys):
    out = tmp_path / "ppl.json"
    argv = ["eval", "--metric", "perplexity", "--model", str(model_dir), "--data", str(TEXTS), "--max-length", "64",
            "--limit", "4", "--out", str(out)]
    assert run(argv) == 0
    written = json.loads(out.read_text())
    expected = perplexity(load_model(model_dir), TEXTS, max_length=64, max_texts=4)
    assert written["n_texts"] == 4
    assert written["metrics"] == pytest.approx(expected.metrics(), rel=1e-6)
    printed = capsys.readouterr().out
    assert "bits_per_byte" in printed and f"{expected.bits_per_byte:.4f}" in printed


def test_eval_perplexity_names_a_missing_text_field(model_dir, tmp_path, capsys):
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"page": "no text field"}) + "\n")
    with pytest.raises(ValueError, match="text_field="):  # the library names its parameter
        run(["eval", "--metric", "perplexity", "--model", str(model_dir), "--data", str(data), "--out", str(tmp_path / "x.json")])
    from rmu_lens.cli import EXIT_INVALID, main

    assert main(["eval", "--metric", "perplexity", "--model", str(model_dir), "--data", str(data),
                 "--out", str(tmp_path / "x.json")]) == EXIT_INVALID
    assert "(--text-field)" in capsys.readouterr().err  # the command line names its flag
    assert not (tmp_path / "x.json").exists()
    assert run(["eval", "--metric", "perplexity", "--model", str(model_dir), "--data", str(data), "--text-field", "page",
                "--out", str(tmp_path / "x.json"), "--quiet"]) == 0
