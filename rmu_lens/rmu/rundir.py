"""The run directory: a self-describing record of one RMU run, written atomically and durably.

    out/
      run.json                      config, versions, seed, data hashes, coefficients, history, status
      control_vectors.safetensors   u.<topic> (unit vectors) and target.<topic> (c·u)
      checkpoint/                   trained tensors + optimizer state + state.json (while unfinished)
      model/                        the edited model as a plain HF directory (safetensors + tokenizer)
      .lock                         the PID of the process running it (an flock, released at exit)

rmu_lens writes only these names and hidden staging names of its own (``.NAME.<pid>.<random>``)
into a run directory, and refuses a non-empty folder that is not a run. A checkpoint is staged
under a per-process name, fsynced, and swapped in through ``checkpoint.old``; whatever a killed
process leaves (staging folders, a lone ``checkpoint.old``, a half-done overwrite) is cleaned or
recovered on the next open, under the lock. ``overwrite`` trains into a hidden staging run and
replaces the old run only when the new one has finished. docs/robustness.md lists the guarantees.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import torch

from rmu_lens._io import (
    DirectoryLock,
    atomic_save_tensors,
    atomic_write_json,
    fsync_directory,
    fsync_tree,
    load_tensors,
    replace_durably,
    staging_name,
)
from rmu_lens.errors import OutputPathError, RMULensError, RunDirectoryError, RunLockedError
from rmu_lens.rmu.record import NotARunError, read_run  # read_run and NotARunError stay importable from here

FORMAT = "rmu_lens.run/1"
RUN_ENTRIES = ("run.json", "control_vectors.safetensors", "checkpoint", "model", DirectoryLock.NAME)
"""The names a run directory holds; rmu_lens writes nothing else there but its own staging names."""
_STAGING = re.compile(
    r"^(checkpoint\.old|checkpoint\.new"
    r"|\.(run\.json|control_vectors\.safetensors)\.\d+\.[0-9a-f]+"
    r"|\.(model|checkpoint|overwrite|replaced)-\d+\.[0-9a-f]+)$"
)
RESUME_HINT = "resume=True"


class RunExistsError(RMULensError, FileExistsError):
    """The output directory already holds a run and neither resume nor overwrite was asked for."""


def is_run_entry(name: str) -> bool:
    """Whether ``name`` inside a run directory is one rmu_lens writes (a run file or a staging name)."""
    return name in RUN_ENTRIES or bool(_STAGING.match(name))


def package_versions() -> dict[str, str]:
    """Versions of the packages that determine a run's numbers."""
    versions = {"python": platform.python_version()}
    for name in ("rmu-lens", "torch", "transformers", "transformer-lens", "safetensors"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def tensor_sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()).hexdigest()


def interrupted_swap(path: Path) -> Path | None:
    """The finished staging run of an overwrite killed while swapping it in (``path`` has no run.json then)."""
    if (path / "run.json").is_file() or not path.is_dir():
        return None
    for name in sorted(os.listdir(path)):
        staged = path / name
        if name.startswith(".overwrite-") and _STAGING.match(name) and (staged / "run.json").is_file():
            try:
                if read_run(staged).get("status") == "finished":
                    return staged
            except RunDirectoryError:
                continue
    return None


def nearest_existing(path: Path) -> Path:
    """``path`` or its closest existing ancestor (the directory a new path would be created in)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_directory(path: str | Path, what: str = "out") -> Path:
    """Refuse an output directory path that is a file or that this user cannot create or write."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{what}={path} exists and is not a directory: choose a directory path")
    base = nearest_existing(path)
    if not base.is_dir():
        raise OutputPathError(f"{what}={path}: {base} is a file, so the directory cannot be created; choose another path")
    if not os.access(base, os.W_OK | os.X_OK):
        raise PermissionError(13, f"{what}={path}: {base} is not writable by this user; choose a writable path", str(base))
    return path


