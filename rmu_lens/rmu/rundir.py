"""The run directory: a self-describing record of one RMU run, written atomically.

    out/
      run.json                      config, versions, seed, data hashes, coefficients, history, status
      control_vectors.safetensors   u.<topic> (unit vectors) and target.<topic> (c·u)
      checkpoint/                   trained tensors + optimizer state + state.json (while unfinished)
      model/                        the edited model as a plain HF directory (safetensors + tokenizer)

Checkpoints are written to a fresh directory and swapped in, so a crash leaves the previous one.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rmu_lens._io import atomic_save_tensors, atomic_write_json, load_tensors

if TYPE_CHECKING:
    from rmu_lens.rmu.trainer import RMURun, RMUTrainer

FORMAT = "rmu_lens.run/1"


class RunExistsError(FileExistsError):
    """The output directory already holds a run and neither resume nor overwrite was asked for."""


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


def read_run(path: str | Path) -> dict[str, Any]:
    """The run.json of a run directory."""
    file = Path(path) / "run.json"
    if not file.is_file():
        raise FileNotFoundError(f"{path} is not an rmu_lens run directory (no run.json)")
    return json.loads(file.read_text(encoding="utf-8"))


class RunDirectory:
    """Reads and writes one run directory for a trainer."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")

    def paths(self) -> dict[str, Path]:
        return {
            "run": self.path / "run.json",
            "control_vectors": self.path / "control_vectors.safetensors",
            "checkpoint": self.path / "checkpoint",
            "model": self.path / "model",
        }

    # -- opening ----------------------------------------------------------------------------

    def open(self, trainer: RMUTrainer, *, resume: bool, overwrite: bool) -> None:
        """Prepare the directory: refuse to clobber a run, resume one, or start fresh."""
        existing = (self.path / "run.json").is_file()
        if resume and overwrite:
            raise ValueError("Choose resume or overwrite, not both")
        if existing and resume:
            self._resume(trainer)
            return
        if existing and not overwrite:
            status = read_run(self.path).get("status")
            hint = "pass resume=True (--resume) to continue it, or " if status != "finished" else ""
            raise RunExistsError(
                f"{self.path} already holds a {status} RMU run; {hint}pass overwrite=True (--overwrite) "
                f"to replace it, or choose another output directory"
            )
        if resume:
            raise FileNotFoundError(f"Nothing to resume: {self.path} holds no run.json")
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"Output path {self.path} exists and is not a directory")
        for name in ("checkpoint", "model"):
            shutil.rmtree(self.path / name, ignore_errors=True)
        self.path.mkdir(parents=True, exist_ok=True)
        self.base_hashes = {p.hf_name: tensor_sha256(p.parameter) for p in trainer.trained}
        self.write_control_vectors(trainer)
        self.write_run_json(trainer, "running")

    def _resume(self, trainer: RMUTrainer) -> None:
        saved = read_run(self.path)
        if saved.get("status") == "finished":
            raise RunExistsError(f"{self.path} holds a finished run: nothing to resume (use overwrite to redo it)")
        if saved["config"] != trainer.config.to_dict():
            changed = sorted(k for k in saved["config"] if saved["config"][k] != trainer.config.to_dict().get(k))
            raise ValueError(f"Cannot resume {self.path}: the config differs from the saved run in {changed}")
        data = self.data_summary(trainer)
        if saved["data"] != data:
            raise ValueError(f"Cannot resume {self.path}: the forget/retain data differ from the saved run (hashes)")
        self.base_hashes = saved["base_tensor_sha256"]
        current = {p.hf_name: tensor_sha256(p.parameter) for p in trainer.trained}
        if current != self.base_hashes:
            raise ValueError(
                f"Cannot resume {self.path}: the model's trained tensors differ from the base model the run "
                f"started from; load the original base model and resume again"
            )
        self.started_at = saved.get("started_at", self.started_at)
        vectors = load_tensors(self.paths()["control_vectors"])
        trainer.unit_vectors = {t: vectors[f"u.{t}"] for t in trainer.topics}
        checkpoint = self.paths()["checkpoint"]
        if not (checkpoint / "state.json").is_file():
            return  # interrupted before the first checkpoint: start from step 0 with the saved vectors
        state = json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))
        tensors = load_tensors(checkpoint / "trained.safetensors")
        with torch.no_grad():
            for p in trainer.trained:
                p.parameter.copy_(tensors[p.hf_name].to(p.parameter.device, p.parameter.dtype))
        trainer.optimizer.load_state_dict(_unflatten_optimizer(load_tensors(checkpoint / "optimizer.safetensors"), state["optimizer"]))
        trainer.step = state["step"]
        trainer.history = state["history"]
        trainer.steering_coeffs = state["steering_coeffs"]

    # -- writing ----------------------------------------------------------------------------

    def data_summary(self, trainer: RMUTrainer) -> dict[str, Any]:
        size = trainer.config.batch_size
        return {"forget": [s.summary(size) for s in trainer.forget], "retain": [s.summary(size) for s in trainer.retain]}

    def write_control_vectors(self, trainer: RMUTrainer) -> None:
        tensors = {f"u.{t}": trainer.unit_vectors[t] for t in trainer.topics}
        tensors.update({f"target.{t}": trainer.steering_coeffs[t] * trainer.unit_vectors[t] for t in trainer.topics})
        atomic_save_tensors(
            self.paths()["control_vectors"], tensors,
            metadata={"steering_coeffs": json.dumps(trainer.steering_coeffs), "topics": json.dumps(trainer.topics)},
        )

    def write_run_json(self, trainer: RMUTrainer, status: str) -> None:
        from rmu_lens.rmu.trainer import METRIC_TOKENS

        cfg = trainer.config
        model = trainer.model
        atomic_write_json(self.path / "run.json", {
            "format": FORMAT,
            "status": status,
            "started_at": self.started_at,
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": cfg.to_dict(),
            "model": {
                "name_or_path": str(getattr(model.original_model, "name_or_path", "")),
                "architecture": type(model.original_model).__name__,
                "n_layers": model.cfg.n_layers,
                "d_model": model.cfg.d_model,
                "dtype": str(next(model.parameters()).dtype),
            },
            "read_hook": cfg.read_hook,
            "topics": trainer.topics,
            "steering_coeffs": trainer.steering_coeffs,
            "alphas": trainer.alphas,
            "max_lengths": trainer.max_lengths,
            "control_vectors": "explicit (normalised to unit norm)" if trainer.explicit_control_vectors else f"torch.rand from seed {cfg.seed}, normalised",
            "trained_parameters": [
                {"bridge_name": p.bridge_name, "hf_name": p.hf_name, "shape": list(p.parameter.shape)} for p in trainer.trained
            ],
            "base_tensor_sha256": self.base_hashes,
            "data": self.data_summary(trainer),
            "steps_total": trainer.n_steps,
            "steps_done": trainer.step,
            "loss_tokens": "every position, pads included (reference)" if cfg.reference else "real tokens (pads excluded)",
            "positions": "0..T-1 on every row, left padding (reference)" if cfg.reference else "0..n-1 over real tokens, right padding",
            "metric_tokens": METRIC_TOKENS,
            "versions": package_versions(),
            "history": trainer.history,
        })

    def checkpoint(self, trainer: RMUTrainer, status: str = "running") -> None:
        """Save trained tensors, optimizer state and history; swap the new checkpoint in atomically."""
        final = self.paths()["checkpoint"]
        staging = self.path / "checkpoint.new"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        atomic_save_tensors(staging / "trained.safetensors", {p.hf_name: p.parameter for p in trainer.trained})
        tensors, layout = _flatten_optimizer(trainer.optimizer.state_dict())
        atomic_save_tensors(staging / "optimizer.safetensors", tensors)
        atomic_write_json(staging / "state.json", {
            "step": trainer.step, "history": trainer.history, "steering_coeffs": trainer.steering_coeffs, "optimizer": layout,
        })
        old = self.path / "checkpoint.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        staging.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        self.write_control_vectors(trainer)
        self.write_run_json(trainer, status)

    def mark(self, trainer: RMUTrainer, status: str) -> None:
        """Record a status (e.g. failed) without touching the last checkpoint."""
        self.write_run_json(trainer, status)

    def finish(self, trainer: RMUTrainer, run: RMURun) -> None:
        """Save the edited model; a finished run drops its checkpoint, a stopped one keeps it for resuming."""
        from rmu_lens.models import save_hf_model

        if run.status == "stopped":
            self.checkpoint(trainer, status="stopped")
        save_hf_model(trainer.model, self.paths()["model"])
        self.write_control_vectors(trainer)
        self.write_run_json(trainer, run.status)
        if run.status == "finished":
            shutil.rmtree(self.paths()["checkpoint"], ignore_errors=True)


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
