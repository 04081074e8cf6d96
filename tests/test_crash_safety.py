"""Run safety in process: a user's folder is never touched, overwrite replaces only on success, every
interruption resumes to the uninterrupted weights, leftovers are recovered or cleaned, one run per directory."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat

import pytest
import torch

import rmu_lens as rl
from rmu_lens.errors import OutputPathError, RMULensError, RunDirectoryError, RunLockedError
from rmu_lens.models import tokenizer_of
from rmu_lens.rmu.optim import LegacyAdamW
from rmu_lens.rmu.rundir import RunExistsError
from rmu_lens.rmu.trainer import NonFiniteLossError, RMUTrainer, open_run_directory
from tests.helpers import texts

LAYER = 2


def small_config(**overrides) -> rl.RMUConfig:
    settings = dict(layer=LAYER, steering_coeff=8.0, alpha=5.0, lr=1e-3, batch_size=2, max_batches=6, max_length=24,
                    retain_max_length=24, checkpoint_every=2)
    settings.update(overrides)
    return rl.RMUConfig(**settings)


def data():
    return {"bio": texts("bio", 12), "cyber": texts("cyber", 12, seed=1)}, texts("retain", 16)


def trained_weights(bridge, config: rl.RMUConfig) -> list[torch.Tensor]:
    state = bridge.state_dict()
    return [state[f"blocks.{layer}.mlp.out.weight"].detach().clone() for layer in config.update_layers]


def assert_same_weights(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def uninterrupted(make_tiny, config) -> list[torch.Tensor]:
    bridge = make_tiny(n_layers=4, seed=5)
    forget, retain = data()
    rl.unlearn(bridge, forget, retain, config, progress=False)
    return trained_weights(bridge, config)


class StepsSeen:
    """Records the step of every record, to see where a resumed run started."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_step(self, record: dict) -> None:
        self.steps.append(record["step"])


def resume(make_tiny, out, config, callbacks=()):
    bridge = make_tiny(n_layers=4, seed=5)
    forget, retain = data()
    run = rl.unlearn(bridge, forget, retain, config, out=out, resume=True, callbacks=callbacks, progress=False)
    return run, trained_weights(bridge, config)


@pytest.fixture
def after_optimizer_step(monkeypatch):
    """``after_optimizer_step(n, action)``: run ``action()`` right after the n-th optimizer update (1-based)."""

    original = LegacyAdamW.step

    def install(n: int, action) -> None:
        calls = {"n": 0}

        def step(self, *args, **kwargs):
            result = original(self, *args, **kwargs)
            calls["n"] += 1
            if calls["n"] == n:
                action()
            return result

        monkeypatch.setattr(LegacyAdamW, "step", step)

    return install


# -- a user's folder, overwrite ---------------------------------------------------------------------

def test_a_folder_that_is_not_a_run_is_refused_and_left_untouched(make_tiny, tmp_path):
    folder = tmp_path / "mine"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "IMPORTANT.txt").write_text("keep me")
    (folder / "checkpoint").mkdir()
    (folder / "checkpoint" / "x").write_text("keep me too")
    forget, retain = data()
    for overwrite in (False, True):
        with pytest.raises(OutputPathError, match="holds no rmu_lens run"):
            rl.unlearn(make_tiny(n_layers=4), forget, retain, small_config(), out=folder, overwrite=overwrite, progress=False)
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == ["checkpoint", "checkpoint/x", "model",
                                                                             "model/IMPORTANT.txt"]
    assert (folder / "model" / "IMPORTANT.txt").read_text() == "keep me"