def check_run_output(path: str | Path, *, resume: bool, overwrite: bool) -> None:
    """Check ``out`` for a run before any model is loaded: a directory that can hold this run as asked.

    Refuses: resume together with overwrite; a file; a read-only place; a non-empty folder that is
    not a run (rmu_lens never writes into a user's folder); an existing run without resume or
    overwrite; resuming a finished run or a directory without one.
    """
    path = Path(path)
    if resume and overwrite:
        raise RunDirectoryError("Choose resume=True or overwrite=True, not both")
    check_writable_directory(path)
    if not path.is_dir():
        if resume:
            raise RunDirectoryError(f"Nothing to resume: {path} does not exist")
        return
    if interrupted_swap(path) is not None:
        return  # a run mid-swap: opening completes the swap, then checks again
    has_run = (path / "run.json").is_file()
    # Without run.json only a lock and staging names can be rmu_lens's (run.json is written first);
    # a model/ or checkpoint/ there is someone else's.
    foreign = sorted(
        name for name in os.listdir(path)
        if not (is_run_entry(name) if has_run else name == DirectoryLock.NAME or _STAGING.match(name))
    )
    if not has_run and foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise OutputPathError(
            f"out={path} is a non-empty folder that holds no rmu_lens run (found {shown}); rmu_lens writes runs "
            f"only into a new or empty directory or an existing run: choose another output directory"
        )
    if not has_run:
        if resume:
            raise RunDirectoryError(f"Nothing to resume: {path} holds no run.json (pass resume=False to start a run there)")
        return
    status = read_run(path).get("status")
    if resume and status == "finished":
        raise RunExistsError(f"{path} holds a finished run: nothing to resume (pass overwrite=True to redo it)")
    if not resume and not overwrite:
        hint = f"pass {RESUME_HINT} to continue it, or " if status != "finished" else ""
        raise RunExistsError(
            f"{path} already holds a {status} RMU run; {hint}pass overwrite=True "
            f"to replace it, or choose another output directory"
        )


class Resumable(Protocol):
    """What a run directory needs from a trainer (:class:`~rmu_lens.rmu.trainer.RMUTrainer` is one).

    ``state_dict()`` holds ``step``, ``history``, ``steering_coeffs``, ``calibrated``,
    ``unit_vectors`` (topic -> u), ``trained`` (HF name -> tensor) and ``optimizer``;
    ``run_facts()`` is what run.json records besides progress (``config``, ``data``, ``topics`` ...).
    """

    model: Any

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def run_facts(self) -> dict[str, Any]: ...


