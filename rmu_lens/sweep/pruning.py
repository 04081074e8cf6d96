"""Pruning hopeless trials on the training signals, by a documented rule.

Optuna's ``trial.report`` / ``trial.should_prune`` refuse multi-objective studies, so the sweep does
not use an Optuna pruner. Instead the trainer's step records are checked at checkpoints
(``fractions`` of the trial's steps) and :class:`optuna.TrialPruned` is raised when either

- retain drift: the mean ``retain_cos`` (cosine of updated and frozen retain activations at layer l)
  over the steps since the last checkpoint is below ``min_retain_cos`` — the retain representations
  are wrecked, so retain accuracy is lost whatever happens to the forget set; or
- no forget progress: from ``fractions[progress_from]`` on, the mean forget loss since the last
  checkpoint, each step's divided by its topic's first forget loss, is above ``max_forget_ratio`` —
  the forget activations did not move toward c·u, so forget accuracy will not fall.

The trial is recorded as PRUNED with ``pruned_at`` (step) and ``pruned_because`` user attributes; the
checkpoint signals of every trial are kept in its ``checkpoints`` user attribute.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


class PrunedBySignal(Exception):
    """Raised inside training when the rule says stop; the study turns it into optuna.TrialPruned."""

    def __init__(self, step: int, reason: str) -> None:
        super().__init__(reason)
        self.step = step
        self.reason = reason


@dataclass
class PruneRule:
    """Checkpoint rule (see the module docstring); ``enabled=False`` records the signals without pruning."""

    min_retain_cos: float = 0.9
    max_forget_ratio: float = 0.95
    fractions: tuple[float, ...] = (0.25, 0.5, 0.75)
    progress_from: int = 1
    """Index into ``fractions`` of the first checkpoint that checks forget progress."""
    enabled: bool = True

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fractions"] = list(self.fractions)
        return data


@dataclass
class SignalWatcher:
    """A trainer callback applying a :class:`PruneRule` to one trial's step records."""

    rule: PruneRule
    n_steps: int = 0
    """Steps of the trial; set from the trainer when training starts."""
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    _records: list[dict[str, Any]] = field(default_factory=list)
    _first_forget: dict[str, float] = field(default_factory=dict)

    def on_train_start(self, trainer: Any) -> None:
        self.n_steps = trainer.n_steps

    @property
    def _at(self) -> list[int]:
        return sorted({max(1, min(self.n_steps, round(f * self.n_steps))) for f in self.rule.fractions})

    def on_step(self, record: dict[str, Any]) -> None:
        self._first_forget.setdefault(record["topic"], record["forget_loss"])
        self._records.append(record)
        done = record["step"] + 1
        if done not in self._at or done == self.n_steps:
            return
        window = self._records
        self._records = []
        retain_cos = _mean(r.get("retain_cos") for r in window)
        forget = _mean(r["forget_loss"] for r in window)
        ratio = _mean(r["forget_loss"] / self._first_forget[r["topic"]] if self._first_forget[r["topic"]] else math.nan
                      for r in window)
        index = self._at.index(done)
        self.checkpoints.append({"step": done, "retain_cos": retain_cos, "forget_loss": forget, "forget_ratio": ratio})
        if not self.rule.enabled:
            return
        if retain_cos < self.rule.min_retain_cos:
            raise PrunedBySignal(done, f"retain_cos {retain_cos:.3f} < {self.rule.min_retain_cos} at step {done}")
        if index >= self.rule.progress_from and ratio > self.rule.max_forget_ratio:
            raise PrunedBySignal(done, f"forget loss at {ratio:.3f} of its first value > {self.rule.max_forget_ratio} at step {done}")


def _mean(values: Any) -> float:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else math.nan
