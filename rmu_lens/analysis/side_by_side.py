"""Several unlearned models of one base, side by side: collapse, damage and accuracy change per model.

    table = side_by_side({"rmu": (recovery_a, analysis_a, comparison_a), "other": (recovery_b, analysis_b, None)})
    table.rows          # one dict per model: per-topic verdict, l̂, ĉ, mean cos; cos(h_u, h_b) per dataset; accuracy change
    table.html()        # the table as an escaped HTML fragment

The same datasets go through every model; :func:`rmu_lens.analysis.recover.recover`'s ``base_cache``
keeps the base model's activations for the estimate, so the base runs once for all models there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["SideBySide", "side_by_side"]


@dataclass
class SideBySide:
    rows: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"format": "rmu_lens.side_by_side.v1", "rows": self.rows}

    def html(self) -> str:
        """One table: a row per model, columns collapse (per topic), shift per dataset, accuracy change per role."""
        from rmu_lens._templates import macro

        if not self.rows:
            return "<p>no models</p>"
        columns = list(dict.fromkeys(k for row in self.rows for k in row if k != "model"))
        cells = [[_fmt(v) for v in [row["model"], *[row.get(c, "") for c in columns]]] for row in self.rows]
        return macro("widgets.html", "side_by_side_table", ["model", *columns], cells)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def side_by_side(models: Mapping[str, tuple[Any, Any, Any]]) -> SideBySide:
    """``{name: (Recovery, Analysis, Comparison | None)}`` -> one row per model."""
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
            for change in comparison.rows:
                row[f"{change.subject}: accuracy change"] = change.delta
        rows.append(row)
    return SideBySide(rows)
