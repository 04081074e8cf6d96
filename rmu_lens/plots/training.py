"""Figures of a run and of its evaluation: training curves, per-subject accuracy, per-subject change.

Each function takes results (a run's history, EvalResults, a Comparison) and returns a
``matplotlib.figure.Figure`` built without pyplot, so nothing global changes and figures can be
rendered in threads, notebooks and the HTML report alike (:func:`figure_png`).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from rmu_lens.eval.compare import Comparison
from rmu_lens.eval.results import EvalResult
from rmu_lens.plots.text import plain

ROLE_ORDER = ("forget", "adjacent", "distant", "retain", "collateral", "other")
ROLE_COLORS = {
    "forget": "#c0392b", "adjacent": "#e67e22", "distant": "#2e86c1", "retain": "#2e86c1",
    "collateral": "#7f8c8d", "other": "#7f8c8d",
}
TOPIC_COLORS = ("#c0392b", "#8e44ad", "#d35400", "#16a085", "#2c3e50", "#b7950b")
BASE_COLOR, NEW_COLOR, RETAIN_COLOR = "#95a5a6", "#2c3e50", "#2e86c1"


def figure_png(figure: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes (Agg), for files, widgets and the report."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


# --- training curves ----------------------------------------------------------------------


def run_history(run: Any) -> list[dict[str, Any]]:
    """The step records of an RMURun, a run.json dict, a run directory / run.json path, or a list of records."""
    if isinstance(run, (str, os.PathLike)):
        from rmu_lens.rmu.record import read_run

        path = Path(run)
        if path.is_file() and path.name == "run.json":
            path = path.parent
        if not path.is_dir():
            raise FileNotFoundError(f"{run} is neither a run directory (with run.json) nor a run.json file")
        run = read_run(path)
    if isinstance(run, Mapping):
        if "history" not in run:
            raise ValueError("run.json data has no 'history': pass a run directory written by rmu_lens.unlearn")
        history = run["history"]
    elif hasattr(run, "history"):
        history = run.history
    else:
        history = run
    history = list(history)
    if not history:
        raise ValueError("The run has no steps recorded: nothing to plot")
    missing = [k for k in ("step", "topic", "forget_loss", "retain_loss", "forget_norm", "retain_norm", "retain_cos") if k not in history[0]]
    if missing:
        raise ValueError(f"Step records lack {missing}: pass the history of an rmu_lens RMU run")
    return history


def _series(history: list[dict[str, Any]], key: str, topic: str | None = None) -> tuple[list[int], list[float]]:
    rows = [h for h in history if (topic is None or h["topic"] == topic) and h.get(key) is not None]
    return [h["step"] for h in rows], [float(h[key]) for h in rows]


def training_curves(run: Any, title: str | None = None) -> Figure:
    """Three panels over the steps of an RMU run: losses, layer-l token norms, cos(updated, frozen).

    ``run``: an RMURun, a run directory, a run.json dict or the history list. The norm panel draws
    each topic's steering coefficient c as a dashed line: RMU's signature is the forget norm rising to c
    while the retain norm and cosine stay put.
    """
    history = run_history(run)
    topics = list(dict.fromkeys(h["topic"] for h in history))
    colors = {t: TOPIC_COLORS[i % len(TOPIC_COLORS)] for i, t in enumerate(topics)}
    figure = Figure(figsize=(13, 3.8), layout="constrained")
    loss_axes, norm_axes, cos_axes = figure.subplots(1, 3)

    for topic in topics:
        loss_axes.plot(*_series(history, "forget_loss", topic), color=colors[topic], label=f"forget: {plain(topic)}")
    loss_axes.plot(*_series(history, "retain_loss"), color=RETAIN_COLOR, label="retain (× alpha)")
    loss_axes.set_yscale("log")
    loss_axes.set_title("losses")

    coeffs = {}
    for topic in topics:
        steps, norms = _series(history, "forget_norm", topic)
        norm_axes.plot(steps, norms, color=colors[topic], label=f"forget: {plain(topic)}")
        frozen_steps, frozen = _series(history, "frozen_forget_norm", topic)
        if frozen:
            norm_axes.plot(frozen_steps, frozen, color=colors[topic], linestyle=":", linewidth=1, label=f"frozen model: {plain(topic)}")
        coeffs[topic] = next((float(h["steering_coeff"]) for h in history if h["topic"] == topic and "steering_coeff" in h), None)
    norm_axes.plot(*_series(history, "retain_norm"), color=RETAIN_COLOR, label="retain")
    for topic, c in coeffs.items():
        if c is not None:
            norm_axes.axhline(c, color=colors[topic], linestyle="--", linewidth=1, label=f"c = {c:.3g} ({plain(topic)})")
    norm_axes.set_title("mean token norm at layer l")
    norm_axes.set_ylim(bottom=0)

    for topic in topics:
        steps, cosines = _series(history, "forget_cos", topic)
        if cosines:
            cos_axes.plot(steps, cosines, color=colors[topic], label=f"forget: {plain(topic)}")
    cos_axes.plot(*_series(history, "retain_cos"), color=RETAIN_COLOR, label="retain")
    cos_axes.set_title("cos(updated, frozen) at layer l")
    cos_axes.set_ylim(min(-0.05, cos_axes.get_ylim()[0]), 1.05)

    for axes in (loss_axes, norm_axes, cos_axes):
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7, loc="best")
    figure.suptitle(title or f"RMU training: {len(history)} steps, topics {', '.join(map(plain, topics))}")
    return figure


# --- accuracy -----------------------------------------------------------------------------


def _as_result(result: EvalResult | str | os.PathLike) -> EvalResult:
    return result if isinstance(result, EvalResult) else EvalResult.load(result)


def ordered_subjects(subjects: Sequence[str], roles: Mapping[str, str] | None) -> list[str]:
    """Subjects sorted by role (forget, adjacent, distant, ...), then by name."""
    roles = roles or {}

    def key(subject: str) -> tuple[int, str]:
        role = roles.get(subject, "other")
        return (ROLE_ORDER.index(role) if role in ROLE_ORDER else len(ROLE_ORDER), subject)

    return sorted(subjects, key=key)


def _label_roles(axes: Any, subjects: list[str], roles: Mapping[str, str], vertical: bool = False) -> None:
    labels = axes.get_yticklabels() if vertical else axes.get_xticklabels()
    for label, subject in zip(labels, subjects):
        label.set_color(ROLE_COLORS.get(roles.get(subject, "other"), "#000000"))


def accuracy_bars(
    base: EvalResult | str | os.PathLike,
    unlearned: EvalResult | str | os.PathLike | None = None,
    roles: Mapping[str, str] | None = None,
    *,
    metric: str = "acc",
    chance: float | None = 0.25,
    title: str | None = None,
) -> Figure:
    """Per-subject accuracy with 95% Wilson intervals: base beside unlearned when both are given.

    ``roles`` maps subject -> forget / adjacent / distant (tick labels are coloured by role and
    subjects grouped by it); ``chance`` draws a reference line (None: none).
    """
    results = [("base", _as_result(base), BASE_COLOR)]
    if unlearned is not None:
        results.append(("unlearned", _as_result(unlearned), NEW_COLOR))
    roles = dict(roles or {})
    tables = []
    for label, result, color in results:
        if metric not in result.metrics:
            raise ValueError(f"metric {metric!r} is not in the {label} result ({result.mode} mode has {list(result.metrics)})")
        tables.append((label, result.by_subject(), color))
    subjects = ordered_subjects(list(dict.fromkeys(s for _, table, _ in tables for s in table)), roles)
    key, low_key, high_key = (metric, "ci_low", "ci_high") if metric == "acc" else (metric, f"{metric}_ci_low", f"{metric}_ci_high")

    figure = Figure(figsize=(max(6.0, 1.1 * len(subjects) + 2), 4.2), layout="constrained")
    axes = figure.subplots()
    width = 0.8 / len(tables)
    for index, (label, table, color) in enumerate(tables):
        xs, heights, below, above = [], [], [], []
        for position, subject in enumerate(subjects):
            if subject not in table:
                continue
            row = table[subject]
            xs.append(position + (index - (len(tables) - 1) / 2) * width)
            heights.append(row[key])
            below.append(row[key] - row[low_key])
            above.append(row[high_key] - row[key])
        axes.bar(xs, heights, width=width * 0.95, color=color, label=label, yerr=[below, above], capsize=3,
                 error_kw={"elinewidth": 1, "ecolor": "#555555"})
    if chance is not None:
        axes.axhline(chance, color="#555555", linestyle="--", linewidth=1, label=f"chance ({chance:.0%})")
    axes.set_xticks(range(len(subjects)))
    axes.set_xticklabels(
        [plain(f"{s}\n({roles[s]})" if s in roles else s) for s in subjects],
        rotation=0 if len(subjects) <= 8 else 45, ha="center" if len(subjects) <= 8 else "right", fontsize=8,
    )
    _label_roles(axes, subjects, roles)
    axes.set_ylim(0, 1.05)
    axes.set_ylabel(f"{metric} (95% Wilson interval)")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize=8, loc="upper right", ncols=len(tables) + 1)
    axes.set_title(title or f"accuracy per subject ({results[0][1].mode} mode)")
    return figure


def _comparison_rows(comparison: Comparison | Mapping[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    if isinstance(comparison, Comparison):
        return comparison.metric, [row.to_dict() for row in comparison.rows]
    if isinstance(comparison, Mapping) and "subjects" in comparison:
        return comparison.get("metric", "acc"), list(comparison["subjects"])
    raise TypeError("accuracy_change needs a Comparison (rmu_lens.eval.compare) or the dict its to_dict() / JSON file holds")


def accuracy_change(
    comparison: Comparison | Mapping[str, Any] | str | os.PathLike,
    roles: Mapping[str, str] | None = None,
    *,
    title: str | None = None,
) -> Figure:
    """Change in accuracy per subject (unlearned − base) with 95% paired (Newcombe) intervals.

    ``comparison``: from :func:`rmu_lens.eval.compare`, or its JSON file. ``roles`` as in
    :func:`accuracy_bars`; without it the comparison's forget/collateral flags colour the bars.
    """
    if isinstance(comparison, (str, os.PathLike)):
        comparison = json.loads(Path(comparison).read_text(encoding="utf-8"))
    metric, rows = _comparison_rows(comparison)
    roles = dict(roles or {row["subject"]: row["role"] for row in rows})
    by_subject = {row["subject"]: row for row in rows}
    subjects = ordered_subjects(list(by_subject), roles)[::-1]  # barh draws bottom-up
    figure = Figure(figsize=(7, max(2.5, 0.45 * len(subjects) + 1.2)), layout="constrained")
    axes = figure.subplots()
    deltas = [by_subject[s]["delta"] for s in subjects]
    below = [by_subject[s]["delta"] - by_subject[s]["ci_low"] for s in subjects]
    above = [by_subject[s]["ci_high"] - by_subject[s]["delta"] for s in subjects]
    colors = [ROLE_COLORS.get(roles.get(s, "other"), "#7f8c8d") for s in subjects]
    axes.barh(range(len(subjects)), deltas, xerr=[below, above], color=colors, capsize=3, error_kw={"elinewidth": 1})
    axes.axvline(0, color="#000000", linewidth=0.8)
    axes.set_yticks(range(len(subjects)))
    axes.set_yticklabels([plain(f"{s} ({roles[s]})" if s in roles else s) for s in subjects], fontsize=8)
    _label_roles(axes, subjects, roles, vertical=True)
    lowest = min([d - b for d, b in zip(deltas, below)] + [-0.1])
    highest = max([d + a for d, a in zip(deltas, above)] + [0.1])
    margin = 0.05 * (highest - lowest)
    axes.set_xlim(lowest - margin, highest + margin)
    axes.set_xlabel(f"change in {metric}, unlearned − base (95% paired interval)")
    axes.grid(axis="x", alpha=0.3)
    axes.set_title(title or "what RMU changed, per subject")
    return figure

