"""GenerationsExplorer: base vs unlearned completions side by side, per role, in a notebook.

    from rmu_lens.jupyter.generations import GenerationsExplorer
    GenerationsExplorer(section)         # a UtilitySection, or a Generations

A role dropdown and a greedy / sampled toggle choose the rows; above them, the gibberish measures
per role and (for a UtilitySection) the perplexity table. No model is run; every prompt and
completion is escaped.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets

ALL_ROLES = "all roles"


class GenerationsExplorer:
    """Controls ``role`` (Dropdown) and ``decoding`` (ToggleButtons); ``measures`` and ``table`` are HTML."""

    def __init__(self, result: Any) -> None:
        from rmu_lens.report.utility import gibberish_html, perplexity_html

        generations = getattr(result, "generations", result)
        if generations is None or not getattr(generations, "records", None):
            raise ValueError("GenerationsExplorer needs generations: a UtilitySection with generations, or a Generations")
        self.generations = generations
        sampled = any(r.get("sampled") for r in generations.records)
        self.role = widgets.Dropdown(options=[ALL_ROLES, *generations.roles], value=ALL_ROLES, description="prompts")
        self.decoding = widgets.ToggleButtons(options=["greedy", "sampled"] if sampled else ["greedy"], value="greedy")
        perplexity = perplexity_html(result) if hasattr(result, "perplexity") else ""
        self.measures = widgets.HTML(perplexity + gibberish_html(generations))
        self.table = widgets.HTML()
        for control in (self.role, self.decoding):
            control.observe(lambda _change: self.update(), names="value")
        self.widget = widgets.VBox([self.measures, widgets.HBox([self.role, self.decoding]), self.table])
        self.update()

    def rows(self) -> list[dict[str, Any]]:
        """The records the controls select."""
        return [r for r in self.generations.records if self.role.value in (ALL_ROLES, r["role"])]

    def update(self) -> None:
        """Redraw the table for the current role and decoding."""
        from rmu_lens._templates import macro

        kind = self.decoding.value
        rows = [{"role": r["role"], "prompt": r["prompt"], "base": (r.get(kind) or {}).get("base", ""),
                 "unlearned": (r.get(kind) or {}).get("unlearned", "")} for r in self.rows()]
        self.table.value = macro("widgets.html", "generations", rows, kind).strip()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)
