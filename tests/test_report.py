"""The HTML report: headline numbers recomputed from records, self-contained, escaped, readable back."""

from __future__ import annotations

import base64
import re
from html import unescape

import pytest
from matplotlib.figure import Figure

from rmu_lens.eval import EvalResult, compare
from rmu_lens.report import Report, RobustnessSection, build_headline, build_report, roles_by_subject
from rmu_lens.report.headline import training_signatures
from tests.helpers import ReportHTML
from tests.test_plots_training import AFTER, COUNTS, ROLES, make_history, records, result, wilson


def parse(html: str) -> ReportHTML:
    return ReportHTML(html)


def pooled(counts: dict[str, tuple[int, int]], subjects: list[str]) -> tuple[float, int]:
    right = sum(counts[s][0] for s in subjects)
    n = sum(counts[s][1] for s in subjects)
    return right / n, n


def test_role_accuracy_pools_the_questions_of_each_role():
    counts = {**COUNTS, "cyber": (10, 10)}
    after = {**AFTER, "cyber": (3, 10)}
    roles = {**ROLES, "cyber": "forget"}
    headline = build_headline(result(counts), result(after), roles)
    rows = {row.role: row for row in headline.accuracy}
    assert list(rows) == ["forget", "adjacent", "distant"]
    base_acc, n = pooled(counts, ["virology", "cyber"])
    after_acc, _ = pooled(after, ["virology", "cyber"])
    assert rows["forget"].n == n == 30
    assert rows["forget"].base_acc == pytest.approx(base_acc)
    assert rows["forget"].unlearned_acc == pytest.approx(after_acc)
    assert rows["forget"].change == pytest.approx(after_acc - base_acc)
    assert rows["forget"].base_ci == pytest.approx(wilson(28, 30))
    assert rows["forget"].subjects == ["cyber", "virology"]


def test_role_accuracy_pairs_questions_by_id():
    base = result(COUNTS)
    after = EvalResult(mode="cloze", records=[r for r in result(AFTER).records if r["id"] != "virology-0"])
    row = build_headline(base, after, ROLES).accuracy[0]
    assert row.n == 19  # the question missing after RMU is left out of both sides
    assert row.base_acc == pytest.approx(17 / 19)


def test_headline_refuses_unknown_subjects_and_double_roles():
    with pytest.raises(ValueError, match="not in the base evaluation"):
        build_headline(result(COUNTS), result(AFTER), {"chemistry": "forget"})
    with pytest.raises(ValueError, match="two roles"):
        roles_by_subject({"forget": ["virology"], "distant": ["virology"]})
    assert roles_by_subject({"forget": ["a"], "distant": ["b", "c"]}) == {"a": "forget", "b": "distant", "c": "distant"}


def test_training_signatures_average_each_topics_last_steps():
    history = make_history(20)
    signatures = training_signatures(history, tail=3)
    bio = [h for h in history if h["topic"] == "bio"]
    assert signatures["bio"]["forget_norm_start"] == bio[0]["forget_norm"]
    assert signatures["bio"]["forget_norm_end"] == pytest.approx(sum(h["forget_norm"] for h in bio[-3:]) / 3)
    cosines = [h["forget_cos"] for h in bio[-3:] if "forget_cos" in h]
    assert signatures["bio"]["forget_cos_end"] == pytest.approx(sum(cosines) / len(cosines))
    assert signatures["bio"]["steering_coeff"] == 300.0 and signatures["bio"]["steps"] == 10


def build(**kwargs):
    return build_report(
        base_eval=result(COUNTS), unlearned_eval=result(AFTER), subject_roles=ROLES, run=make_history(16),
        comparison=compare(result(COUNTS), result(AFTER), forget_subjects=["virology"]), **kwargs,
    )


@pytest.fixture(scope="module")
def report():
    return build()


def test_report_headline_cells_read_back_as_the_headline_numbers(report):
    cells = parse(report.html()).cells
    for row in report.headline.accuracy:
        assert float(cells[f"accuracy.{row.role}.base_acc"]) == pytest.approx(row.base_acc, abs=5e-4)
        assert float(cells[f"accuracy.{row.role}.unlearned_acc"]) == pytest.approx(row.unlearned_acc, abs=5e-4)
        assert int(cells[f"accuracy.{row.role}.n"]) == row.n
    assert float(cells["accuracy.forget.base_acc"]) == pytest.approx(18 / 20, abs=5e-4)
    assert float(cells["accuracy.forget.unlearned_acc"]) == pytest.approx(5 / 20, abs=5e-4)
    signature = report.headline.training["cyber"]
    assert float(cells["training.cyber.forget_norm_end"]) == pytest.approx(signature["forget_norm_end"], abs=0.05)