def test_an_overwrite_that_fails_keeps_the_old_run_whole(make_tiny, tmp_path):
    out = tmp_path / "run"
    forget, retain = data()
    rl.unlearn(make_tiny(n_layers=4), forget, retain, small_config(max_batches=2), out=out, progress=False)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    with pytest.raises(NonFiniteLossError):
        rl.unlearn(make_tiny(n_layers=4), forget, retain, small_config(lr=1e30, checkpoint_every=1), out=out,
                   overwrite=True, progress=False)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before
    assert sorted(p.name for p in out.iterdir()) == [".lock", "control_vectors.safetensors", "model", "run.json"]

    run = rl.unlearn(make_tiny(n_layers=4), forget, retain, small_config(max_batches=4), out=out, overwrite=True,
                     progress=False)
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "finished" and record["steps_done"] == 4 and run.out == out
    assert sorted(p.name for p in out.iterdir()) == [".lock", "control_vectors.safetensors", "model", "run.json"]


# -- failures and interruptions resume exactly ------------------------------------------------------

def test_a_full_disk_during_the_final_save_keeps_the_trained_steps(make_tiny, tmp_path, monkeypatch):
    import rmu_lens.models

    config = small_config(checkpoint_every=0)  # no periodic checkpoint: only the failure handling can save the steps
    out = tmp_path / "run"
    forget, retain = data()
    real_save = rmu_lens.models.save_hf_model

    def disk_full(bridge, directory):
        raise OSError(errno.ENOSPC, "No space left on device", str(directory))

    monkeypatch.setattr(rmu_lens.models, "save_hf_model", disk_full)
    with pytest.raises(OSError, match="No space"):
        rl.unlearn(make_tiny(n_layers=4, seed=5), forget, retain, config, out=out, progress=False)
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "failed" and record["steps_done"] == 6 and "resume=True" in record["resume"]
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 6

    monkeypatch.setattr(rmu_lens.models, "save_hf_model", real_save)
    seen = StepsSeen()
    run, weights = resume(make_tiny, out, config, callbacks=[seen])
    assert run.status == "finished" and seen.steps == []  # nothing retrained: only the save
    assert_same_weights(weights, uninterrupted(make_tiny, config))


def test_an_interrupt_inside_an_update_never_saves_the_new_weights_under_the_old_step(make_tiny, tmp_path,
                                                                                       after_optimizer_step):
    def interrupt():
        raise KeyboardInterrupt("between optimizer.step() and the step counter")

    config = small_config()
    out = tmp_path / "run"
    forget, retain = data()
    after_optimizer_step(4, interrupt)
    with pytest.raises(KeyboardInterrupt):
        rl.unlearn(make_tiny(n_layers=4, seed=5), forget, retain, config, out=out, progress=False)
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2  # the last consistent checkpoint, not the half-done step 3
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    after_optimizer_step(10**9, lambda: None)
    _, weights = resume(make_tiny, out, config)
    assert_same_weights(weights, uninterrupted(make_tiny, config))


def test_ctrl_c_is_a_stop_request_taken_after_the_current_step(make_tiny, tmp_path, after_optimizer_step):
    config = small_config()
    out = tmp_path / "run"
    forget, retain = data()
    after_optimizer_step(4, lambda: os.kill(os.getpid(), signal.SIGINT))
    # Python's own handler for the test, whatever the process inherited (a shell's background job
    # starts with SIGINT ignored), so "put back" is checked against a known handler.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            rl.unlearn(make_tiny(n_layers=4, seed=5), forget, retain, config, out=out, progress=False)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back
    finally:
        signal.signal(signal.SIGINT, inherited)
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 4 == len(state["history"])  # the interrupted step was completed and saved
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    after_optimizer_step(10**9, lambda: None)
    seen = StepsSeen()
    _, weights = resume(make_tiny, out, config, callbacks=[seen])
    assert seen.steps == [4, 5]
    assert_same_weights(weights, uninterrupted(make_tiny, config))


def stopped_run(make_tiny, out, config, at_step: int = 3):
    """A run stopped after ``at_step`` steps, checkpointed there (as a resumable leftover for the tests below)."""

    class StopAt:
        def on_train_start(self, trainer):
            self.trainer = trainer

        def on_step(self, record):
            if record["step"] == at_step - 1:
                self.trainer.request_stop()

    forget, retain = data()
    rl.unlearn(make_tiny(n_layers=4, seed=5), forget, retain, config, out=out, callbacks=[StopAt()], progress=False)


