"""Figures draw the series they name: the data is read back from the Axes and compared with the input.

Representation figures: every dataset's base line (dashed) and unlearned line (solid, labelled)
carry that dataset's metric per layer; probe lines carry each variant's accuracy; the damage map
is the shift map. Training curves: every labelled line is the history series of its label.
"""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_hex

from rmu_lens.analysis.damage import OverlapSweep
from rmu_lens.plots.representations import (
    dataset_colors,
    plot_cos_u,
    plot_damage,
    plot_dispersion,
    plot_norms,
    plot_overlap_sweep,
    plot_pca,
    plot_probes,
)
from rmu_lens.plots.training import training_curves
from tests.test_plots_representations import N_LAYERS, analysis  # noqa: F401  (the shared analysis fixture)
from tests.test_plots_training import make_history


def dataset_lines(ax, collapse) -> dict[str, dict[str, np.ndarray]]:
    """Per dataset, the y data of its base (dashed) and unlearned (solid) lines, found by colour and style."""
    colors = dataset_colors(collapse)
    assert len(set(colors.values())) == len(colors), "datasets must be told apart by colour"
    found: dict[str, dict[str, np.ndarray]] = {}
    for line in ax.get_lines():
        if len(line.get_xdata()) != N_LAYERS or line.get_marker() != "o":
            continue
        name = next(n for n, c in colors.items() if to_hex(c) == to_hex(line.get_color()))
        model = "base" if line.get_linestyle() == "--" else "unlearned"
        assert model not in found.setdefault(name, {}), f"two {model} lines for {name}"
        found[name][model] = np.asarray(line.get_ydata(), dtype=float)
        assert list(line.get_xdata()) == list(collapse.layers)
    return found


def assert_metric_plotted(ax, collapse, metric: str) -> None:
    lines = dataset_lines(ax, collapse)
    assert set(lines) == set(collapse.datasets)
    for name, models in lines.items():
        assert set(models) == {"base", "unlearned"}
        for model, y in models.items():
            np.testing.assert_array_equal(y, np.asarray(collapse.metrics[name][model][metric], dtype=float),
                                          err_msg=f"{metric} {name} {model}")


def test_norm_figure_plots_each_datasets_mean_norm(analysis):  # noqa: F811
    assert_metric_plotted(plot_norms(analysis).axes[0], analysis.collapse, "mean_norm")


def test_cos_u_panels_plot_cos_u_and_cos_u_perp(analysis):  # noqa: F811
    left, right = plot_cos_u(analysis).axes
    assert_metric_plotted(left, analysis.collapse, "cos_u")
    assert_metric_plotted(right, analysis.collapse, "cos_u_perp")


def test_dispersion_panels_plot_their_metrics_in_order(analysis):  # noqa: F811
    axes = plot_dispersion(analysis).axes
    for ax, metric in zip(axes, ("mean_pairwise_cos", "relative_dispersion", "effective_rank")):
        assert_metric_plotted(ax, analysis.collapse, metric)


def test_the_figures_data_differs_between_models_so_a_swap_would_show(analysis):  # noqa: F811
    metrics = analysis.collapse.metrics["bio"]
    assert not np.allclose(metrics["base"]["mean_norm"], metrics["unlearned"]["mean_norm"])


def test_pca_scatters_are_each_models_points(analysis):  # noqa: F811
    pca = analysis.collapse.pca
    for ax, model in zip(plot_pca(analysis).axes, ("base", "unlearned")):
        by_label = {c.get_label(): np.asarray(c.get_offsets()) for c in ax.collections}
        for name, points in pca["points"].items():
            label = f"{name} ({analysis.collapse.datasets[name]['role']})"
            np.testing.assert_array_equal(by_label[label], np.asarray(points[model], dtype=float))
        for topic, target in pca["targets"].items():
            np.testing.assert_array_equal(by_label[f"c·u ({topic})"][0], np.asarray(target, dtype=float)[:2])


def test_probe_lines_are_each_variants_accuracy(analysis):  # noqa: F811
    probe = analysis.probes["knowledge"]
    (ax,) = plot_probes(analysis, "knowledge").axes
    labelled = {line.get_label(): np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()}
    from rmu_lens.plots.representations import VARIANT_STYLES

    for variant, rows in probe.accuracy.items():
        np.testing.assert_array_equal(labelled[VARIANT_STYLES[variant]["label"]], [r["acc"] for r in rows])
    (grouped,) = plot_probes(analysis, "knowledge", group="bio").axes
    labelled = {line.get_label(): list(line.get_ydata()) for line in grouped.get_lines()}
    for variant in probe.accuracy:
        assert labelled[VARIANT_STYLES[variant]["label"]] == probe.by_group[variant]["bio"]


def test_damage_map_is_the_shift_map_and_bars_are_the_drops(analysis):  # noqa: F811
    damage = analysis.damage
    heat, bars, _ = plot_damage(analysis).axes
    names = [r["domain"] for r in damage.rows]
    np.testing.assert_array_equal(np.asarray(heat.images[0].get_array()), np.asarray([damage.shift_map[n] for n in names]))
    assert [p.get_width() for p in bars.patches] == pytest.approx([r["accuracy_drop"] for r in damage.rows])


def test_overlap_sweep_lines_are_the_rows_series():
    rows = [{"overlap": x, "forget_drop": 0.7 - 0.01 * i, "adjacent_drop": 0.1 * i, "adjacent_drop_ci": [0.1 * i - 0.05, 0.1 * i + 0.05],
             "adjacent_shift_at_layer": 0.2 * i + 0.01, "distant_drop": 0.02 * i} for i, x in enumerate((1.0, 0.0, 0.5))]
    ax, twin = plot_overlap_sweep(OverlapSweep(rows)).axes
    ordered = sorted(rows, key=lambda r: r["overlap"])
    labelled = {line.get_label(): list(line.get_ydata()) for line in ax.get_lines() + twin.get_lines()}
    assert labelled["adjacent accuracy drop (95% CI)"] == [r["adjacent_drop"] for r in ordered]
    assert labelled["forget accuracy drop"] == [r["forget_drop"] for r in ordered]
    assert labelled["distant accuracy drop (mean)"] == [r["distant_drop"] for r in ordered]
    assert labelled["adjacent shift 1 − cos at l"] == [r["adjacent_shift_at_layer"] for r in ordered]


def test_training_curves_every_labelled_line_is_its_history_series():
    history = make_history(12)
    loss_axes, norm_axes, cos_axes = training_curves(history).axes[:3]

    def series(key, topic=None):
        rows = [h for h in history if (topic is None or h["topic"] == topic) and key in h]
        return [h["step"] for h in rows], [h[key] for h in rows]

    expected = {
        (0, "retain (× alpha)"): series("retain_loss"),
        (1, "retain"): series("retain_norm"),
        (2, "retain"): series("retain_cos"),
    }
    for topic in ("bio", "cyber"):
        expected[(0, f"forget: {topic}")] = series("forget_loss", topic)
        expected[(1, f"forget: {topic}")] = series("forget_norm", topic)
        expected[(1, f"frozen model: {topic}")] = series("frozen_forget_norm", topic)
        expected[(2, f"forget: {topic}")] = series("forget_cos", topic)
    drawn = {}
    for index, ax in enumerate((loss_axes, norm_axes, cos_axes)):
        for line in ax.get_lines():
            if not line.get_label().startswith("c = "):
                drawn[(index, line.get_label())] = (list(line.get_xdata()), list(line.get_ydata()))
    assert drawn == {key: (list(x), list(y)) for key, (x, y) in expected.items()}
