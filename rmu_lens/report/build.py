"""Report: the headline, the figures with one-sentence captions, details; build it from results and save it.

    report = build_report(base_eval=base, unlearned_eval=new, subject_roles=roles, run=run,
                          comparison=comparison, analysis=analysis)
    report.save("report.html")                  # one self-contained file
    report.save_figures("figures/")             # the same figures as PNG files
"""

from __future__ import annotations

import os
from collections.abc import Mapping
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
        """Write every figure (robustness ones included) as ``directory/NAME.png``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for figure in self.all_figures():
            path = directory / f"{figure.name}.png"
            path.write_bytes(figure.png)
            written.append(path)
        return written

    def all_figures(self) -> list[ReportFigure]:
        return list(self.figures) + (list(self.robustness.figures) if self.robustness else [])


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


PROBE_CAPTIONS = {
    "domain": "Linear-probe accuracy per layer for which dataset a text comes from (forget, retain, adjacent): "
              "base probe on the base model, the same probe on the unlearned model, and a probe retrained on it.",
    "knowledge": "Linear-probe accuracy per layer for the correct answer of each question from the last context "
                 "token: if the retrained probe stays well above chance after RMU, the knowledge is still decodable.",
}


def _analysis_figures(analysis: Any) -> list[ReportFigure]:
    """The representation figures of an Analysis (rmu_lens.plots.representations), each with its caption."""
    from rmu_lens.plots.representations import plot_cos_u, plot_damage, plot_dispersion, plot_norms, plot_pca, plot_probes

    layer = analysis.collapse.layer
    figures = [
        ReportFigure.from_figure(
            "norms", plot_norms(analysis),
            f"Mean token norm per layer, base model dashed and unlearned solid: RMU pushes the forget sets toward c "
            f"at layer {layer}, while the other datasets should keep their norms.",
        ),
        ReportFigure.from_figure(
            "cos_u", plot_cos_u(analysis),
            "Cosine of each dataset's tokens with the control vector u and with u⊥ (u minus its all-ones part, "
            "since cos(u, 1) ≈ 0.87): alignment with u⊥ is what shows activations really turned toward u.",
        ),
        ReportFigure.from_figure(
            "pca", plot_pca(analysis),
            f"Tokens at layer {layer} on the first two principal components of both models together: after RMU "
            f"the forget tokens move toward c·u (star), away from the other datasets.",
        ),
        ReportFigure.from_figure(
            "dispersion", plot_dispersion(analysis),
            "Dispersion of each dataset's tokens per layer: a collapse of the forget set to one point shows as "
            "pairwise cosine toward 1 and dispersion and effective rank falling.",
        ),
    ]
    for task, probe in analysis.probes.items():
        figures.append(ReportFigure.from_figure(
            f"probe_{task}", plot_probes(probe),
            PROBE_CAPTIONS.get(task, f"Linear-probe accuracy per layer ({task}), before and after RMU."),
        ))
    if analysis.damage is not None and analysis.damage.rows:
        figures.append(ReportFigure.from_figure(
            "damage", plot_damage(analysis.damage),
            "Representation shift 1 − cos(unlearned, base) per domain and layer beside each domain's accuracy drop: "
            "domains whose representations moved most are expected to lose the most.",
        ))
    return figures


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
    meta: Mapping[str, str] | None = None,
    metric: str = "acc",
    utility: Any = None,
) -> Report:
    """A Report from whatever results exist: evaluations (with subject roles), an RMU run (its history),
    a Comparison, an Analysis, a robustness section, a utility section (rmu_lens.utility.utility_section).
    Missing pieces are left out, not faked.

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
        figures += _analysis_figures(analysis)
    details = {}
    if comparison is not None and hasattr(comparison, "table"):
        details["Per-subject change (paired by question)"] = comparison.table()
    if robustness is not None and not isinstance(robustness, RobustnessSection):
        robustness = RobustnessSection.from_dict(robustness)
    return Report(title=title, headline=headline, figures=figures, meta=dict(meta or {}), details=details, robustness=robustness,
                  utility=utility)