def test_a_checkpoint_swap_cut_between_its_renames_resumes_from_the_previous_checkpoint(make_tiny, tmp_path):
    config = small_config(max_batches=8)
    out = tmp_path / "run"
    stopped_run(make_tiny, out, config, at_step=4)
    # What a kill between the two renames leaves: checkpoint.old and a complete staged checkpoint.
    (out / "checkpoint").rename(out / "checkpoint.old")
    (out / f".checkpoint-{2**22}.0badf00d").mkdir()
    seen = StepsSeen()
    run, weights = resume(make_tiny, out, config, callbacks=[seen])
    assert seen.steps[0] == 4 and run.status == "finished"
    assert sorted(p.name for p in out.iterdir()) == [".lock", "control_vectors.safetensors", "model", "run.json"]
    assert_same_weights(weights, uninterrupted(make_tiny, config))


def test_stale_staging_from_killed_processes_is_cleaned_on_the_next_open(make_tiny, tmp_path):
    config = small_config()
    out = tmp_path / "run"
    stopped_run(make_tiny, out, config)
    leftovers = [out / ".model-4194304.deadbeef", out / "checkpoint.new", out / ".checkpoint-4194304.12345678"]
    for folder in leftovers:
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"partial")
    (out / ".run.json.4194304.abcdef01").write_text("{")
    resume(make_tiny, out, config)
    assert sorted(p.name for p in out.iterdir()) == [".lock", "control_vectors.safetensors", "model", "run.json"]


def test_recorded_steps_without_a_checkpoint_are_not_silently_restarted(make_tiny, tmp_path):
    config = small_config()
    out = tmp_path / "run"
    stopped_run(make_tiny, out, config)
    for file in (out / "checkpoint").iterdir():
        file.unlink()
    (out / "checkpoint").rmdir()
    with pytest.raises(RunDirectoryError, match="3 steps done but there is no checkpoint"):
        resume(make_tiny, out, config)


def test_a_damaged_checkpoint_is_one_clear_error_naming_the_file(make_tiny, tmp_path):
    config = small_config()
    out = tmp_path / "run"
    stopped_run(make_tiny, out, config)
    tensors = out / "checkpoint" / "trained.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:100])
    with pytest.raises(RunDirectoryError, match="trained.safetensors is damaged.*overwrite"):
        resume(make_tiny, out, config)


# -- the trainer ------------------------------------------------------------------------------------

def test_adaptive_calibration_happens_for_train_step_callers(make_tiny):
    config = small_config(adaptive_beta=5.0)
    forget, retain = data()
    bridge = make_tiny(n_layers=4, seed=3)
    tokenizer = tokenizer_of(bridge)
    tokenizer.padding_side = "right"
    batch = tokenizer(forget["bio"][:2], return_tensors="pt", padding=True, truncation=True, max_length=24)
    _, cache = bridge.run_with_cache(batch["input_ids"], attention_mask=batch["attention_mask"],
                                     names_filter=f"blocks.{LAYER}.hook_resid_post", stop_at_layer=LAYER + 1)
    norms = cache[f"blocks.{LAYER}.hook_resid_post"].double().norm(dim=-1)
    keep = batch["attention_mask"].bool().clone()
    keep[:, 0] = False  # right padding: the first real token sits at column 0
    expected = 5.0 * norms[keep].mean().item()

    record = RMUTrainer(bridge, forget, retain, config).train_step()
    assert record["steering_coeff"] == pytest.approx(expected, rel=1e-5)


def test_training_frees_the_gradients_of_the_trained_tensors(make_tiny):
    forget, retain = data()
    trainer = RMUTrainer(make_tiny(n_layers=4), forget, retain, small_config(max_batches=2))
    trainer.train(progress=False)
    assert [p.parameter.grad for p in trainer.trained] == [None] * len(trainer.trained)


