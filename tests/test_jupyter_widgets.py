"""The training dashboard and the notebook summaries, on real RMU runs of tiny random models."""

from __future__ import annotations

import json

import pytest

import rmu_lens as rl
from rmu_lens.eval import EvalResult, compare
from rmu_lens.jupyter.dashboard import TrainingDashboard, TrainingJob, history_series, start_training
from rmu_lens.jupyter.display import PNG_SIGNATURE
from rmu_lens.rmu.trainer import NonFiniteLossError
from tests.helpers import texts

LAYER = 2


def small_config(**overrides) -> rl.RMUConfig:
    settings = dict(layer=LAYER, steering_coeff=8.0, alpha=5.0, lr=1e-3, batch_size=2, max_batches=6, max_length=24,
                    retain_max_length=24, checkpoint_every=0)
    settings.update(overrides)
    return rl.RMUConfig(**settings)


def forget_data(n: int = 12) -> dict[str, list[str]]:
    return {"bio": texts("bio", n), "cyber": texts("cyber", n, seed=1)}


def test_dashboard_follows_every_step_of_a_run(make_tiny):
    dashboard = TrainingDashboard(refresh_seconds=0, max_draw_share=1)
    run = rl.unlearn(make_tiny(n_layers=4), forget_data(), texts("retain", 12), small_config(), callbacks=[dashboard],
                     progress=False)
    assert len(run.history) == 6
    assert dashboard.progress.max == 6 and dashboard.progress.value == 6
    assert dashboard.redraws == 1 + 6 + 1  # at start, after each step (no throttle), at the end
    assert bytes(dashboard.image.value).startswith(PNG_SIGNATURE)
    assert "finished" in dashboard.status.value
    assert dashboard.stop_button.disabled
    # what the panels plot is exactly the run's records, split by topic
    panels = history_series(dashboard.history, run.topics)
    for topic in run.topics:
        mine = [h for h in run.history if h["topic"] == topic]
        assert panels["norm"][f"forget: {topic}"] == ([h["step"] for h in mine], [h["forget_norm"] for h in mine])
        assert panels["cos"][f"forget: {topic}"][1] == [h["forget_cos"] for h in mine]
    assert panels["cos"]["retain"][1] == [h["retain_cos"] for h in run.history]


def test_dashboard_figure_draws_the_records_and_each_topics_coefficient(make_tiny):
    dashboard = TrainingDashboard(refresh_seconds=3600)
    run = rl.unlearn(make_tiny(n_layers=4), forget_data(), texts("retain", 12), small_config(steering_coeff=[8.0, 11.0]),
                     callbacks=[dashboard], progress=False)
    loss_axes, norm_axes, cos_axes = dashboard.figure().axes
    lines = {line.get_label(): line for line in norm_axes.lines}
    bio = [h for h in run.history if h["topic"] == "bio"]
    assert list(lines["forget: bio"].get_ydata()) == [h["forget_norm"] for h in bio]
    coefficient_lines = sorted(float(line.get_ydata()[0]) for line in norm_axes.lines if line.get_linestyle() == ":")
    assert coefficient_lines == [8.0, 11.0]
    retain = {line.get_label(): line for line in loss_axes.lines}["retain (×alpha)"]
    assert list(retain.get_ydata()) == [h["retain_loss"] for h in run.history]
    assert dashboard.redraws == 2  # a long refresh interval: only at start and at the end


def test_stop_button_ends_training_after_the_current_step_and_keeps_a_resumable_checkpoint(make_tiny, tmp_path):
    dashboard = TrainingDashboard(refresh_seconds=0)

    def press_stop_at_step_two(record):
        if record["step"] == 2:
            dashboard.stop_button.click()

    out = tmp_path / "run"
    config = small_config(max_batches=40, cycle=True)
    run = rl.unlearn(make_tiny(n_layers=4, seed=5), forget_data(), texts("retain", 12), config, out=out,
                     callbacks=[press_stop_at_step_two, dashboard], progress=False)
    assert run.status == "stopped" and len(run.history) == 3
    assert "stopped" in dashboard.status.value and "checkpoint kept" in dashboard.status.value
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 3
    assert json.loads((out / "run.json").read_text())["status"] == "stopped"
    resumed = rl.unlearn(make_tiny(n_layers=4, seed=5), forget_data(), texts("retain", 12), config, out=out, resume=True,
                         progress=False)
    assert resumed.status == "finished" and len(resumed.history) == 40


