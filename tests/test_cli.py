"""The rmu-lens command line: flags map onto RMUConfig, runs write their directory, errors are one line."""

from __future__ import annotations

import dataclasses
import json

import pytest

from rmu_lens.cli import build_parser, main
from rmu_lens.flags import config_flags
from rmu_lens.models import build_random_model, load_model, save_hf_model
from rmu_lens.rmu.config import RMUConfig
from tests.helpers import texts


def write_jsonl(path, items):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in items))
    return str(path)


@pytest.fixture
def tiny_model_dir(tmp_path):
    model, tokenizer = build_random_model("llama", n_layers=4)
    return str(save_hf_model(load_model(model, tokenizer=tokenizer), tmp_path / "tiny"))


def test_every_config_field_has_a_flag():
    assert {flag.dest for flag in config_flags(RMUConfig)} == {f.name for f in dataclasses.fields(RMUConfig)}


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["unlearn", "--help"])
    text = capsys.readouterr().out
    for flag in config_flags(RMUConfig):
        assert flag.names[0] in text


def test_unlearn_writes_a_run_with_the_flags_settings(tiny_model_dir, tmp_path):
    bio = write_jsonl(tmp_path / "bio.jsonl", texts("bio", 8, min_words=12))
    cyber = write_jsonl(tmp_path / "cyber.jsonl", texts("cyber", 8, min_words=12))
    retain = write_jsonl(tmp_path / "retain.jsonl", texts("retain", 12, min_words=12))
    code = main([
        "unlearn", "--model", tiny_model_dir, "--forget", bio, cyber, "--retain", retain, "--out", str(tmp_path / "run"),
        "--layer", "2", "--update-layers", "1,2", "--steering-coeff", "5,7", "--alpha", "3", "--lr", "1e-3",
        "--batch-size", "2", "--max-batches", "4", "--max-length", "32", "--reference", "--no-progress",
    ])
    assert code == 0
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "finished"
    assert record["config"]["update_layers"] == [1, 2] and record["config"]["steering_coeff"] == [5.0, 7.0]
    assert record["config"]["reference"] is True and record["topics"] == ["bio", "cyber"]
    assert [h["topic"] for h in record["history"]] == ["bio", "cyber", "bio", "cyber"]
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


def test_missing_corpus_file_is_one_clear_error(tiny_model_dir, tmp_path, capsys):
    code = main(["unlearn", "--model", tiny_model_dir, "--forget", str(tmp_path / "nope.jsonl"),
                 "--retain", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "run")])
    assert code == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.integration
def test_short_cli_run_on_the_embedded_model_moves_forget_norm_toward_c(tmp_path):
    """Sixteen demo-profile steps on SmolLM2 with the bundled corpora: on the last batch of each topic the
    updated forget activations sit closer to c than the frozen model's on the same batch (the forget loss
    pulls them there), the forget loss fell, and retain activations kept the frozen model's direction
    better than forget activations did at every step (what the retain term is for). No tuned margins."""
    out = tmp_path / "run"
    code = main(["unlearn", "--model", "smollm2-135m", "--forget", "bundled:virology", "bundled:cybersecurity",
                 "--retain", "bundled:retain", "--profile", "demo", "--max-batches", "16", "--out", str(out), "--no-progress"])
    assert code == 0
    record = json.loads((out / "run.json").read_text())
    retain_cos = [h["retain_cos"] for h in record["history"]]
    for topic in record["topics"]:
        steps = [h for h in record["history"] if h["topic"] == topic]
        first, last = steps[0], steps[-1]
        c = record["steering_coeffs"][topic]
        assert abs(last["forget_norm"] - c) < abs(last["frozen_forget_norm"] - c)
        assert last["forget_loss"] < first["forget_loss"]
        assert last["forget_cos"] < min(retain_cos)


def test_library_parameters_in_an_error_become_the_commands_flags():
    from rmu_lens.cli import _subcommand, cli_wording

    parser = build_parser()
    unlearn, eval_ = _subcommand(parser, "unlearn"), _subcommand(parser, "eval")
    unlearn.format_help()  # adds the RMU settings it defers until used
    assert cli_wording("pass overwrite=True (--overwrite) to redo it", unlearn) == "pass --overwrite to redo it"
    assert cli_wording("Choose resume=True or overwrite=True, not both", unlearn) == "Choose --resume or --overwrite, not both"
    assert cli_wording("reference=True trains with legacy_adamw", unlearn) == "--reference trains with legacy_adamw"
    assert cli_wording("pass the text field's name (text_field=)", unlearn) == "pass the text field's name (--text-field)"
    assert cli_wording("layer=7 must be >= 0; prefix_layer=True", unlearn) == "layer=7 must be >= 0; prefix_layer=True"
    assert cli_wording("pass overwrite=True", eval_) == "pass overwrite=True"  # eval has no --overwrite


@pytest.mark.parametrize("command", ["eval", "compare", "audit"])
def test_descriptions_print_a_plain_percent_sign(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = capsys.readouterr().out
    assert "95% " in text.replace("\n", " ") and "%%" not in text
