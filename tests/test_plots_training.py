"""Training and accuracy figures: what they draw equals the run history and the records they were given."""

from __future__ import annotations

import json
import math

import pytest
from matplotlib.figure import Figure

from rmu_lens.eval import EvalResult, compare
from rmu_lens.plots.training import accuracy_bars, accuracy_change, figure_png, ordered_subjects, training_curves


def make_history(n_steps: int = 12) -> list[dict]:
    """Two alternating topics; forget norm rises toward c, cosines as the official log shows them."""
    history = []
    for step in range(n_steps):
        topic = ("bio", "cyber")[step % 2]
        c = 300.0 if topic == "bio" else 250.0
        record = {
            "step": step, "topic": topic, "loss": 10.0 / (step + 1), "forget_loss": 9.0 / (step + 1),
            "retain_loss": 0.01 * (step + 1), "steering_coeff": c, "forget_norm": 120.0 + 15.0 * step,
            "retain_norm": 118.0 + 0.1 * step, "retain_cos": 1.0 - 0.001 * step, "seconds": 0.1,
        }
        if step % 3 == 0:  # metrics_every=3: the frozen-pass metrics are missing on other steps
            record["forget_cos"] = 1.0 - 0.07 * step
            record["frozen_forget_norm"] = 120.0
        history.append(record)
    return history


def line(axes, label: str):
    found = [item for item in axes.get_lines() if item.get_label() == label]
    assert len(found) == 1, [item.get_label() for item in axes.get_lines()]
    return found[0]


def test_training_curves_plot_each_topic_series_from_the_history():
    history = make_history()
    figure = training_curves(history)
    assert isinstance(figure, Figure)
    loss_axes, norm_axes, cos_axes = figure.axes[:3]
    for topic in ("bio", "cyber"):
        rows = [h for h in history if h["topic"] == topic]
        norm = line(norm_axes, f"forget: {topic}")
        assert list(norm.get_xdata()) == [h["step"] for h in rows]
        assert list(norm.get_ydata()) == [h["forget_norm"] for h in rows]
        assert list(line(loss_axes, f"forget: {topic}").get_ydata()) == [h["forget_loss"] for h in rows]
        cosine = line(cos_axes, f"forget: {topic}")
        assert list(cosine.get_xdata()) == [h["step"] for h in rows if "forget_cos" in h]
    assert list(line(cos_axes, "retain").get_ydata()) == [h["retain_cos"] for h in history]


def test_training_curves_draw_each_topics_steering_coefficient():
    figure = training_curves(make_history())
    norm_axes = figure.axes[1]
    assert set(line(norm_axes, "c = 300 (bio)").get_ydata()) == {300.0}
    assert set(line(norm_axes, "c = 250 (cyber)").get_ydata()) == {250.0}


def test_training_curves_read_a_run_directory(tmp_path):
    history = make_history(6)
    (tmp_path / "run.json").write_text(json.dumps({"history": history}), encoding="utf-8")
    figure = training_curves(tmp_path)
    assert list(line(figure.axes[1], "retain").get_ydata()) == [h["retain_norm"] for h in history]


def test_training_curves_refuse_an_empty_history_and_a_missing_run(tmp_path):
    with pytest.raises(ValueError, match="no steps"):
        training_curves([])
    with pytest.raises(FileNotFoundError, match="run directory"):
        training_curves(tmp_path / "missing")
    with pytest.raises(ValueError, match="lack"):
        training_curves([{"step": 0}])


def records(subject: str, right: int, n: int, start: int = 0, task: str = "set") -> list[dict]:
    """n cloze records of one subject, the first ``right`` answered correctly."""
    out = []
    for i in range(n):
        correct = i < right
        out.append({
            "id": f"{subject}-{start + i}", "task": task, "subject": subject, "answer": 0,
            "loglikelihoods": [-1.0, -2.0, -3.0, -4.0] if correct else [-2.0, -1.0, -3.0, -4.0],
            "prediction": 0 if correct else 1, "correct": correct, "pred_norm": 0 if correct else 1, "correct_norm": correct,
        })
    return out


