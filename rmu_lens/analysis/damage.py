"""Adjacent-domain damage: join per-subject accuracy changes with each domain's representation shift.

For each domain that is both an evaluated subject (a :class:`rmu_lens.eval.Comparison` row) and an
analysed dataset (a :class:`CollapseAnalysis` entry):

* the shift map: ``1 − mean cos(unlearned, base)`` per layer, and the norm ratio per layer;
* a ranked table (largest accuracy drop first): accuracy before/after with the paired 95% interval,
  shift at layer l, mean shift over layers, the layer where the shift peaks, norm ratio at l;
* Pearson and Spearman correlations across domains between accuracy drop (base − new) and shift
  (at l, and averaged over layers), with n — over all domains and over the non-forget ones.

:class:`OverlapSweep` holds the rows of :func:`rmu_lens.testbed.overlap_sweep` (the testbed at several
overlap settings, one trained model each: the adjacent domain's damage and shift per setting).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rmu_lens.analysis import probes as _probes  # noqa: F401  registered before damage: the report's figure order
from rmu_lens.analysis.collapse import CollapseAnalysis
from rmu_lens.analysis.registry import Analyzer, register_analyzer
from rmu_lens.eval.compare import Comparison
from rmu_lens.results import JSONResult

DAMAGE_FORMAT = "rmu_lens.damage/1"
SWEEP_FORMAT = "rmu_lens.overlap_sweep/1"


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson's r, or None when fewer than 3 pairs or either side is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    dx, dy = x - x.mean(), y - y.mean()
    return float((dx @ dy) / math.sqrt((dx @ dx) * (dy @ dy)))


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n with ties sharing their average rank."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[order[j + 1]] == values[order[i]]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho (Pearson's r of average ranks), or None as :func:`pearson`."""
    if len(x) < 3:
        return None
    return pearson(average_ranks(x), average_ranks(y))


