"""Jupyter: the IPython extension (magics) and the widgets (training dashboard, explorers).

| file          | role                                                                          |
|---------------|-------------------------------------------------------------------------------|
| magics.py     | %rmu_unlearn / %%rmu_unlearn, %rmu_eval, %rmu_compare, %rmu_analyze           |
| dashboard.py  | TrainingDashboard (a trainer callback), TrainingJob, start_training (thread)  |
| explorers.py  | LayerExplorer, ProbeExplorer, DamageExplorer over analysis results            |
| generations.py| GenerationsExplorer: base vs unlearned completions per role, gibberish, perplexity |
| display.py    | Figure → PNG, escaped HTML tables shared by widgets and ``_repr_html_``       |

    %load_ext rmu_lens ─▶ magics ─▶ rmu_lens.unlearn / evaluate / compare / analysis ─▶ user variables
    trainer ─callbacks─▶ TrainingDashboard ─▶ ipywidgets (Image, progress, Stop → trainer.request_stop)
    Analysis ─▶ explorers (slider / dropdown / buttons) ─▶ figures as PNG in an Image widget

Widgets draw matplotlib Figures with Agg (no pyplot state) and send PNG bytes; all dataset text is
escaped. Names are imported lazily: importing this package loads neither torch nor ipywidgets.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainingDashboard": "rmu_lens.jupyter.dashboard",
    "TrainingJob": "rmu_lens.jupyter.dashboard",
    "start_training": "rmu_lens.jupyter.dashboard",
    "LayerExplorer": "rmu_lens.jupyter.explorers",
    "ProbeExplorer": "rmu_lens.jupyter.explorers",
    "DamageExplorer": "rmu_lens.jupyter.explorers",
    "GenerationsExplorer": "rmu_lens.jupyter.generations",
    "RMULensMagics": "rmu_lens.jupyter.magics",
}
__all__ = sorted(_EXPORTS) + ["load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext rmu_lens``: register the magics."""
    from rmu_lens.jupyter.magics import register

    register(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext rmu_lens``: remove the magics."""
    from rmu_lens.jupyter.magics import unregister

    unregister(ipython)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rmu_lens.jupyter' has no attribute {name!r}")