def wilson(right: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval, written out independently of rmu_lens.eval.stats."""
    p = right / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


COUNTS = {"virology": (18, 20), "biology": (15, 24), "history": (20, 25)}
AFTER = {"virology": (5, 20), "biology": (13, 24), "history": (20, 25)}
ROLES = {"virology": "forget", "biology": "adjacent", "history": "distant"}


def result(counts: dict[str, tuple[int, int]]) -> EvalResult:
    rows = []
    for subject, (right, n) in counts.items():
        rows += records(subject, right, n)
    return EvalResult(mode="cloze", records=rows)


def test_accuracy_bars_heights_and_error_bars_are_accuracy_and_wilson_interval():
    figure = accuracy_bars(result(COUNTS), result(AFTER), ROLES)
    axes = figure.axes[0]
    subjects = ["virology", "biology", "history"]  # forget, adjacent, distant
    containers = axes.containers
    bars = [c for c in containers if hasattr(c, "patches")]
    assert [b.get_label() for b in bars] == ["base", "unlearned"]
    for bar_container, counts in zip(bars, (COUNTS, AFTER)):
        heights = [patch.get_height() for patch in bar_container.patches]
        assert heights == pytest.approx([counts[s][0] / counts[s][1] for s in subjects])
        error_lines = bar_container.errorbar.lines[2][0].get_segments()
        for segment, subject in zip(error_lines, subjects):
            low, high = wilson(*counts[subject])
            assert sorted(y for _, y in segment) == pytest.approx([low, high], abs=1e-12)
    labels = [t.get_text() for t in axes.get_xticklabels()]
    assert [label.split("\n")[0] for label in labels] == subjects


def test_accuracy_bars_base_only_and_metric_check():
    figure = accuracy_bars(result(COUNTS))
    assert [c.get_label() for c in figure.axes[0].containers if hasattr(c, "patches")] == ["base"]
    letter = EvalResult(mode="letter", records=[{k: v for k, v in r.items() if k not in ("pred_norm", "correct_norm")}
                                                for r in records("x", 1, 2)])
    with pytest.raises(ValueError, match="acc_norm"):
        accuracy_bars(letter, metric="acc_norm")


def test_accuracy_change_bars_are_the_comparisons_paired_changes():
    comparison = compare(result(COUNTS), result(AFTER), forget_subjects=["virology"])
    figure = accuracy_change(comparison, ROLES)
    axes = figure.axes[0]
    labels = [t.get_text().split(" (")[0] for t in axes.get_yticklabels()]
    widths = {label: patch.get_width() for label, patch in zip(labels, axes.patches)}
    for subject, (right, n) in COUNTS.items():
        assert widths[subject] == pytest.approx(AFTER[subject][0] / n - right / n)
    # the same figure from the comparison's JSON form
    again = accuracy_change(comparison.to_dict(), ROLES)
    assert [p.get_width() for p in again.axes[0].patches] == [p.get_width() for p in axes.patches]


def test_ordered_subjects_group_by_role_then_name():
    roles = {"b": "distant", "a": "forget", "c": "adjacent", "d": "forget"}
    assert ordered_subjects(["b", "c", "d", "a", "z"], roles) == ["a", "d", "c", "b", "z"]


def test_figure_png_renders_a_png_that_decodes_to_the_drawn_pixels():
    import io

    from matplotlib.image import imread
    from matplotlib.patches import Rectangle

    figure = Figure(figsize=(2, 1))
    axes = figure.subplots()
    axes.axis("off")
    axes.add_patch(Rectangle((0, 0), 1, 1, color="#ff0000"))
    png = figure_png(figure, dpi=50)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(io.BytesIO(png))
    assert pixels.ndim == 3 and pixels.shape[0] > 0 and pixels.shape[1] > 0
    centre = pixels[pixels.shape[0] // 2, pixels.shape[1] // 2]
    assert list(centre[:3]) == pytest.approx([1.0, 0.0, 0.0])