class RunDirectory:
    """Reads and writes one run directory for a trainer, through its state and facts only (:class:`Resumable`).

    ``path`` is the run's directory; ``work`` is where the files are written while training: the
    same directory, or (overwriting an existing run) a hidden staging run inside it that replaces
    the old run's files only once the new run has finished.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.work = self.path
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.lock = DirectoryLock(self.path)
        self.checkpoint_step: int | None = None
        """The step of the checkpoint on disk (None: no checkpoint)."""

    def paths(self) -> dict[str, Path]:
        return {
            "run": self.path / "run.json",
            "control_vectors": self.path / "control_vectors.safetensors",
            "checkpoint": self.path / "checkpoint",
            "model": self.path / "model",
        }

    @property
    def replacing(self) -> bool:
        """Whether this run overwrites an existing run (and so trains into a staging run)."""
        return self.work != self.path

    # -- opening ----------------------------------------------------------------------------

    def open(self, trainer: Resumable, *, resume: bool, overwrite: bool) -> None:
        """Prepare the directory: refuse to clobber a run, resume one, or start fresh; take the lock."""
        check_run_output(self.path, resume=resume, overwrite=overwrite)
        self.path.mkdir(parents=True, exist_ok=True)
        self.acquire()
        try:
            self._recover()
            check_run_output(self.path, resume=resume, overwrite=overwrite)  # again, under the lock
            if resume:
                self._resume(trainer)
                return
            if (self.path / "run.json").is_file():
                self.work = staging_name(self.path / "overwrite", separator="-")
                self.work.mkdir()
            self.base_hashes = {name: tensor_sha256(t) for name, t in trainer.state_dict()["trained"].items()}
            self.write_run_json(trainer, "running")  # first: a directory with run.json is a run
            self.write_control_vectors(trainer)
        except BaseException:
            self.discard_staging()
            self.close()
            raise

    def _locked_error(self, pid: int | None) -> RunLockedError:
        holder = f"process {pid}" if pid else "another process"
        return RunLockedError(
            f"{self.path} is in use by {holder} (lock file {self.path / DirectoryLock.NAME}): wait for it to end "
            f"or stop it, then resume; two runs cannot share a run directory"
        )

    def acquire(self) -> None:
        """Take the directory's lock (a no-op while this object holds it)."""
        if not self.lock.held:
            self.lock.acquire(self._locked_error)

    def close(self) -> None:
        """Release the lock (at the end of training, or when opening failed)."""
        self.lock.release()

    def discard_staging(self) -> None:
        """Remove the staging run of an overwrite (the old run stays as it was)."""
        if self.replacing:
            shutil.rmtree(self.work, ignore_errors=True)
            self.work = self.path

    def _recover(self) -> None:
        """Under the lock, clean what killed processes left: finish or undo a swap, drop staging names."""
        staged = interrupted_swap(self.path)
        if staged is not None:  # an overwrite killed while swapping its finished run in: complete it
            self._swap_in(staged)
        # A checkpoint swap killed between its two renames leaves only checkpoint.old: the last good one.
        checkpoint, old = self.path / "checkpoint", self.path / "checkpoint.old"
        if old.is_dir() and not checkpoint.exists():
            replace_durably(old, checkpoint)
        for name in os.listdir(self.path):
            if _STAGING.match(name):
                target = self.path / name
                shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        fsync_directory(self.path)

    def _resume(self, trainer: Resumable) -> None:
        saved = read_run(self.path)
        facts = trainer.run_facts()
        if saved["config"] != facts["config"]:
            changed = sorted(k for k in saved["config"] if saved["config"][k] != facts["config"].get(k))
            raise RunDirectoryError(f"Cannot resume {self.path}: the config differs from the saved run in {changed}")
        if saved["data"] != facts["data"]:
            raise RunDirectoryError(f"Cannot resume {self.path}: the forget/retain data differ from the saved run (hashes)")
        self.base_hashes = saved["base_tensor_sha256"]
        trained = trainer.state_dict()["trained"]
        current = {name: tensor_sha256(t) for name, t in trained.items()}
        if current != self.base_hashes:
            raise RunDirectoryError(
                f"Cannot resume {self.path}: the model's trained tensors differ from the base model the run "
                f"started from; load the original base model and resume again"
            )
        self.started_at = saved.get("started_at", self.started_at)
        checkpoint = self.paths()["checkpoint"]
        if not saved.get("steps_done", 0) and not checkpoint.exists() and not self.paths()["control_vectors"].exists():
            self.write_control_vectors(trainer)  # killed while opening: nothing trained yet, the vectors are redrawn
        vectors = self._read(self.paths()["control_vectors"], load_tensors)
        trainer.load_state_dict({"unit_vectors": {t: vectors[f"u.{t}"] for t in facts["topics"]}})
        if not checkpoint.exists():
            if saved.get("steps_done", 0):
                raise RunDirectoryError(
                    f"Cannot resume {self.path}: run.json records {saved['steps_done']} steps done but there is no "
                    f"checkpoint/ (deleted?); pass overwrite=True to start again from step 0"
                )
            return  # interrupted before the first checkpoint: start from step 0 with the saved vectors
        state = self._read(checkpoint / "state.json", lambda f: json.loads(Path(f).read_text(encoding="utf-8")))
        tensors = self._read(checkpoint / "trained.safetensors", load_tensors)
        optimizer = self._read(checkpoint / "optimizer.safetensors", load_tensors)
        missing = [name for name in trained if name not in tensors]
        if missing or not isinstance(state.get("step"), int) or len(state.get("history", ())) != state["step"]:
            raise self._damaged(checkpoint, f"missing tensors {missing[:3]}" if missing else "inconsistent state.json")
        trainer.load_state_dict({
            "trained": tensors, "optimizer": _unflatten_optimizer(optimizer, state["optimizer"]), "step": state["step"],
            "history": state["history"], "steering_coeffs": state["steering_coeffs"], "calibrated": True,
        })
        self.checkpoint_step = state["step"]

    def _read(self, file: Path, reader: Any) -> Any:
        if not file.is_file():
            raise self._damaged(file.parent, f"{file.name} is missing")
        try:
            return reader(file)
        except Exception as error:  # safetensors and json raise several kinds for a damaged file
            raise self._damaged(file, f"{type(error).__name__}: {error}") from error

    def _damaged(self, where: Path, what: str) -> RunDirectoryError:
        return RunDirectoryError(
            f"Cannot resume {self.path}: {where} is damaged ({what}); pass overwrite=True to start "
            f"the run again from step 0"
        )

    # -- writing ----------------------------------------------------------------------------

    def write_control_vectors(self, trainer: Resumable) -> None:
        state = trainer.state_dict()
        vectors, coefficients = state["unit_vectors"], state["steering_coeffs"]
        tensors = {f"u.{t}": u for t, u in vectors.items()}
        tensors.update({f"target.{t}": coefficients[t] * u for t, u in vectors.items()})
        atomic_save_tensors(
            self.work / "control_vectors.safetensors", tensors,
            metadata={"steering_coeffs": json.dumps(coefficients), "topics": json.dumps(list(vectors))},
        )

    def write_run_json(self, trainer: Resumable, status: str, steps_done: int | None = None, error: str | None = None) -> None:
        """Write run.json; ``steps_done`` (default: the trainer's step) is the step a resume starts from."""
        state = trainer.state_dict()
        steps_done = state["step"] if steps_done is None else steps_done
        extra = {} if error is None else {"error": error, "resume": f"{RESUME_HINT} continues from step {steps_done}"}
        atomic_write_json(self.work / "run.json", {
            "format": FORMAT,
            "status": status,
            **extra,
            "started_at": self.started_at,
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **trainer.run_facts(),
            "base_tensor_sha256": self.base_hashes,
            "steps_done": steps_done,
            "versions": package_versions(),
            "history": state["history"][:steps_done],
        })

    def checkpoint(self, trainer: Resumable, status: str = "running") -> None:
        """Save trained tensors, optimizer state and history; swap the new checkpoint in atomically.

        The files are staged under a per-process name and fsynced; the swap renames the current
        checkpoint to checkpoint.old, the staged one to checkpoint, then drops the old one. A
        process killed between the renames leaves checkpoint.old, which the next open restores.
        """
        final, old = self.work / "checkpoint", self.work / "checkpoint.old"
        staging = staging_name(final, separator="-")
        staging.mkdir()
        try:
            state = trainer.state_dict()
            atomic_save_tensors(staging / "trained.safetensors", state["trained"])
            tensors, layout = _flatten_optimizer(state["optimizer"])
            atomic_save_tensors(staging / "optimizer.safetensors", tensors)
            atomic_write_json(staging / "state.json", {
                "step": state["step"], "history": state["history"], "steering_coeffs": state["steering_coeffs"],
                "optimizer": layout,
            })
            fsync_tree(staging)
            shutil.rmtree(old, ignore_errors=True)
            if final.exists():
                replace_durably(final, old)
            replace_durably(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)
        self.checkpoint_step = state["step"]
        self.write_control_vectors(trainer)
        self.write_run_json(trainer, status)

    def mark(self, trainer: Resumable, status: str, error: str | None = None) -> None:
        """Record a status (e.g. failed) without touching the last checkpoint, which a resume starts from."""
        self.write_run_json(trainer, status, steps_done=self.checkpoint_step or 0, error=error)

    def fail(self, trainer: Resumable, status: str, error: BaseException, *, consistent: bool) -> None:
        """After an error or an interrupt: keep a resumable state and record what happened.

        ``consistent``: the trainer's weights, optimizer state and step agree (no update half-done),
        so a checkpoint of them is written if it is newer than the one on disk; otherwise the last
        checkpoint stays. An overwrite that fails is discarded and the old run stays as it was.
        Errors while saving (a full disk) keep the last checkpoint; the original error is not masked.
        """
        if self.replacing:
            self.discard_staging()
            return
        message = f"{type(error).__name__}: {error}"
        try:
            if consistent and trainer.state_dict()["step"] > (self.checkpoint_step or 0):
                self.checkpoint(trainer, status)
                self.write_run_json(trainer, status, error=message)
                return
        except OSError:
            pass  # e.g. the disk is full: the previous checkpoint is still whole
        try:
            self.mark(trainer, status, error=message)
        except OSError:
            pass

    def finish(self, trainer: Resumable, status: str) -> None:
        """Save the edited model; a finished run drops its checkpoint, a stopped one keeps it for resuming.

        An overwrite's finished run then replaces the old run; a stopped overwrite is discarded.
        """
        from rmu_lens.models import save_hf_model

        if status == "stopped":
            self.checkpoint(trainer, status="stopped")
        save_hf_model(trainer.model, self.work / "model")
        self.write_control_vectors(trainer)
        self.write_run_json(trainer, status)
        if status == "finished":
            shutil.rmtree(self.work / "checkpoint", ignore_errors=True)
            if self.replacing:
                self._swap_in(self.work)
                self.work = self.path
        else:
            self.discard_staging()

    def _swap_in(self, staged: Path) -> None:
        """Replace this directory's run by the finished run in ``staged``; safe to redo after a kill.

        The old run.json leaves first (from then on the directory reads as mid-swap, which the next
        open completes) and the new run.json arrives last.
        """
        replaced = staging_name(self.path / "replaced", separator="-")
        replaced.mkdir()
        if (self.path / "run.json").exists():
            os.replace(self.path / "run.json", replaced / "run.json")
            fsync_directory(self.path)
        for name in ("control_vectors.safetensors", "model"):
            if (staged / name).exists():
                if (self.path / name).exists():
                    os.replace(self.path / name, replaced / name)
                os.replace(staged / name, self.path / name)
        if (self.path / "checkpoint").exists():  # the old run's: a finished run has none
            os.replace(self.path / "checkpoint", replaced / "checkpoint")
        replace_durably(staged / "run.json", self.path / "run.json")
        shutil.rmtree(replaced, ignore_errors=True)
        shutil.rmtree(staged, ignore_errors=True)


def _flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state as flat tensors plus a JSON layout (param groups, which scalars were Python numbers)."""
    tensors, scalars = {}, {}
    for index, state in state_dict["state"].items():
        for key, value in state.items():
            name = f"{index}.{key}"
            if isinstance(value, torch.Tensor):
                tensors[name] = value
            else:
                scalars[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], layout: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in list(tensors.items()) + list(layout["scalars"].items()):
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in layout["param_groups"]]
    return {"state": state, "param_groups": groups}