def _normal(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


@dataclass
class DamageAnalysis(JSONResult):
    """Which domains got hurt, where in the network, and whether representation shift predicts it."""

    layer: int
    layers: list[int]
    metric: str
    rows: list[dict[str, Any]]
    """One per domain, largest accuracy drop first (see the module docstring for the fields)."""
    shift_map: dict[str, list[float]] = field(default_factory=dict)
    norm_ratio_map: dict[str, list[float]] = field(default_factory=dict)
    correlations: dict[str, dict[str, Any]] = field(default_factory=dict)
    unmatched: dict[str, list[str]] = field(default_factory=dict)

    FORMAT = DAMAGE_FORMAT
    WHAT = "a damage analysis"

    @classmethod
    def from_results(
        cls, comparison: Comparison, collapse: CollapseAnalysis, subjects: Mapping[str, str] | None = None
    ) -> DamageAnalysis:
        """Join ``comparison`` (per-subject accuracy change) with ``collapse`` (per-dataset shift).

        Datasets and subjects pair by name (case, spaces, ``-`` and ``_`` ignored), or by
        ``subjects`` = ``{dataset: subject}``.
        """
        changes = {_normal(row.subject): row for row in comparison.rows}
        mapping = {name: _normal((subjects or {}).get(name, name)) for name in collapse.datasets}
        unknown = [s for s in (subjects or {}).values() if _normal(s) not in changes]
        if unknown:
            raise ValueError(f"subjects {unknown} are not in the comparison; its subjects: {[r.subject for r in comparison.rows]}")
        li = collapse.index()
        rows = []
        shift_map, norm_map = {}, {}
        for name, key in mapping.items():
            shift = [1.0 - c for c in collapse.shift[name]["cos_unlearned_base"]]
            shift_map[name] = shift
            norm_map[name] = list(collapse.shift[name]["norm_ratio"])
            if key not in changes:
                continue
            change = changes[key]
            peak = int(np.argmax(shift))
            rows.append({
                "domain": name, "subject": change.subject, "role": collapse.datasets[name]["role"],
                "n_questions": change.n, "base_acc": change.base_acc, "new_acc": change.new_acc,
                "accuracy_drop": -change.delta, "drop_ci_low": -change.ci_high, "drop_ci_high": -change.ci_low,
                "significant": change.significant,
                "shift_at_layer": shift[li], "shift_mean": float(np.mean(shift)),
                "shift_peak_layer": collapse.layers[peak], "shift_peak": shift[peak],
                "norm_ratio_at_layer": norm_map[name][li],
            })
        rows.sort(key=lambda r: (-r["accuracy_drop"], r["domain"]))
        matched = {r["domain"] for r in rows}
        correlations = {}
        for scope, members in (("all", rows), ("non_forget", [r for r in rows if r["role"] != "forget"])):
            drops = [r["accuracy_drop"] for r in members]
            for measure in ("shift_at_layer", "shift_mean"):
                values = [r[measure] for r in members]
                correlations[f"{measure}_{scope}"] = {
                    "pearson": pearson(values, drops), "spearman": spearman(values, drops), "n": len(members),
                    "domains": [r["domain"] for r in members],
                }
        return cls(
            layer=collapse.layer, layers=list(collapse.layers), metric=comparison.metric, rows=rows,
            shift_map=shift_map, norm_ratio_map=norm_map, correlations=correlations,
            unmatched={
                "datasets": sorted(set(collapse.datasets) - matched),
                "subjects": sorted(r.subject for r in comparison.rows if r.subject not in {x["subject"] for x in rows}),
            },
        )

    def table(self) -> str:
        """The ranked rows as plain text."""
        header = f"{'domain':16} {'role':9} {'base':>6} {'new':>6} {'drop':>7}  {'shift@l':>8} {'shift mean':>10} {'peak':>5} {'norm@l':>7}"
        lines = [header]
        for r in self.rows:
            lines.append(
                f"{r['domain'][:16]:16} {r['role']:9} {r['base_acc']:6.3f} {r['new_acc']:6.3f} {r['accuracy_drop']:+7.3f}"
                f"{'*' if r['significant'] else ' '} {r['shift_at_layer']:8.4f} {r['shift_mean']:10.4f} "
                f"{r['shift_peak_layer']:5d} {r['norm_ratio_at_layer']:7.3f}"
            )
        corr = self.correlations.get("shift_at_layer_all", {})
        lines.append(
            f"shift = 1 - mean cos(unlearned, base) at layer {self.layer}; * = 95% interval of the change excludes 0; "
            f"Pearson r(shift@l, drop) = {_fmt(corr.get('pearson'))}, Spearman = {_fmt(corr.get('spearman'))} (n={corr.get('n', 0)})"
        )
        return "\n".join(lines)

    def figures(self) -> dict[str, Any]:
        """``damage``: the shift map beside the accuracy drops (none when no domain matched)."""
        from rmu_lens.plots.representations import plot_damage

        return {"damage": plot_damage(self)} if self.rows else {}

    def captions(self) -> dict[str, str]:
        return {"damage": "Representation shift 1 − cos(unlearned, base) per domain and layer beside each domain's "
                          "accuracy drop: domains whose representations moved most are expected to lose the most."}

    def to_dict(self) -> dict[str, Any]:
        return {"format": DAMAGE_FORMAT, **{k: getattr(self, k) for k in self.__dataclass_fields__}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DamageAnalysis:
        cls.check_format(data)
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@register_analyzer("damage", result=DamageAnalysis, requires=("collapse",))
class DamageAnalyzer(Analyzer):
    """The damage table, when ``analyze`` was given a comparison (``rmu_lens.eval.compare``)."""

    def finish(self) -> DamageAnalysis | None:
        inputs = self.inputs
        if inputs.comparison is None:
            return None
        return DamageAnalysis.from_results(inputs.comparison, inputs.results["collapse"], inputs.subjects)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


@dataclass
class OverlapSweep(JSONResult):
    """The testbed's adjacent-domain damage at several overlap settings (one trained testbed each)."""

    rows: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)

    FORMAT = SWEEP_FORMAT
    WHAT = "an overlap sweep"

    def table(self) -> str:
        lines = [f"{'overlap':>7} {'forget drop':>11} {'adjacent drop':>13} {'adjacent shift@l':>16} {'distant drop':>12}"]
        for r in self.rows:
            lines.append(
                f"{r['overlap']:7.2f} {r['forget_drop']:+11.3f} {r['adjacent_drop']:+13.3f} "
                f"{r['adjacent_shift_at_layer']:16.4f} {r['distant_drop']:+12.3f}"
            )
        return "\n".join(lines)

    def figures(self) -> dict[str, Any]:
        """``overlap_sweep``: adjacent damage and shift against the overlap knob."""
        from rmu_lens.plots.representations import plot_overlap_sweep

        return {"overlap_sweep": plot_overlap_sweep(self)} if self.rows else {}

    def to_dict(self) -> dict[str, Any]:
        return {"format": SWEEP_FORMAT, "rows": self.rows, "meta": self.meta}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OverlapSweep:
        cls.check_format(data)
        return cls(rows=data["rows"], meta=data.get("meta", {}))

