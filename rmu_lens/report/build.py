"""Report: the headline, the figures with one-sentence captions, details; build it from results and save it.

    report = build_report(base_eval=base, unlearned_eval=new, subject_roles=roles, run=run,
                          comparison=comparison, analysis=analysis)
    report.save("report.html")                  # one self-contained file
    report.save_figures("figures/")             # the same figures as PNG files
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rmu_lens.report.headline import Headline, build_headline


@dataclass
class ReportFigure:
    """One figure as PNG bytes, its file stem and a one-sentence caption."""

    name: str
    caption: str
    png: bytes

    @classmethod
    def from_figure(cls, name: str, figure: Any, caption: str) -> ReportFigure:
        """Render a matplotlib Figure (Agg) into a ReportFigure."""
        from rmu_lens.plots.training import figure_png

        return cls(name=name, caption=caption, png=figure_png(figure))


@dataclass
class RobustnessSection:
    """Headline strings (name -> sentence, e.g. "ablation": "recovers 80% of the removed accuracy")
    and figures of recovery audits; the report shows them in their own section."""

    headlines: dict[str, str]
    figures: list[ReportFigure] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RobustnessSection:
        """From ``{"headlines": {...}, "figures": [(name, Figure or PNG bytes, caption), ...]}``."""
        if "headlines" not in data:
            raise ValueError("a robustness section needs 'headlines': a dict of name -> sentence")
        figures = []
        for name, figure, caption in data.get("figures", []):
            figures.append(ReportFigure(name, caption, figure) if isinstance(figure, bytes) else ReportFigure.from_figure(name, figure, caption))
        return cls(headlines={str(k): str(v) for k, v in data["headlines"].items()}, figures=figures)


def write_figures(figures: Sequence[ReportFigure], directory: str | os.PathLike) -> list[Path]:
    """Each figure as ``directory/NAME.png`` (a NAME with ``/`` goes in a subfolder); the paths written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for figure in figures:
        path = directory / f"{figure.name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(figure.png)
        written.append(path)
    return written


@dataclass
class RecoverySection:
    """What was read off the two models (rmu_lens.analysis.recover): one verdict line per topic and for the
    weights, the estimate against a run's recorded u, c and l when there is a run, and the figures."""

    lines: dict[str, str]
    figures: list[ReportFigure] = field(default_factory=list)

    @classmethod
    def from_recovery(cls, recovery: Any, run: Any = None) -> RecoverySection:
        """From a :class:`~rmu_lens.analysis.recover.Recovery`; ``run`` (an RMURun or a run directory) adds
        "estimate vs run" lines: l̂ against l, cos(û, u) and ĉ / c per topic."""
        lines = dict(recovery.verdicts())
        if recovery.nothing_changed:
            lines["weights"] = "nothing changed: the two models are identical"
        recorded = _recorded_run(run)
        if recorded is not None:
            check = recovery.check(recorded.control_vectors, recorded.steering_coeffs, recorded.layer)
            for topic, row in check.items():
                lines[f"estimate vs run: {topic}"] = (
                    f"l̂ {row['layer_hat']} (l {row['layer']}), cos(û, u) {row['cos_u']:.4f}, ĉ/c {row['c_ratio']:.3f}"
                    if row["cos_u"] is not None else f"not collapsed (l {row['layer']})")
        return cls(lines=lines, figures=result_figures(recovery))


def _recorded_run(run: Any) -> Any:
    """An RMURun for ``run`` (an RMURun, or a run directory read with RMURun.load); None for anything else."""
    from rmu_lens.rmu.record import RMURun

    if isinstance(run, RMURun):
        return run
    if isinstance(run, (str, os.PathLike)) and (Path(run) / "run.json").is_file():
        return RMURun.load(run)
    return None