def test_a_second_run_on_a_live_run_directory_is_refused_naming_the_holder(make_tiny, tmp_path):
    out = tmp_path / "run"
    forget, retain = data()
    stopped_run(make_tiny, out, small_config())
    live = RMUTrainer(make_tiny(n_layers=4, seed=5), forget, retain, small_config())
    holder = open_run_directory(live, out, resume=True, overwrite=False)  # holds the lock, as a running run does
    with pytest.raises(RunLockedError, match=f"in use by process {os.getpid()}"):
        resume(make_tiny, out, small_config())
    with pytest.raises(RunLockedError):
        rl.unlearn(make_tiny(n_layers=4), forget, retain, small_config(), out=out, overwrite=True, progress=False)
    holder.close()
    run, _ = resume(make_tiny, out, small_config())
    assert run.status == "finished"


def test_a_lock_left_by_a_dead_process_is_taken_over(make_tiny, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text("4194304\n")  # a PID no live process has: the kernel lock went with it
    forget, retain = data()
    run = rl.unlearn(make_tiny(n_layers=4), forget, retain, small_config(max_batches=2), out=out, progress=False)
    assert run.status == "finished"


def test_outputs_get_ordinary_file_permissions_under_the_umask(make_tiny, tmp_path):
    previous = os.umask(0o022)
    try:
        out = tmp_path / "run"
        forget, retain = data()
        rl.unlearn(make_tiny(n_layers=4), forget, retain, small_config(max_batches=2), out=out, progress=False)
    finally:
        os.umask(previous)
    modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.name != ".lock"}
    assert modes["run.json"] == modes["control_vectors.safetensors"] == modes["model/model.safetensors"] == 0o644
    assert modes["model"] == 0o755


def test_every_rmu_lens_error_shares_one_base_and_keeps_its_builtin_type():
    from rmu_lens.audit.suite import AuditFileError
    from rmu_lens.data.corpora import CorpusError
    from rmu_lens.eval.questions import QuestionError
    from rmu_lens.eval.results import ResultFileError
    from rmu_lens.models import ModelNotFoundError

    builtin = {ModelNotFoundError: FileNotFoundError, RunExistsError: FileExistsError,
               NonFiniteLossError: FloatingPointError, CorpusError: ValueError, QuestionError: ValueError,
               ResultFileError: ValueError, AuditFileError: ValueError, OutputPathError: ValueError,
               RunDirectoryError: ValueError, RunLockedError: RuntimeError}
    for error, base in builtin.items():
        assert issubclass(error, RMULensError) and issubclass(error, base), error


def test_an_overwrite_killed_while_swapping_in_is_completed_on_the_next_open(make_tiny, tmp_path, monkeypatch):
    import rmu_lens.rmu.rundir as rundir

    class Killed(BaseException):
        """Stands for SIGKILL: nothing after it runs (no clean-up)."""

    out = tmp_path / "run"
    forget, retain = data()
    rl.unlearn(make_tiny(n_layers=4), forget, retain, small_config(max_batches=2), out=out, progress=False)
    real_replace = os.replace

    def replace(source, target):
        if os.path.basename(source) == "model" and ".overwrite-" in str(source):
            raise Killed  # the old run.json, control vectors and model are out, the new model not yet in
        real_replace(source, target)

    monkeypatch.setattr(rundir.os, "replace", replace)
    monkeypatch.setattr(rundir.RunDirectory, "fail", lambda *args, **kwargs: None)
    bridge = make_tiny(n_layers=4)
    with pytest.raises(Killed):
        rl.unlearn(bridge, forget, retain, small_config(max_batches=4), out=out, overwrite=True, progress=False)
    assert not (out / "run.json").exists()
    monkeypatch.undo()

    with pytest.raises(RunExistsError, match="finished"):  # the swap is completed before the usual refusal
        rl.unlearn(make_tiny(n_layers=4), forget, retain, small_config(max_batches=4), out=out, progress=False)
    assert json.loads((out / "run.json").read_text())["steps_done"] == 4
    assert sorted(p.name for p in out.iterdir()) == [".lock", "control_vectors.safetensors", "model", "run.json"]
    saved = rl.load_model(out / "model")
    assert_same_weights(trained_weights(saved, small_config()), trained_weights(bridge, small_config()))