def test_background_job_keeps_training_until_stop_is_pressed(make_tiny, tmp_path):
    bridge = make_tiny(n_layers=4, seed=2)
    job = start_training(bridge, forget_data(), texts("retain", 12), small_config(max_batches=100_000, cycle=True),
                         out=tmp_path / "run")
    assert isinstance(job, TrainingJob)
    while len(job.dashboard.history) < 3:  # the thread is training; the notebook's thread is free
        assert not job.wait(0.05), f"training ended early: {job.status} {job.error!r}"
    job.dashboard.stop_button.click()
    run = job.result(timeout=120)
    assert run.status == "stopped" and job.status == "stopped"
    assert 3 <= len(run.history) < 100_000
    assert (tmp_path / "run" / "checkpoint" / "state.json").is_file()
    assert "stopped" in job._repr_html_()


def test_background_job_reraises_a_training_error_and_the_dashboard_shows_it(make_tiny):
    job = start_training(make_tiny(n_layers=4), forget_data(), texts("retain", 12), small_config(steering_coeff=1e30))
    with pytest.raises(NonFiniteLossError):
        job.result(timeout=120)
    assert job.status == "failed"
    assert "failed" in job.dashboard.status.value and "NonFiniteLossError" in job.dashboard.status.value


def test_dashboard_settings_are_checked():
    with pytest.raises(ValueError, match="max_draw_share=0 must be in"):
        TrainingDashboard(max_draw_share=0)
    with pytest.raises(ValueError, match="refresh_seconds=-1 must be >= 0"):
        TrainingDashboard(refresh_seconds=-1)


def test_start_training_rejects_bad_arguments_before_starting_a_thread(make_tiny):
    with pytest.raises(ValueError, match="resume=True needs out="):
        start_training(make_tiny(n_layers=4), forget_data(), texts("retain", 12), small_config(), resume=True)


def test_dashboard_escapes_topic_names(make_tiny):
    dashboard = TrainingDashboard(refresh_seconds=3600)
    topic = "<img src=x onerror=alert(1)>"
    rl.unlearn(make_tiny(n_layers=4), {topic: texts("bio", 8)}, texts("retain", 8), small_config(max_batches=2),
               callbacks=[dashboard], progress=False)
    assert "<img" not in dashboard.title.value + dashboard.stats.value
    assert "&lt;img src=x onerror=alert(1)&gt;" in dashboard.stats.value


def record(question_id: str, subject: str, correct: bool) -> dict:
    return {"id": question_id, "task": "t", "subject": subject, "answer": 0, "loglikelihoods": [0.0, -1.0, -2.0, -3.0],
            "prediction": 0 if correct else 1, "correct": correct}


def test_eval_result_html_shows_accuracy_per_subject_and_escapes_names():
    hostile = "<script>alert('x')</script>"
    result = EvalResult(mode="letter", records=[record("a", hostile, True), record("b", hostile, True),
                                               record("c", hostile, False), record("d", "plain", False)],
                        meta={"model": "<b>model</b>"})
    html = result._repr_html_()
    assert "<script>" not in html and "<b>model</b>" not in html
    assert "&lt;script&gt;" in html and "&lt;b&gt;model&lt;/b&gt;" in html
    assert "0.667" in html  # 2 of 3 right for the hostile subject
    assert "0.500" in html  # 2 of 4 overall


def test_comparison_html_escapes_subjects_and_marks_the_change():
    hostile = "<img src=x>"
    base = EvalResult(mode="letter", records=[record(str(i), hostile, True) for i in range(30)])
    new = EvalResult(mode="letter", records=[record(str(i), hostile, i < 3) for i in range(30)])
    html = compare(base, new, forget_subjects=[hostile])._repr_html_()
    assert "<img" not in html and "&lt;img src=x&gt;" in html
    assert "-0.900" in html  # 27 of 30 questions lost
    assert "#c0392b" in html  # a significant drop is drawn in red


