"""The run record: :class:`RMURun`, what one RMU run produced, in memory or read back from its directory.

``RMURun.load(path)`` is the one reader of a run directory's ``run.json`` and
``control_vectors.safetensors``; analysis, audits, the magics and the analyze command all take
their u, c and layer l from it, and :attr:`RMURun.layer` is the one answer to "which layer did RMU
steer" (the block the loss hook point reads, which ``config.layer`` need not be).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rmu_lens.errors import RMULensError, RunDirectoryError
from rmu_lens.rmu.config import RMUConfig

RUN_FILE = "run.json"
VECTORS_FILE = "control_vectors.safetensors"
MODEL_DIR = "model"


class NotARunError(RMULensError, FileNotFoundError):
    """A path given as a run directory holds no run.json."""


def read_run(path: str | os.PathLike) -> dict[str, Any]:
    """The run.json of a run directory, as saved (see :meth:`RMURun.load` for the whole record)."""
    file = Path(path) / RUN_FILE
    if not file.is_file():
        raise NotARunError(f"{path} is not an rmu_lens run directory (no run.json)")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunDirectoryError(
            f"{file} is not readable JSON ({error}): the run record is damaged; pass overwrite=True "
            f"to start the run again, or choose another output directory"
        ) from error


def hook_block(hook_name: str, n_layers: int | None = None) -> int:
    """The block whose output a residual hook point reads (``blocks.{i}.hook_resid_pre`` reads block i-1)."""
    from rmu_lens.rmu.runner import block_output_index

    return block_output_index(hook_name, 10**6 if n_layers is None else n_layers)


@dataclass
class RMURun:
    """The outcome of :func:`~rmu_lens.unlearn`: the edited model, its history and where everything was written.

    A run read back with :meth:`load` has ``model=None`` (its edited model is ``model_dir``) and
    ``record`` holding the run.json as saved.
    """

    model: Any
    config: RMUConfig
    topics: list[str]
    steering_coeffs: dict[str, float]
    control_vectors: dict[str, torch.Tensor]
    """Unit vectors u per topic; the target is ``steering_coeffs[topic] * u``."""
    history: list[dict[str, Any]]
    trained_parameters: list[str]
    status: str
    out: Path | None = None
    paths: dict[str, Path] = field(default_factory=dict)
    n_layers: int | None = None
    """Layers of the model the run trained (from the model, or run.json once read back)."""
    record: dict[str, Any] = field(default_factory=dict)
    """run.json as read by :meth:`load` (empty for a run made in this process)."""

    @property
    def layer(self) -> int:
        """Layer l RMU steered: the block whose output the loss hook point (``config.read_hook``) reads."""
        n_layers = self.model.cfg.n_layers if self.model is not None else self.n_layers
        return hook_block(self.config.read_hook, n_layers)

    @property
    def model_dir(self) -> Path | None:
        """Where the edited model was saved (None for a run without a directory)."""
        if "model" in self.paths:
            return Path(self.paths["model"])
        return self.out / MODEL_DIR if self.out is not None else None

    def targets(self) -> dict[str, torch.Tensor]:
        """c·u per topic."""
        return {t: self.steering_coeffs[t] * self.control_vectors[t] for t in self.topics}

    @classmethod
    def load(cls, path: str | os.PathLike) -> RMURun:
        """Read a run directory: run.json and the control vectors (the model stays on disk, ``model_dir``)."""
        from rmu_lens._io import load_tensors

        directory = Path(path)
        saved = read_run(directory)
        try:
            config = RMUConfig.from_dict(saved["config"])
            topics = [str(t) for t in saved["topics"]]
            coefficients = {t: float(saved["steering_coeffs"][t]) for t in topics}
            n_layers = int(saved["model"]["n_layers"])
        except (KeyError, TypeError, ValueError) as error:
            raise RunDirectoryError(
                f"{directory / RUN_FILE} lacks what a run records ({type(error).__name__}: {error}): it was not "
                f"written by rmu_lens.unlearn, or it is damaged"
            ) from error
        vectors_file = directory / VECTORS_FILE
        if not vectors_file.is_file():
            raise NotARunError(f"{directory} has no {VECTORS_FILE}: is it a complete rmu_lens run directory?")
        try:
            tensors = load_tensors(vectors_file)
        except Exception as error:  # safetensors raises several kinds for a damaged file
            raise RunDirectoryError(f"{vectors_file} is damaged ({type(error).__name__}: {error})") from error
        missing = [t for t in topics if f"u.{t}" not in tensors]
        if missing:
            raise RunDirectoryError(f"{vectors_file} has no control vector for topics {missing}: the run record is damaged")
        return cls(
            model=None,
            config=config,
            topics=topics,
            steering_coeffs=coefficients,
            control_vectors={t: tensors[f"u.{t}"] for t in topics},
            history=list(saved.get("history", [])),
            trained_parameters=[p["bridge_name"] for p in saved.get("trained_parameters", [])],
            status=str(saved.get("status", "")),
            out=directory,
            paths={"run": directory / RUN_FILE, "control_vectors": vectors_file,
                   "checkpoint": directory / "checkpoint", "model": directory / MODEL_DIR},
            n_layers=n_layers,
            record=saved,
        )

    def _repr_html_(self) -> str:
        from html import escape

        last = self.history[-1] if self.history else {}
        rows = "".join(
            f"<tr><td>{escape(str(k))}</td><td>{escape(f'{v:.4g}' if isinstance(v, float) else str(v))}</td></tr>"
            for k, v in last.items()
        )
        where = escape(str(self.out)) if self.out else "not saved"
        return (
            f"<b>RMU run</b> ({escape(self.status)}, {len(self.history)} steps, topics "
            f"{escape(', '.join(self.topics))}) at <code>{where}</code><table>{rows}</table>"
        )
