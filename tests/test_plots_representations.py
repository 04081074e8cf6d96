"""Representation figures: each returns a Figure with the expected axes and lines, and renders to PNG."""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure

from rmu_lens.analysis import analyze
from rmu_lens.analysis.damage import OverlapSweep
from rmu_lens.eval import Question
from rmu_lens.eval.compare import Comparison, SubjectChange
from rmu_lens.plots.representations import (
    plot_cos_u,
    plot_damage,
    plot_dispersion,
    plot_norms,
    plot_overlap_sweep,
    plot_pca,
    plot_probes,
)
from rmu_lens.plots.training import figure_png
from tests.helpers import edited_pair, texts

N_LAYERS = 3


@pytest.fixture(scope="module")
def analysis():

    base, unlearned = edited_pair(n_layers=N_LAYERS)
    datasets = {"bio": (texts("bio", 8), "forget"), "retain": (texts("retain", 8), "retain"),
                "cyber": (texts("cyber", 8), "adjacent")}
    questions = [Question(f"What colour is thing {i}?", ["red", "blue", "green", "black"], i % 4, "bio", "t", f"q{i}")
                 for i in range(12)]
    comparison = Comparison("acc", [SubjectChange("bio", "forget", 40, 0.9, 0.3, -0.6, -0.7, -0.5),
                                    SubjectChange("cyber", "collateral", 40, 0.9, 0.8, -0.1, -0.2, 0.0),
                                    SubjectChange("retain", "collateral", 40, 0.9, 0.9, 0.0, -0.1, 0.1)], [])
    u = torch.rand(32, generator=torch.Generator().manual_seed(0))
    return analyze(base, unlearned, datasets, control_vectors={"bio": u}, steering_coeffs={"bio": 20.0}, layer=1,
                   questions=questions, comparison=comparison, probe_folds=2, progress=False)


def rendered(figure: Figure, tmp_path, name: str) -> Figure:
    assert isinstance(figure, Figure)
    png = figure_png(figure)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / f"{name}.png").write_bytes(png)
    return figure


def test_norm_figure_has_base_and_unlearned_line_per_dataset_and_c(analysis, tmp_path):
    figure = rendered(plot_norms(analysis), tmp_path, "norms")
    (ax,) = figure.axes
    data_lines = [line for line in ax.get_lines() if len(line.get_xdata()) == N_LAYERS]
    assert len(data_lines) == 2 * 3
    assert any(list(line.get_ydata()) == [20.0, 20.0] for line in ax.get_lines())  # c marked
    assert ax.get_legend() is not None


def test_cos_u_figure_has_two_panels(analysis, tmp_path):
    figure = rendered(plot_cos_u(analysis), tmp_path, "cos_u")
    assert len(figure.axes) == 2
    assert all(len([l for l in ax.get_lines() if len(l.get_xdata()) == N_LAYERS]) == 6 for ax in figure.axes)


def test_dispersion_figure_has_three_metrics(analysis, tmp_path):
    figure = rendered(plot_dispersion(analysis), tmp_path, "dispersion")
    assert len(figure.axes) == 3


def test_pca_figure_shows_both_models_and_the_target(analysis, tmp_path):
    figure = rendered(plot_pca(analysis), tmp_path, "pca")
    assert len(figure.axes) == 2
    for ax in figure.axes:
        assert len(ax.collections) == 3 + 1  # one scatter per dataset, plus c·u


def test_probe_figure_has_three_variants_and_chance(analysis, tmp_path):
    figure = rendered(plot_probes(analysis, "knowledge"), tmp_path, "probes")
    (ax,) = figure.axes
    assert len(ax.get_lines()) == 3 + 1
    domain = rendered(plot_probes(analysis.probes["domain"]), tmp_path, "probes_domain")
    assert len(domain.axes[0].get_lines()) == 4
    grouped = rendered(plot_probes(analysis, "knowledge", group="bio"), tmp_path, "probes_bio")
    assert "bio" in grouped.axes[0].get_title()


def test_damage_figure_has_heatmap_colorbar_and_bars(analysis, tmp_path):
    figure = rendered(plot_damage(analysis), tmp_path, "damage")
    heat, bars, colorbar = figure.axes
    assert heat.images[0].get_array().shape == (3, N_LAYERS)
    assert len(bars.patches) == 3


def test_overlap_sweep_figure(tmp_path):
    rows = [{"overlap": x, "forget_drop": 0.7, "adjacent_drop": 0.1 * i, "adjacent_drop_ci": [0.1 * i - 0.05, 0.1 * i + 0.05],
             "adjacent_shift_at_layer": 0.2 * i, "distant_drop": 0.0} for i, x in enumerate((0.0, 0.5, 1.0))]
    figure = rendered(plot_overlap_sweep(OverlapSweep(rows)), tmp_path, "sweep")
    assert len(figure.axes) == 2