# --- explorers over a real analysis of a tiny model ---------------------------------------------

HOSTILE = "<i>cyber</i>"


@pytest.fixture(scope="module")
def analysis_and_comparison():
    """analyze_run on a tiny model before/after RMU, with a comparison (for damage) and a hostile dataset name."""
    from rmu_lens.analysis import analyze_run
    from rmu_lens.eval import Question, evaluate

    def tiny():
        model, tokenizer = rl.build_random_model("llama", n_layers=4, d_model=64, seed=3)
        return rl.load_model(model, tokenizer=tokenizer)

    base, unlearned = tiny(), tiny()
    config = small_config(steering_coeff=20.0, lr=3e-3, batch_size=4, max_batches=16, cycle=True)
    run = rl.unlearn(unlearned, {"bio": texts("bio", 16)}, texts("retain", 16), config, progress=False)
    questions = [Question(f"Which word fits item {i}?", ["virus", "river", "password", "castle"], i % 4, subject, "t",
                          f"{subject}{i}") for subject in ("bio", "retain", HOSTILE) for i in range(8)]
    comparison = compare(evaluate(base, questions, progress=False), evaluate(unlearned, questions, progress=False),
                         forget_subjects=["bio"])
    datasets = {"bio": (texts("bio", 16, seed=9), "forget"), "retain": (texts("retain", 16, seed=9), "retain"),
                HOSTILE: (texts("cyber", 16, seed=9), "adjacent")}
    analysis = analyze_run(base, run, datasets, comparison=comparison, progress=False, probe_folds=3)
    return analysis, comparison


def test_layer_slider_redraws_and_the_table_follows_the_layer(analysis_and_comparison):
    from rmu_lens.jupyter.explorers import LayerExplorer

    analysis, _ = analysis_and_comparison
    collapse = analysis.collapse
    explorer = LayerExplorer(analysis)
    assert explorer.layer.value == collapse.layer == 2
    first_image = bytes(explorer.image.value)
    explorer.layer.value = 0
    assert bytes(explorer.image.value) != first_image and explorer.redraws == 2
    for row in explorer.rows():
        name = row[0]
        assert row[2:6] == [collapse.metrics[name]["base"]["mean_norm"][0], collapse.metrics[name]["unlearned"]["mean_norm"][0],
                            collapse.metrics[name]["unlearned"]["cos_u"][0], collapse.metrics[name]["unlearned"]["cos_u_perp"][0]]
        assert row[6] == collapse.shift[name]["cos_unlearned_base"][0]
    curves, detail = explorer.figure().axes
    marker = [line for line in curves.lines if list(line.get_xdata()) == [0, 0]]
    assert marker, "the selected layer is not marked"
    bio = [line for line in curves.lines if line.get_label() == "bio"][0]
    assert list(bio.get_ydata()) == collapse.metrics["bio"]["unlearned"]["mean_norm"]
    assert [round(p.get_height(), 9) for p in detail.patches][3:] == [
        round(collapse.metrics[n]["unlearned"]["mean_norm"][0], 9) for n in collapse.datasets]


def test_layer_explorer_dataset_selector_views_and_escaping(analysis_and_comparison):
    from rmu_lens.jupyter.explorers import LayerExplorer

    analysis, _ = analysis_and_comparison
    explorer = LayerExplorer(analysis.collapse)
    assert "<i>" not in explorer.table.value and "&lt;i&gt;cyber&lt;/i&gt;" in explorer.table.value
    explorer.dataset.value = "bio"
    assert [row[0] for row in explorer.rows()] == ["bio"]
    explorer.view.value = "PCA"
    scatter = explorer.figure().axes[0]
    points = analysis.collapse.pca["points"]["bio"]
    sizes = sorted(len(c.get_offsets()) for c in scatter.collections)
    assert sizes == sorted([len(points["base"]), len(points["unlearned"]), 1])  # base, unlearned, c·u
    explorer.view.value = "cos to u"
    labels = {line.get_label() for line in explorer.figure().axes[0].lines}
    assert {"bio", "bio (u⊥)"} <= labels
    with pytest.raises(ValueError, match="layer 99 was not analysed"):
        LayerExplorer(analysis, layer=99)


