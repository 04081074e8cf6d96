"""--device, --dtype and --device-map: every command that loads a model takes them and passes them on."""

from __future__ import annotations

import argparse

import pytest

from rmu_lens.cli import build_parser, main
from rmu_lens.devices import load_options, parse_device_map

LOADING_COMMANDS = ("unlearn", "eval", "analyze", "audit", "layer-study", "demo", "testbed")


def subcommand(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return actions[0].choices[name]


@pytest.mark.parametrize("command", LOADING_COMMANDS)
def test_every_model_loading_command_has_the_placement_flags(command):
    options = {option for action in subcommand(command)._actions for option in action.option_strings}
    assert {"--device", "--dtype", "--device-map"} <= options


def test_device_map_flag_takes_a_strategy_json_or_a_json_file(tmp_path):
    assert parse_device_map("auto") == "auto"
    assert parse_device_map('{"model.embed_tokens": 0, "lm_head": "cpu"}') == {"model.embed_tokens": 0, "lm_head": "cpu"}
    (tmp_path / "map.json").write_text('{"": "cpu"}')
    assert parse_device_map(str(tmp_path / "map.json")) == {"": "cpu"}
    with pytest.raises(argparse.ArgumentTypeError, match="auto, balanced"):
        parse_device_map("everywhere")
    with pytest.raises(argparse.ArgumentTypeError, match="not valid JSON"):
        parse_device_map("{model: 0}")


def test_flags_become_load_model_options():
    args = build_parser().parse_args(["eval", "--model", "m", "--data", "d", "--out", "o", "--dtype", "bfloat16", "--device", "cuda:1"])
    assert load_options(args) == {"device": "cuda:1", "dtype": "bfloat16"}
    args = build_parser().parse_args(["eval", "--model", "m", "--data", "d", "--out", "o", "--device-map", "auto"])
    assert load_options(args) == {"device_map": "auto"}
    args = build_parser().parse_args(["eval", "--model", "m", "--data", "d", "--out", "o", "--device-map", "auto", "--device", "cpu"])
    with pytest.raises(ValueError, match="both given"):
        load_options(args)


class Loaded(Exception):
    """Raised by the load_model spy: the command got as far as loading its model."""


@pytest.fixture
def load_spy(monkeypatch):
    """Replace load_model where commands look it up; record each call's options, then stop the command."""
    import rmu_lens
    import rmu_lens.models

    calls = []

    def spy(source, **options):
        calls.append(options)
        raise Loaded(str(source))

    # The package attribute first: it is lazy, and read after the module's is patched it would resolve to
    # the spy, which monkeypatch would then "restore" for every later test.
    monkeypatch.setattr(rmu_lens, "load_model", spy)
    monkeypatch.setattr(rmu_lens.models, "load_model", spy)
    return calls


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished two-step run of a tiny model on bundled corpora (for analyze and audit)."""
    from rmu_lens.data.corpora import load_corpus
    from rmu_lens.models import build_random_model, load_model
    from rmu_lens.rmu.config import RMUConfig
    from rmu_lens.rmu.trainer import unlearn

    model, tokenizer = build_random_model("llama", n_layers=3)
    out = tmp_path_factory.mktemp("run") / "run"
    config = RMUConfig(layer=2, max_batches=2, batch_size=2, max_length=32, retain_max_length=32, checkpoint_every=0)
    unlearn(load_model(model, tokenizer=tokenizer), load_corpus("bundled:virology"), load_corpus("bundled:retain"),
            config, out=out, progress=False)
    return out


def command_argv(command: str, tmp_path, run_dir) -> list[str]:
    out = str(tmp_path / "out")
    return {
        "unlearn": ["unlearn", "--model", "m", "--forget", "bundled:virology", "--retain", "bundled:retain", "--out", out],
        "eval": ["eval", "--model", "m", "--data", "bundled:geography", "--out", str(tmp_path / "e.json")],
        "analyze": ["analyze", "--base", "m", "--unlearned", str(run_dir), "--out", out],
        "audit": ["audit", "--base", "m", "--unlearned", str(run_dir), "--out", out, "--forget-data", "bundled:virology",
                  "--forget-corpus", "bundled:virology", "--retain-corpus", "bundled:retain"],
        "layer-study": ["layer-study", "--model", "m", "--layers", "1", "--out", out, "--forget-data", "bundled:virology",
                        "--forget-corpus", "bundled:virology", "--retain-corpus", "bundled:retain"],
        "demo": ["demo", "--out", out],
        "testbed": ["testbed"],
    }[command]


@pytest.mark.parametrize(
    "command",
    [c for c in LOADING_COMMANDS if c != "testbed"] + [pytest.param("testbed", marks=pytest.mark.integration)],
)
def test_placement_flags_reach_load_model(command, load_spy, tiny_run, tmp_path):
    argv = command_argv(command, tmp_path, tiny_run)
    with pytest.raises(Loaded):
        main(argv + ["--device", "cpu", "--dtype", "bfloat16"])
    assert load_spy[0] == {"device": "cpu", "dtype": "bfloat16"}
    load_spy.clear()
    with pytest.raises(Loaded):
        main(argv + ["--device-map", '{"": "cpu"}'])
    assert load_spy[0] == {"device_map": {"": "cpu"}}


def test_unlearn_on_the_meta_device_is_one_clear_line_naming_the_tensor(tmp_path, capsys):
    from rmu_lens.models import build_random_model, load_model, save_hf_model

    model, tokenizer = build_random_model("llama", n_layers=3)
    directory = save_hf_model(load_model(model, tokenizer=tokenizer), tmp_path / "tiny")
    code = main(["unlearn", "--model", str(directory), "--forget", "bundled:virology", "--retain", "bundled:retain",
                 "--out", str(tmp_path / "run"), "--layer", "2", "--device", "meta", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err and len(errors) == 1
    assert "blocks.0.mlp.out.weight" in errors[0] and "meta device" in errors[0]
