"""Jupyter: the IPython extension (magics) and the widgets (training dashboard, explorers).

| file          | role                                                                          |
|---------------|-------------------------------------------------------------------------------|
| magics.py     | %rmu_unlearn / %%rmu_unlearn, %rmu_eval, %rmu_compare, %rmu_analyze           |
| dashboard.py  | TrainingDashboard (a trainer callback), TrainingJob, start_training (thread)  |
| explorers.py  | LayerExplorer, ProbeExplorer, DamageExplorer, RecoveryExplorer over results   |
| generations.py| GenerationsExplorer: base vs unlearned completions per role, gibberish, perplexity |
| display.py    | Figure → PNG; HTML tables, titles, status lines (templates/widgets.html)      |

    %load_ext rmu_lens ─▶ magics ─▶ rmu_lens.unlearn / evaluate / compare / analysis ─▶ user variables
    trainer ─callbacks─▶ TrainingDashboard ─▶ ipywidgets (Image, progress, Stop → trainer.request_stop)
    Analysis ─▶ explorers (slider / dropdown / buttons) ─▶ figures as PNG in an Image widget

Widgets draw matplotlib Figures with Agg (no pyplot state) and send PNG bytes; all dataset text is
escaped. Names are imported lazily: importing this package loads neither torch nor ipywidgets.
"""

from typing import Any

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "dashboard": ["TrainingDashboard", "TrainingJob", "start_training"],
    "explorers": ["LayerExplorer", "ProbeExplorer", "DamageExplorer", "RecoveryExplorer"],
    "generations": ["GenerationsExplorer"],
    "magics": ["RMULensMagics"],
})
__all__ += ['load_ipython_extension', 'unload_ipython_extension']


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext rmu_lens``: register the magics."""
    from rmu_lens.jupyter.magics import register

    register(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext rmu_lens``: remove the magics."""
    from rmu_lens.jupyter.magics import unregister

    unregister(ipython)