def test_probe_explorer_picks_a_layer_and_shows_its_confusion_matrix(analysis_and_comparison):
    from rmu_lens.jupyter.explorers import ProbeExplorer

    analysis, _ = analysis_and_comparison
    probe = analysis.probes["domain"]
    explorer = ProbeExplorer(analysis)
    explorer.layer.value = 1
    assert [row[1] for row in explorer.rows()] == [probe.accuracy[v][1]["acc"] for v in probe.accuracy]
    curves, detail = explorer.figure().axes[:2]
    base = [line for line in curves.lines if line.get_label() == "base"][0]
    assert list(base.get_ydata()) == [r["acc"] for r in probe.accuracy["base"]]
    explorer.variant.value = "transfer"
    assert explorer.confusion() == probe.confusion["transfer"][1]
    image = explorer.figure().axes[1].images[0]
    assert image.get_array().tolist() == probe.confusion["transfer"][1]
    # every true row of the matrix sums to that class's number of texts
    assert [sum(row) for row in probe.confusion["transfer"][1]] == [16, 16, 16]


def test_probe_explorer_without_a_confusion_matrix_shows_accuracy_bars(analysis_and_comparison):
    import copy

    from rmu_lens.jupyter.explorers import ProbeExplorer

    analysis, _ = analysis_and_comparison
    bare = copy.deepcopy(analysis.probes["domain"])
    bare.confusion = {}
    explorer = ProbeExplorer({"domain": bare})
    explorer.layer.value = 3
    assert explorer.confusion() is None
    bars = explorer.figure().axes[1].patches
    assert [round(p.get_height(), 12) for p in bars] == [round(bare.accuracy[v][3]["acc"], 12) for v in bare.accuracy]


def test_damage_explorer_click_shows_the_domains_shift_and_subject_changes(analysis_and_comparison):
    from rmu_lens.jupyter.explorers import DamageExplorer

    analysis, comparison = analysis_and_comparison
    damage = analysis.damage
    explorer = DamageExplorer(analysis, comparison)
    explorer.domain.value = "retain"
    shift_axes, change_axes = explorer.figure().axes
    highlighted = [line for line in shift_axes.lines if line.get_label() == "retain"][0]
    assert list(highlighted.get_ydata()) == damage.shift_map["retain"]
    assert [round(p.get_width(), 12) for p in change_axes.patches] == [round(r.delta, 12) for r in comparison.rows]
    assert explorer.row()["domain"] == "retain" and "retain" in explorer.table.value
    explorer.domain.value = HOSTILE
    assert "<i>" not in explorer.table.value + explorer.title.value
    with pytest.raises(ValueError, match="needs a DamageAnalysis"):
        DamageExplorer(type(analysis)(collapse=analysis.collapse))


def test_probe_explorer_switching_probes_keeps_a_valid_layer(analysis_and_comparison):
    import copy

    from rmu_lens.jupyter.explorers import ProbeExplorer

    analysis, _ = analysis_and_comparison
    other = copy.deepcopy(analysis.probes["domain"])
    other.name = "other"
    explorer = ProbeExplorer({"domain": analysis.probes["domain"], "other": other})
    explorer.layer.value = 2
    explorer.probe.value = "other"  # same layers: the chosen layer stays
    assert explorer.layer.value == 2 and "other probe at layer 2" in explorer.table.value


def test_dashboard_end_status_and_title_escape_the_run_path_and_the_error(tmp_path):
    from html import unescape
    from types import SimpleNamespace

    hostile = "<img src=x onerror=alert(1)>"
    out = tmp_path / hostile
    dashboard = TrainingDashboard(refresh_seconds=1e9)
    dashboard.on_train_end(SimpleNamespace(status="stopped", out=out, history=[]))  # what on_train_end reads of a run
    for html in (dashboard.status.value, dashboard.title.value):
        assert "<img" not in html
    assert dashboard.status.value.startswith("<b>stopped</b>") and "checkpoint kept" in dashboard.status.value
    assert f"saved in {out}" in unescape(dashboard.title.value)
    dashboard.on_error(ValueError(hostile))
    assert "<img" not in dashboard.status.value and unescape(dashboard.status.value) == f"<b>failed</b>: ValueError: {hostile}"
