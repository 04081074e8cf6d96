"""Command-line paths beyond the basic unlearn run: settings precedence, --dtype, convert, corpora, testbed."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from rmu_lens.cli import EXIT_NOT_FOUND, build_config, build_parser, main
from rmu_lens.models import build_random_model, load_model, save_hf_model
from rmu_lens.rmu.config import RMUConfig
from tests.helpers import texts


def write_jsonl(path, items):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in items))
    return str(path)


def unlearn_args(*extra: str):
    return build_parser().parse_args(["unlearn", "--forget", "f.jsonl", "--retain", "r.jsonl", "--out", "o", *extra])


FILE_SETTINGS = {"layer": 3, "update_layers": [1, 2, 3], "lr": 2e-3, "alpha": 50.0, "seed": 5}


@pytest.mark.parametrize("nested", [False, True], ids=["config-file", "run-json"])
def test_explicit_flags_override_the_config_file_which_overrides_the_profile(tmp_path, nested):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"config": FILE_SETTINGS, "status": "finished"} if nested else FILE_SETTINGS))
    config = build_config(unlearn_args("--profile", "demo", "--config", str(path), "--lr", "1e-4", "--max-batches", "9"))
    # The precedence, written out: demo profile < file < flags.
    demo = RMUConfig.profile("demo")
    assert config.layer == 3 and config.update_layers == [1, 2, 3]      # file over profile (demo: layer 5)
    assert config.alpha == 50.0 and config.seed == 5                     # file over profile / defaults
    assert config.lr == 1e-4                                             # flag over file (2e-3) and profile
    assert config.max_batches == 9 != demo.max_batches                   # flag over profile
    assert config.adaptive_beta == demo.adaptive_beta and config.cycle is True   # profile, untouched by file and flags
    assert config.max_length == 128                                      # profile


def test_without_a_profile_the_file_starts_from_the_defaults(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(FILE_SETTINGS))
    config = build_config(unlearn_args("--config", str(path), "--alpha", "7"))
    expected = RMUConfig().to_dict() | FILE_SETTINGS | {"alpha": 7.0}
    assert config.to_dict() == RMUConfig.from_dict(expected).to_dict()


def test_a_flag_left_out_does_not_reset_the_file_setting(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"reference": True, "cycle": True, "metrics_every": 3}))
    config = build_config(unlearn_args("--config", str(path)))
    assert config.reference is True and config.cycle is True and config.metrics_every == 3


def test_unlearn_with_dtype_trains_and_saves_in_that_dtype(tmp_path):
    model, tokenizer = build_random_model("llama", n_layers=4, d_model=32)
    model_dir = save_hf_model(load_model(model, tokenizer=tokenizer), tmp_path / "tiny")
    forget = write_jsonl(tmp_path / "bio.jsonl", texts("bio", 4, min_words=12))
    retain = write_jsonl(tmp_path / "retain.jsonl", texts("retain", 4, min_words=12))
    out = tmp_path / "run"
    code = main(["unlearn", "--model", str(model_dir), "--forget", forget, "--retain", retain, "--out", str(out),
                 "--dtype", "bfloat16", "--layer", "2", "--update-layers", "1,2", "--batch-size", "2", "--max-batches", "2",
                 "--lr", "1e-2", "--steering-coeff", "5", "--alpha", "2", "--no-progress"])
    assert code == 0
    record = json.loads((out / "run.json").read_text())
    assert len(record["history"]) == 2 and all(h["loss"] == h["loss"] for h in record["history"])
    with safe_open(str(out / "model" / "model.safetensors"), "pt") as saved, \
            safe_open(str(model_dir / "model.safetensors"), "pt") as original:
        name = next(k for k in saved.keys() if k.endswith("layers.2.mlp.down_proj.weight"))
        trained, untouched = saved.get_tensor(name), original.get_tensor(name)
        assert {str(saved.get_tensor(k).dtype) for k in saved.keys()} == {"torch.bfloat16"}
        assert (trained.float() - untouched.bfloat16().float()).abs().max() > 0


def bundled_counts() -> dict[str, int]:
    """Texts per bundled corpus read straight from the package's jsonl files (empty texts dropped)."""
    from importlib.resources import files

    counts = {}
    for path in files("rmu_lens.data").joinpath("corpora").iterdir():
        if path.name.endswith(".jsonl"):
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            counts[path.name.removesuffix(".jsonl")] = sum(len(r["text"]) > 0 for r in rows)
    return counts


def test_corpora_lists_every_bundled_corpus_with_its_text_count(capsys):
    assert main(["corpora"]) == 0
    printed = {}
    for line in capsys.readouterr().out.splitlines():
        name, count = line.split()[:2]
        printed[name.removeprefix("bundled:")] = int(count)
    assert printed == bundled_counts()


def test_convert_names_an_unknown_model_and_the_known_ones(capsys):
    assert main(["convert", "--name", "no-such-model"]) == EXIT_NOT_FOUND
    err = capsys.readouterr().err
    assert "no-such-model" in err and "smollm2-135m" in err


@pytest.mark.integration
def test_convert_prints_a_directory_transformers_loads(capsys):
    import transformers

    assert main(["convert"]) == 0
    path = capsys.readouterr().out.strip().splitlines()[-1]
    config = transformers.AutoConfig.from_pretrained(path)
    # SmolLM2-135M's published shape
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (30, 576, 49152)
