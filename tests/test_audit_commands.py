"""`rmu-lens audit` / `rmu-lens layer-study` argument handling: parsing, clear errors, a light import."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from rmu_lens.audit.commands import register


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rmu-lens")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_layer_sets_and_counts_are_parsed():
    args = parse(["audit", "--unlearned", "run", "--out", "o", "--layer-sets", "7;5,6,7", "--finetune-n", "5,10"])
    assert args.layer_sets == [[7], [5, 6, 7]] and args.finetune_n_examples == [5, 10]
    assert parse(["layer-study", "--layers", "3,7,11", "--out", "o", "--testbed"]).layers == [3, 7, 11]


def test_a_directory_without_run_json_is_refused_before_loading_models(tmp_path):
    args = parse(["audit", "--unlearned", str(tmp_path), "--out", str(tmp_path / "o"), "--testbed"])
    with pytest.raises(FileNotFoundError, match="not an rmu_lens run directory"):
        args.func(args)


def test_a_damaged_run_record_is_refused_before_loading_models(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "run.json").write_text(json.dumps({"status": "finished"}))
    args = parse(["audit", "--unlearned", str(tmp_path), "--out", str(tmp_path / "o"), "--base", "x"])
    with pytest.raises(ValueError, match="lacks what a run records"):
        args.func(args)


def test_missing_questions_name_the_flag_and_the_testbed_alternative(tmp_path):
    import torch
    from safetensors.torch import save_file

    from rmu_lens.rmu.config import RMUConfig

    (tmp_path / "model").mkdir()
    record = {"status": "finished", "config": RMUConfig().to_dict(), "topics": ["bio"], "steering_coeffs": {"bio": 1.0},
              "model": {"n_layers": 8}}
    (tmp_path / "run.json").write_text(json.dumps(record))
    save_file({"u.bio": torch.ones(4) / 2}, str(tmp_path / "control_vectors.safetensors"))
    args = parse(["audit", "--unlearned", str(tmp_path), "--out", str(tmp_path / "o"), "--base", "x"])
    with pytest.raises(ValueError, match="--forget-data and --forget-corpus required .*--testbed"):
        args.func(args)


def test_importing_the_commands_does_not_import_torch():
    code = "import sys, rmu_lens.audit.commands, rmu_lens.audit; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_finetune_flags_come_from_finetune_config_fields():
    from rmu_lens.audit.finetune import FinetuneConfig
    from rmu_lens.flags import config_overrides

    args = parse(["audit", "--unlearned", "run", "--out", "o", "--finetune-n", "3", "4", "--finetune-method", "layers",
                  "--finetune-layers", "1", "--finetune-steps", "2", "--finetune-lr", "0.5", "--seed", "9"])
    config = FinetuneConfig(**config_overrides(args, FinetuneConfig, prefix="finetune"), seed=args.seed)
    assert config == FinetuneConfig(n_examples=[3, 4], method="layers", layers=[1], steps=2, lr=0.5, seed=9)
    plain = parse(["audit", "--unlearned", "run", "--out", "o"])
    assert FinetuneConfig(**config_overrides(plain, FinetuneConfig, prefix="finetune")) == FinetuneConfig()
    with pytest.raises(SystemExit):
        parse(["audit", "--unlearned", "run", "--out", "o", "--finetune-method", "full"])