@dataclass
class Report:
    """Everything the HTML report shows. ``meta`` lines go under the title (model, run, settings)."""

    title: str
    headline: Headline
    figures: list[ReportFigure] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)
    """Preformatted text blocks shown at the end (per-subject table, RMU settings)."""
    robustness: RobustnessSection | None = None
    recovery: RecoverySection | None = None
    """The estimate of u, c and l from the two models, with its figures."""
    utility: Any = None
    """A rmu_lens.utility.UtilitySection: perplexity per dataset, generations side by side."""

    def html(self) -> str:
        """The report as one self-contained HTML document."""
        from rmu_lens.report.html import render_html

        return render_html(self)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the HTML file atomically."""
        from rmu_lens._io import atomic_write_text

        return atomic_write_text(path, self.html())

    def save_figures(self, directory: str | os.PathLike) -> list[Path]:
        """Write every figure (recovery and robustness ones included) as ``directory/NAME.png``."""
        return write_figures(self.all_figures(), directory)

    def all_figures(self) -> list[ReportFigure]:
        return (list(self.recovery.figures) if self.recovery else []) + list(self.figures) \
            + (list(self.robustness.figures) if self.robustness else [])


# --- building from results -----------------------------------------------------------------


def _evaluation_figures(base_eval: Any, unlearned_eval: Any, subject_roles: Mapping[str, str], comparison: Any) -> list[ReportFigure]:
    from rmu_lens.plots.training import accuracy_bars, accuracy_change

    figures = [ReportFigure.from_figure(
        "accuracy", accuracy_bars(base_eval, unlearned_eval, subject_roles),
        "Accuracy per question set before and after RMU with 95% Wilson intervals; forget sets should fall to "
        "chance (dashed) while distant sets stay.",
    )]
    if comparison is not None:
        figures.append(ReportFigure.from_figure(
            "accuracy_change", accuracy_change(comparison, subject_roles),
            "Change in accuracy per subject with 95% paired intervals: an interval left of zero on an adjacent or "
            "distant subject is collateral damage.",
        ))
    return figures


def result_figures(result: Any) -> list[ReportFigure]:
    """A result's own figures (``result.figures()``, name -> Figure) with its captions (``result.captions()``).

    Any :class:`rmu_lens.results.Result` works: an Analysis, a CollapseAnalysis, an AuditResult...
    A figure without a caption gets a plain one naming it.
    """
    captions = result.captions() if hasattr(result, "captions") else {}
    return [ReportFigure.from_figure(name, figure, captions.get(name, f"{name.replace('_', ' ').capitalize()}."))
            for name, figure in result.figures().items()]


def build_report(
    *,
    title: str = "RMU report",
    base_eval: Any = None,
    unlearned_eval: Any = None,
    subject_roles: Mapping[str, str] | None = None,
    run: Any = None,
    comparison: Any = None,
    analysis: Any = None,
    robustness: RobustnessSection | Mapping[str, Any] | None = None,
    recovery: Any = None,
    meta: Mapping[str, str] | None = None,
    metric: str = "acc",
    utility: Any = None,
) -> Report:
    """A Report from whatever results exist: evaluations (with subject roles), an RMU run (its history),
    a Comparison, an Analysis, a robustness section, a utility section (rmu_lens.utility.utility_section),
    the estimate of u, c and l (``recovery``: a Recovery or a RecoverySection; with a ``run`` the
    estimate is checked against the recorded u, c and l). Missing pieces are left out, not faked.

    ``run``: an RMURun, a run directory or a run.json dict (its history gives the training figure and
    the layer-l signature).
    """
    from rmu_lens.plots.training import run_history, training_curves

    history = run_history(run) if run is not None else None
    summary = analysis.summary() if analysis is not None else None
    headline = build_headline(base_eval, unlearned_eval, subject_roles or {}, history=history, representations=summary, metric=metric)
    figures: list[ReportFigure] = []
    if base_eval is not None and unlearned_eval is not None:
        figures += _evaluation_figures(base_eval, unlearned_eval, subject_roles or {}, comparison)
    if history is not None:
        figures.append(ReportFigure.from_figure(
            "training", training_curves(history),
            "RMU training: forget loss falls as the forget-text norm at layer l rises to c (dashed) and its "
            "direction leaves the frozen model's, while retain text keeps norm and cosine near 1.",
        ))
    if analysis is not None:
        figures += result_figures(analysis)
    details = {}
    if comparison is not None and hasattr(comparison, "table"):
        details["Per-subject change (paired by question)"] = comparison.table()
    if robustness is not None and not isinstance(robustness, RobustnessSection):
        robustness = RobustnessSection.from_dict(robustness)
    if recovery is not None and not isinstance(recovery, RecoverySection):
        recovery = RecoverySection.from_recovery(recovery, run=run)
    return Report(title=title, headline=headline, figures=figures, meta=dict(meta or {}), details=details, robustness=robustness,
                  recovery=recovery, utility=utility)

