"""LiveFront: an Optuna callback that redraws the sweep's Pareto front in Jupyter as trials finish."""

from __future__ import annotations

from typing import Any

import optuna


class LiveFront:
    """Pass in ``sweep(..., callbacks=[LiveFront()])``: one PNG display, updated in place after each trial
    (a PNG, so it shows whatever matplotlib backend the notebook uses).

    ``base`` and ``chance`` are read from the study the sweep set up; ``color_by`` picks the
    searched setting that colours the points. ``updates`` counts the redraws.
    """

    def __init__(self, color_by: str | None = None) -> None:
        self.color_by = color_by
        self.handle: Any = None
        self.updates = 0

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        from IPython.display import Image, display

        from rmu_lens.plots.training import figure_png
        from rmu_lens.sweep.outputs import front_figure
        from rmu_lens.sweep.study import SweepResult

        meta = study.user_attrs.get("sweep", {})
        result = SweepResult(study, study.user_attrs.get("base", {}), meta.get("chance", float("nan")))
        image = Image(data=figure_png(front_figure(result, self.color_by)), format="png")
        if self.handle is None:
            self.handle = display(image, display_id=True)
        else:
            self.handle.update(image)
        self.updates += 1
