"""Sweeps of RMU settings as an Optuna multi-objective study: the forget/retain trade-off as a Pareto front.

| file          | role                                                                              |
|---------------|-----------------------------------------------------------------------------------|
| space.py      | SearchSpace: ranges / choices / fixed values per RMUConfig field, from dict or YAML |
| objectives.py | forget_excess = max(forget acc − chance, 0) ↓, retain (distant) acc ↑; Pareto front |
| reuse.py      | TrialRunner: one model, trained tensors restored bit-exactly, shared batches/prefixes |
| pruning.py    | PruneRule: retain drift / no forget progress at checkpoints → TrialPruned          |
| storage.py    | journal file or RDB storage; trials of dead workers failed and retried            |
| study.py      | sweep() → SweepResult                                                             |
| outputs.py    | trials.csv/json, pareto.png, front/trial_NNNN.json configs, the HTML section        |
| live.py       | LiveFront: the front redrawn in Jupyter after each trial                          |
| cli.py        | ``rmu-lens sweep``                                                                |

``rmu_lens.sweep(...)`` runs :func:`sweep` (the package is callable, as ``rmu_lens.audit`` is); names
are imported lazily so the command line starts without torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_EXPORTS = {
    "LiveFront": "rmu_lens.sweep.live",
    "chance_level": "rmu_lens.sweep.objectives",
    "dominates": "rmu_lens.sweep.objectives",
    "forget_excess": "rmu_lens.sweep.objectives",
    "pareto_front": "rmu_lens.sweep.objectives",
    "PruneRule": "rmu_lens.sweep.pruning",
    "DEFAULT_SPACE": "rmu_lens.sweep.space",
    "SearchSpace": "rmu_lens.sweep.space",
    "SweepSpaceError": "rmu_lens.sweep.space",
    "SweepResult": "rmu_lens.sweep.study",
    "sweep": "rmu_lens.sweep.study",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rmu_lens.sweep' has no attribute {name!r}")


class _CallableModule(types.ModuleType):
    """``rmu_lens.sweep(...)`` runs :func:`sweep`: the package shares the function's name."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from rmu_lens.sweep.study import sweep

        return sweep(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
