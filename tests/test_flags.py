"""Every setting declared once: RMUConfig's fields give the same flags to ``rmu-lens unlearn`` and ``%rmu_unlearn``."""

from __future__ import annotations

import argparse
import dataclasses
import shlex

import pytest

from rmu_lens.cli import build_config, build_parser
from rmu_lens.flags import FlagDeclarationError, config_flags, int_list, setting, split_items
from rmu_lens.rmu.config import RMUConfig

REQUIRED = ["--forget", "bundled:virology", "--retain", "bundled:retain", "--out", "unused"]


@pytest.fixture(scope="module")
def magics():
    from IPython import get_ipython
    from IPython.testing.globalipapp import start_ipython

    from rmu_lens.jupyter.magics import RMULensMagics

    return RMULensMagics(shell=start_ipython() or get_ipython())


def unlearn_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    unlearn = subcommands.choices["unlearn"]
    unlearn.format_help()  # adds the flags it defers until used
    return unlearn


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {name: action for action in parser._actions for name in action.option_strings}


def test_every_field_has_help_and_the_same_flag_in_the_cli_and_the_magic(magics):
    cli, magic = options(unlearn_parser()), options(magics.rmu_unlearn.parser)
    for item in dataclasses.fields(RMUConfig):
        assert item.metadata.get("help"), f"{item.name} has no help metadata"
        flag = item.metadata.get("flag", "--" + item.name.replace("_", "-"))
        assert flag in cli and flag in magic, item.name
        assert cli[flag].dest == magic[flag].dest == item.name
        assert cli[flag].default is None and magic[flag].default is None  # a profile's value stays unless given
        assert cli[flag].help == magic[flag].help and cli[flag].help.startswith(item.metadata["help"])
        default = item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default
        if default is not None and default is not False:
            shown = ",".join(map(str, default)) if isinstance(default, list) else str(default)
            assert f"[default: {shown}]" in cli[flag].help


FLAG_SET = ("--layer 2 --update-layers 1,2 --param-names blocks.{layer}.mlp.out.weight blocks.{layer}.attn.hook_z "
            "--steering-coeff 5,7 --alpha 3 --lr 1e-3 --batch-size 2 --max-batches 4 --max-length 32 48 "
            "--retain-max-length 16 --cycle --seed 3 --optimizer adamw --adam-eps 1e-8 --weight-decay 0.01 "
            "--master-weights float32 --checkpoint-every 0 --metrics-every 2 --adaptive 2.5 --hook-point blocks.2.hook_resid_mid")
EXPECTED = RMUConfig(
    layer=2, update_layers=[1, 2], param_names=["blocks.{layer}.mlp.out.weight", "blocks.{layer}.attn.hook_z"],
    steering_coeff=[5.0, 7.0], alpha=3.0, lr=1e-3, batch_size=2, max_batches=4, max_length=[32, 48],
    retain_max_length=16, cycle=True, seed=3, optimizer="adamw", adam_eps=1e-8, weight_decay=0.01,
    master_weights="float32", checkpoint_every=0, metrics_every=2, adaptive_beta=2.5, hook_point="blocks.2.hook_resid_mid",
)


def test_a_flag_set_gives_the_same_config_through_the_cli_and_the_magic(magics):
    cli = build_config(build_parser().parse_args(["unlearn", *REQUIRED, *shlex.split(FLAG_SET)]))
    magic = magics._config(magics._parse(magics.rmu_unlearn, f"{' '.join(REQUIRED)} {FLAG_SET}"), None)
    assert cli == magic == EXPECTED


def test_flags_override_the_profile_and_leave_its_other_settings(magics):
    argv = ["--profile", "demo", "--max-batches", "7", "--experts", "0", "3"]
    cli = build_config(build_parser().parse_args(["unlearn", *REQUIRED, *argv]))
    magic = magics._config(magics._parse(magics.rmu_unlearn, " ".join(REQUIRED + argv)), None)
    assert cli == magic == RMUConfig.profile("demo", max_batches=7, experts=[0, 3])


def test_lists_take_commas_or_spaces_and_bad_items_are_a_usage_error(capsys):
    parser = unlearn_parser()
    assert parser.parse_args([*REQUIRED, "--update-layers", "5,6", "7"]).update_layers == [5, 6, 7]
    assert parser.parse_args([*REQUIRED, "--alpha", "3"]).alpha == 3.0  # one value for every topic
    with pytest.raises(SystemExit):
        parser.parse_args([*REQUIRED, "--update-layers", "5,x"])
    assert "--update-layers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args([*REQUIRED, "--optimizer", "sgd"])


def test_comma_separated_integers():
    assert split_items("1, 2,,3") == [1, 2, 3] and int_list("7") == [7]
    with pytest.raises(argparse.ArgumentTypeError, match="comma-separated"):
        int_list("1,a")


def test_a_field_without_help_or_of_an_unknown_type_is_refused():
    @dataclasses.dataclass
    class NoHelp:
        steps: int = 3

    @dataclasses.dataclass
    class Mapping:
        table: dict = setting(None, "a mapping")

    with pytest.raises(FlagDeclarationError, match="NoHelp.steps has no help"):
        config_flags(NoHelp)
    with pytest.raises(FlagDeclarationError, match="Mapping.table"):
        config_flags(Mapping)


def test_run_flags_are_the_same_in_the_cli_and_the_magic(magics):
    from rmu_lens.rmu.config import PROFILES

    cli, magic = options(unlearn_parser()), options(magics.rmu_unlearn.parser)
    for flag in ("--profile", "--min-chars", "--resume", "--overwrite"):
        assert (cli[flag].dest, cli[flag].default, cli[flag].help) == (magic[flag].dest, magic[flag].default, magic[flag].help)
    assert list(cli["--profile"].choices) == list(magic["--profile"].choices) == sorted(PROFILES)
