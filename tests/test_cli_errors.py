"""`rmu-lens` failures: one line on stderr and a distinct exit code each; outputs checked before any model loads."""

from __future__ import annotations

import errno
import os

import pytest

import rmu_lens.cli as cli
from rmu_lens.cli import exit_code, main
from rmu_lens.data.corpora import CorpusError
from rmu_lens.errors import OutputPathError, RunLockedError
from rmu_lens.models import ModelNotFoundError
from rmu_lens.rmu.rundir import RunExistsError
from rmu_lens.rmu.trainer import NonFiniteLossError


def unlearn_args(model, out, *flags):
    return ["unlearn", "--model", str(model), "--forget", "bundled:virology", "--retain", "bundled:retain",
            "--out", str(out), "--no-progress", *flags]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


@pytest.fixture
def missing_model(tmp_path):
    """A model path that does not exist: a command that reached the model load would exit 4 instead."""
    return tmp_path / "no-such-model"


def test_a_missing_model_is_exit_4_so_the_checks_below_come_before_the_load(missing_model, tmp_path, capsys):
    assert main(unlearn_args(missing_model, tmp_path / "run")) == cli.EXIT_NOT_FOUND
    assert "no-such-model" in one_error_line(capsys)


@pytest.mark.parametrize("case, code, message", [
    ("file", cli.EXIT_OUTPUT, "is not a directory"),
    ("under a file", cli.EXIT_OUTPUT, "is a file"),
    ("user folder", cli.EXIT_OUTPUT, "holds no rmu_lens run"),
    ("resume and overwrite", cli.EXIT_INVALID, "not both"),
])
def test_unlearn_refuses_an_unusable_out_before_loading_the_model(missing_model, tmp_path, capsys, case, code, message):
    target = tmp_path / "target"
    flags = []
    if case == "file":
        target.write_text("mine")
    elif case == "under a file":
        (tmp_path / "file").write_text("mine")
        target = tmp_path / "file" / "run"
    elif case == "user folder":
        target.mkdir()
        (target / "notes.txt").write_text("mine")
    else:
        flags = ["--resume", "--overwrite"]
    assert main(unlearn_args(missing_model, target, *flags)) == code
    assert message in one_error_line(capsys)
    if case == "user folder":
        assert [p.name for p in target.iterdir()] == ["notes.txt"]


def test_eval_refuses_a_directory_as_out_before_scoring(missing_model, tmp_path, capsys):
    args = ["eval", "--model", str(missing_model), "--data", "bundled:biology", "--quiet", "--out"]
    assert main([*args, str(tmp_path)]) == cli.EXIT_OUTPUT
    assert "is a directory" in one_error_line(capsys)
    assert main([*args, str(tmp_path / "results.json")]) == cli.EXIT_NOT_FOUND  # a file path gets as far as the model


@pytest.mark.parametrize("command", [
    ["audit", "--unlearned", "no-such-run", "--testbed"],
    ["layer-study", "--layers", "1", "--testbed"],
    ["analyze", "--base", "no-such-model", "--unlearned", "no-such-run"],
    ["demo"],
])
def test_every_command_that_writes_refuses_a_file_as_out_first(tmp_path, capsys, command):
    out = tmp_path / "out"
    out.write_text("mine")
    assert main([*command, "--out", str(out)]) == cli.EXIT_OUTPUT
    assert "not a directory" in one_error_line(capsys)
    assert out.read_text() == "mine"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write into read-only folders")
def test_a_read_only_out_is_a_permission_error_before_the_load(missing_model, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert main(unlearn_args(missing_model, locked / "run")) == cli.EXIT_PERMISSION
    assert "not writable" in one_error_line(capsys)


@pytest.mark.parametrize("error, code", [
    (CorpusError("bad corpus"), cli.EXIT_INVALID),
    (ValueError("bad setting"), cli.EXIT_INVALID),
    (OutputPathError("bad out"), cli.EXIT_OUTPUT),
    (RunExistsError("a run is there"), cli.EXIT_OUTPUT),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "x"), cli.EXIT_OUTPUT),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "x"), cli.EXIT_OUTPUT),
    (FileNotFoundError(errno.ENOENT, "No such file", "x"), cli.EXIT_NOT_FOUND),
    (ModelNotFoundError("no model"), cli.EXIT_NOT_FOUND),
    (PermissionError(errno.EACCES, "Permission denied", "x"), cli.EXIT_PERMISSION),
    (OSError(errno.ENOSPC, "No space left on device", "x"), cli.EXIT_DISK_FULL),
    (RunLockedError("in use"), cli.EXIT_LOCKED),
    (NonFiniteLossError("nan"), cli.EXIT_DIVERGED),
    (OSError(errno.EIO, "Input/output error", "x"), cli.EXIT_OS),
    (NotImplementedError("unsupported"), cli.EXIT_UNSUPPORTED),
    (KeyboardInterrupt(), cli.EXIT_INTERRUPTED),
])
def test_each_kind_of_failure_has_its_own_exit_code(error, code):
    assert exit_code(error) == code


def test_exit_codes_are_distinct_and_an_unexpected_error_is_not_hidden():
    codes = [value for name, value in vars(cli).items() if name.startswith("EXIT_")]
    assert len(codes) == len(set(codes)) and cli.EXIT_INTERRUPTED == 130
    assert exit_code(RuntimeError("a bug")) is None


@pytest.mark.parametrize("error, code, text", [
    (OSError(errno.ENOSPC, "No space left on device", "/data/run/model.safetensors"), cli.EXIT_DISK_FULL,
     "disk full writing /data/run/model.safetensors"),
    (NonFiniteLossError("Step 3: loss is nan; lower lr"), cli.EXIT_DIVERGED, "loss is nan"),
    (PermissionError(errno.EACCES, "Permission denied", "/data/run/run.json"), cli.EXIT_PERMISSION,
     "Permission denied: /data/run/run.json"),
])
def test_main_reports_a_failure_in_one_line(monkeypatch, tmp_path, capsys, error, code, text):
    def fails(args):
        raise error

    monkeypatch.setattr(cli, "run_unlearn", fails)
    assert main(unlearn_args("m", tmp_path / "run")) == code
    assert text in one_error_line(capsys)
