"""Several unlearned models of one base, side by side: collapse, damage and accuracy change per model.

    table = side_by_side({"rmu": (recovery_a, analysis_a, comparison_a), "other": (recovery_b, analysis_b, None)},
                         subject_roles={"virology": "forget", "biology": "adjacent"})
    table.rows          # one dict per model: per-topic verdict, l̂, ĉ, mean cos; cos(h_u, h_b) per dataset; accuracy change
    table.html()        # the table as an escaped HTML fragment
    table.text()        # the same as plain text

The same datasets (and questions) go through every model. :func:`rmu_lens.analysis.analyze`'s and
:func:`rmu_lens.analysis.recover.recover`'s ``base_cache`` keep the base model's activations, so the
base runs once for all models (``rmu_lens.pipeline.run_side_by_side`` does this).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["SideBySide", "side_by_side"]

SIDE_BY_SIDE_FORMAT = "rmu_lens.side_by_side.v1"


@dataclass
class SideBySide:
    """One row per model (``model`` first, then the columns in the order they first appear)."""

    rows: list[dict[str, Any]]

    @property
    def columns(self) -> list[str]:
        return ["model", *dict.fromkeys(k for row in self.rows for k in row if k != "model")]

    def cells(self) -> list[list[str]]:
        """Every row's values in :attr:`columns` order, formatted (``""`` where a model has no value)."""
        return [[_fmt(row.get(c)) for c in self.columns] for row in self.rows]

    def to_dict(self) -> dict[str, Any]:
        return {"format": SIDE_BY_SIDE_FORMAT, "rows": self.rows}

    def html(self) -> str:
        """One table: a row per model, columns collapse (per topic), shift per dataset, accuracy change per subject."""
        from rmu_lens._templates import macro

        if not self.rows:
            return "<p>no models</p>"
        return macro("widgets.html", "side_by_side_table", self.columns, self.cells())

    def text(self) -> str:
        """The table transposed for a terminal: a line per column, a value per model."""
        from rmu_lens.eval.results import format_table

        if not self.rows:
            return "no models"
        cells = self.cells()
        return format_table(["", *[row[0] for row in cells]],
                            [[column, *[row[i] for row in cells]] for i, column in enumerate(self.columns) if i])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def side_by_side(
    models: Mapping[str, tuple[Any, Any, Any]], subject_roles: Mapping[str, str] | None = None
) -> SideBySide:
    """``{name: (Recovery, Analysis, Comparison | None)}`` -> one row per model.

    Columns: changed tensors; per forget topic the collapse verdict; per dataset cos(h_u, h_b) at l;
    with a comparison, per subject the accuracy change (new − base) labelled with its role from
    ``subject_roles`` (else the comparison's forget / collateral).
    """
    roles = dict(subject_roles or {})
    rows = []
    for name, (recovery, analysis, comparison) in models.items():
        row: dict[str, Any] = {"model": name, "changed tensors": len(recovery.weights.changed) if recovery.weights else None}
        for topic, est in recovery.topics.items():
            row[f"{topic}: collapse"] = (f"layer {est.layer}, ĉ {est.scale:.4g}, cos {est.concentration['mean_cos']:.3f}"
                                         if est.collapsed else ("nothing changed" if recovery.nothing_changed else "not collapsed"))
        summary = analysis.summary()
        for dataset, values in summary["datasets"].items():
            row[f"{dataset} ({values['role']}): cos(h_u, h_b) at l"] = values["cos_unlearned_base"]
        if comparison is not None:
            for change in sorted(comparison.rows, key=lambda r: r.subject):
                row[f"{change.subject} ({roles.get(change.subject, change.role)}): accuracy change"] = change.delta
        rows.append(row)
    return SideBySide(rows)
