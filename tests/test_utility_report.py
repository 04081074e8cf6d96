"""The report's utility section: numbers equal the section's, planted markup in prompts and outputs is escaped."""

from __future__ import annotations

import math

import pytest

from tests.helpers import ReportHTML
from rmu_lens.report import build_report
from rmu_lens.utility.generation import GenerationConfig, Generations
from rmu_lens.utility.perplexity import PerplexityResult
from rmu_lens.utility.section import DomainPerplexity, UtilitySection, question_prompts, utility_section

PLANTED = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def planted_section() -> UtilitySection:
    """A section whose dataset name, prompt and completions carry markup."""
    measures = {"base_loss": 2.0, "repeated_ngram_rate": 0.1, "n_tokens": 5}
    records = [{
        "role": "forget", "prompt": f"Question: {PLANTED}\nAnswer:",
        "greedy": {"base": f"fine {PLANTED}", "unlearned": "</td></tr></table><h1>broken</h1>"},
        "sampled": {"base": "<b>bold</b>", "unlearned": "&amp; & <"},
        "measures": {"base": measures, "unlearned": {**measures, "base_loss": 9.0}},
    }]
    result = PerplexityResult(loglikelihoods=[-40.0], n_words=[10], n_bytes=[50], n_tokens=[12], max_length=64)
    worse = PerplexityResult(loglikelihoods=[-90.0], n_words=[10], n_bytes=[50], n_tokens=[12], max_length=64)
    return UtilitySection(perplexity={f"<i>{PLANTED}</i>": DomainPerplexity("forget", result, worse)},
                          generations=Generations(records=records, config=GenerationConfig()))


def test_planted_markup_in_prompts_outputs_and_names_is_escaped():
    html = build_report(title="t", utility=planted_section()).html()
    assert "<script>" not in html and "<img src=x" not in html and "<h1>broken" not in html and "<b>bold" not in html
    assert "&lt;script&gt;" in html and "&lt;/td&gt;&lt;/tr&gt;&lt;/table&gt;" in html and "&amp;amp; &amp; &lt;" in html


def test_report_cells_equal_the_sections_numbers():
    section = planted_section()
    cells = ReportHTML(build_report(title="t", utility=section).html()).cells
    name = next(iter(section.perplexity))
    row = section.perplexity[name]
    assert float(cells[f"utility.perplexity.{name}.base.bits_per_byte"]) == pytest.approx(40 / 50 / math.log(2), abs=1e-4)
    assert float(cells[f"utility.perplexity.{name}.unlearned.word_perplexity"]) == pytest.approx(math.exp(9.0), abs=0.05)
    assert row.unlearned.byte_perplexity == pytest.approx(math.exp(90 / 50))
    assert float(cells["utility.generations.forget.base_loss.unlearned.mean"]) == 9.0


def test_no_utility_section_without_one():
    assert 'id="utility"' not in build_report(title="t").html()


def test_question_prompts_take_each_roles_subjects_in_turn():
    from rmu_lens.eval import Question

    questions = [Question(f"{s} q{i}?", ["a", "b"], 0, s, "t", f"{s}-{i}") for s in ("bio", "chem", "geo") for i in range(3)]
    prompts = question_prompts(questions, {"bio": "forget", "chem": "forget", "geo": "distant"}, per_role=3)
    assert prompts == {"forget": ["Question: bio q0?\nAnswer:", "Question: chem q0?\nAnswer:", "Question: bio q1?\nAnswer:"],
                       "distant": ["Question: geo q0?\nAnswer:", "Question: geo q1?\nAnswer:", "Question: geo q2?\nAnswer:"]}


def test_utility_section_on_tiny_models_round_trips_and_renders(make_tiny, tmp_path):
    base = make_tiny("llama", n_layers=2, d_model=32, n_heads=2, seed=0)
    unlearned = make_tiny("llama", n_layers=2, d_model=32, n_heads=2, seed=1)
    datasets = {"retain": (["The river rose.", "Glaciers carve valleys slowly over many years."], "retain")}
    prompts = {"forget": [f"The {PLANTED}", "A virus"], "distant": ["The castle"]}
    section = utility_section(base, unlearned, datasets, prompts, generation=GenerationConfig(max_new_tokens=4, min_new_tokens=4))
    loaded = UtilitySection.load(section.save(tmp_path / "utility"))
    assert loaded.summary()["perplexity"] == section.summary()["perplexity"]
    assert [r["greedy"] for r in loaded.generations.records] == [r["greedy"] for r in section.generations.records]
    html = build_report(title="t", utility=loaded).html()
    assert "<script>" not in html
    cells = ReportHTML(html).cells
    metrics = section.perplexity["retain"].unlearned.metrics()
    assert float(cells["utility.perplexity.retain.unlearned.bits_per_byte"]) == pytest.approx(metrics["bits_per_byte"], abs=1e-4)
