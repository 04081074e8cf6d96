"""Names from data are drawn literally: a `$` in a subject, topic or dataset name is not mathtext."""

from __future__ import annotations

import pytest
import torch
from matplotlib import cbook

from rmu_lens.eval import EvalResult, compare
from rmu_lens.plots.text import plain
from rmu_lens.plots.training import accuracy_bars, accuracy_change, figure_png, training_curves

ABORTS = "a$^$b"  # mathtext cannot parse "^": the whole figure fails to draw
GARBLES = "cost $5 vs $6"  # drawn as math: italic "5 vs " without the dollars


def every_text(figure) -> list[str]:
    """Every string the figure will draw: titles, labels, tick labels, legend entries."""
    from matplotlib.text import Text

    return [t.get_text() for t in figure.findobj(Text) if t.get_text()]


def assert_drawn_literally(figure, names: list[str]) -> None:
    png = figure_png(figure)  # raised ValueError (mathtext ParseSyntaxException) before escaping
    assert png[:4] == b"\x89PNG"
    texts = every_text(figure)
    for name in names:
        shown = [t for t in texts if plain(name) in t]
        assert shown, (name, texts)
        assert not any(cbook.is_math_text(t) for t in shown), shown


def test_plain_escapes_every_dollar():
    assert plain(GARBLES) == r"cost \$5 vs \$6"
    assert not cbook.is_math_text(plain(GARBLES)) and cbook.is_math_text(GARBLES)


def history(topics: list[str]) -> list[dict]:
    return [{"step": s, "topic": topics[s % len(topics)], "forget_loss": 1.0 / (s + 1), "retain_loss": 0.1,
             "forget_norm": 10.0 + s, "retain_norm": 5.0, "retain_cos": 0.99, "forget_cos": 0.9, "steering_coeff": 20.0,
             "frozen_forget_norm": 10.0} for s in range(6)]


def test_training_curves_draw_topic_names_with_dollars():
    assert_drawn_literally(training_curves(history([ABORTS, GARBLES])), [ABORTS, GARBLES])


def results(subjects: list[str]) -> tuple[EvalResult, EvalResult]:
    def make(shift: int) -> EvalResult:
        records = [{"id": f"{s}/{i}", "task": "t", "subject": s, "answer": 0, "prediction": int((i + shift) % 3 == 0),
                    "correct": (i + shift) % 3 != 0, "loglikelihoods": [-1.0, -2.0, -3.0, -4.0]} for s in subjects for i in range(6)]
        return EvalResult(mode="letter", records=records)

    return make(0), make(1)


def test_accuracy_figures_draw_subject_names_with_dollars():
    base, new = results([ABORTS, GARBLES, "plain"])
    roles = {ABORTS: "forget", GARBLES: "distant"}
    assert_drawn_literally(accuracy_bars(base, new, roles), [ABORTS, GARBLES])
    assert_drawn_literally(accuracy_change(compare(base, new, forget_subjects=[ABORTS])), [ABORTS, GARBLES])


def dollar_analysis():
    """An analysis of two tiny models over datasets whose names hold `$`."""
    from rmu_lens.analysis import analyze
    from tests.helpers import edited_pair, texts

    base, unlearned = edited_pair()
    datasets = {ABORTS: (texts("bio", 4), "forget"), GARBLES: (texts("retain", 4), "retain")}
    u = torch.rand(32, generator=torch.Generator().manual_seed(0))
    return analyze(base, unlearned, datasets, control_vectors={ABORTS: u}, steering_coeffs={ABORTS: 20.0}, layer=1,
                   probes=False, progress=False)


def test_representation_figures_draw_dataset_and_topic_names_with_dollars():
    from rmu_lens.plots.representations import plot_cos_u, plot_dispersion, plot_norms, plot_pca

    analysis = dollar_analysis()
    for plot in (plot_norms, plot_cos_u, plot_dispersion, plot_pca):
        assert_drawn_literally(plot(analysis), [ABORTS, GARBLES])


def test_layer_explorer_draws_dataset_names_with_dollars():
    from rmu_lens.jupyter.explorers import LayerExplorer

    explorer = LayerExplorer(dollar_analysis())
    for view in LayerExplorer.VIEWS:
        explorer.view.value = view
        assert_drawn_literally(explorer.figure(), [ABORTS, GARBLES])


def test_report_with_dollar_subjects_builds():
    from rmu_lens.report import build_report

    base, new = results([ABORTS, GARBLES])
    report = build_report(base_eval=base, unlearned_eval=new, subject_roles={ABORTS: "forget", GARBLES: "distant"},
                          run=history([ABORTS]), comparison=compare(base, new, forget_subjects=[ABORTS]))
    assert ABORTS in report.html() and GARBLES in report.html()


def test_dashboard_draws_topic_names_with_dollars():
    from rmu_lens.jupyter.dashboard import TrainingDashboard

    dashboard = TrainingDashboard(stoppable=False)
    dashboard.topics, dashboard.history = [ABORTS], history([ABORTS])
    assert_drawn_literally(dashboard.figure(), [ABORTS])