def test_report_is_self_contained_with_every_figure_embedded(report):
    html = report.html()
    parsed = parse(html)
    assert [f.name for f in report.figures] == ["accuracy", "accuracy_change", "training"]
    assert parsed.figure_ids == [f"figure-{f.name}" for f in report.figures]
    for source, figure in zip(parsed.images, report.figures):
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1]) == figure.png
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", html)
    assert "<script" not in html.lower()
    for figure in report.figures:
        assert figure.caption
    assert [unescape(c) for c in re.findall(r"<figcaption>(.*?)</figcaption>", html, re.S)] == [f.caption for f in report.figures]


def test_report_escapes_text_that_comes_from_data():
    hostile = "<script>alert(1)</script>"
    base = EvalResult(mode="cloze", records=records(hostile, 3, 4) + records("safe", 2, 4))
    after = EvalResult(mode="cloze", records=records(hostile, 1, 4) + records("safe", 2, 4))
    history = [dict(h, topic=hostile if h["topic"] == "bio" else h["topic"]) for h in make_history(6)]
    report = build_report(base_eval=base, unlearned_eval=after, subject_roles={hostile: "forget", "safe": "distant"},
                          run=history, meta={"model": hostile})
    html = report.html()
    assert hostile not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html.lower()


def test_report_shows_a_robustness_section_when_given():
    figure = Figure(figsize=(2, 2))
    figure.subplots().plot([0, 1], [1, 0])
    robustness = {"headlines": {"ablation": "recovers 80% of the removed accuracy"}, "figures": [("recovery", figure, "Recovery.")]}
    report = build(robustness=robustness)
    parsed = parse(report.html())
    assert parsed.cells["robustness.ablation"] == "recovers 80% of the removed accuracy"
    assert "figure-recovery" in parsed.figure_ids
    assert [f.name for f in report.all_figures()][-1] == "recovery"
    with pytest.raises(ValueError, match="headlines"):
        RobustnessSection.from_dict({"figures": []})


def test_report_without_evaluations_keeps_training_only(tmp_path):
    report = build_report(run=make_history(8))
    assert report.headline.accuracy == [] and [f.name for f in report.figures] == ["training"]
    path = report.save(tmp_path / "report.html")
    assert "No evaluation in this report" in path.read_text(encoding="utf-8")
    written = report.save_figures(tmp_path / "figures")
    assert [p.name for p in written] == ["training.png"] and written[0].read_bytes() == report.figures[0].png
    with pytest.raises(ValueError, match="both"):
        build_report(base_eval=result(COUNTS))


def test_report_representation_headline_reads_back_from_cells():
    summary = {
        "layer": 7, "hook": "blocks.7.hook_resid_post",
        "datasets": {
            "virology": {"role": "forget", "norm_base": 120.04, "norm_unlearned": 290.5, "cos_unlearned_base": 0.2312,
                         "norm_ratio": 2.4, "steering_coeff": 300.0, "norm_unlearned_over_c": 0.9683,
                         "cos_u_perp_base": 0.011, "cos_u_perp_unlearned": 0.8123},
            "<b>history</b>": {"role": "distant", "norm_base": 118.0, "norm_unlearned": 118.5, "cos_unlearned_base": 0.991,
                               "norm_ratio": 1.004},
        },
        "knowledge_probe": {"chance": 0.25, "base": 0.8, "transfer": 0.3, "unlearned": 0.7, "by_group": {}},
        "damage": {"ranked": [], "correlation_shift_at_layer": {"pearson": 0.91, "spearman": None, "n": 6}},
    }
    headline = build_headline(representations=summary)
    html = Report(title="t", headline=headline).html()
    cells = parse(html).cells
    assert float(cells["representations.datasets.virology.norm_unlearned"]) == pytest.approx(290.5, abs=0.05)
    assert float(cells["representations.datasets.virology.cos_u_perp_unlearned"]) == pytest.approx(0.8123, abs=5e-4)
    assert cells["representations.datasets.<b>history</b>.steering_coeff"] == "n/a"
    assert "<b>history</b>" not in html
    assert float(cells["representations.knowledge_probe.transfer"]) == 0.3
    assert cells["representations.damage.pearson"] == "0.910" and cells["representations.damage.spearman"] == "n/a"
