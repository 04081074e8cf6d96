"""The demo's utility step: utility/ files, summary.json "utility" and the report's cells say the same."""

from __future__ import annotations

import json

import pytest

from tests.helpers import ReportHTML
from tests.test_demo import tiny_plan
from rmu_lens.pipeline import run_pipeline
from rmu_lens.utility.generation import GenerationConfig
from rmu_lens.utility.section import UtilitySection


def test_demo_writes_the_utility_section_it_reports(tmp_path):
    out = tmp_path / "out"
    lines: list[str] = []
    plan = tiny_plan(utility_max_texts=2, utility_prompts_per_role=2, generation=GenerationConfig(max_new_tokens=4, min_new_tokens=4))
    run_pipeline(plan, out, progress=False, analysis=False, log=lines.append)
    assert [h.split("]")[0] + "]" for h in lines if h.startswith("[")] == [f"[{i}/6]" for i in range(1, 7)]
    assert any(line.strip().startswith("utility:") for line in lines)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    section = UtilitySection.load(out / "utility")
    assert summary["utility"]["perplexity"] == json.loads(json.dumps(section.summary()["perplexity"]))
    assert set(section.perplexity) == set(plan.analysis_datasets)
    assert [r["role"] for r in section.generations.records] == ["forget"] * 2 + ["adjacent"] * 2 + ["distant"] * 2
    cells = ReportHTML((out / "report.html").read_text(encoding="utf-8")).cells
    for name, row in summary["utility"]["perplexity"].items():
        assert float(cells[f"utility.perplexity.{name}.unlearned.bits_per_byte"]) == pytest.approx(row["unlearned"]["bits_per_byte"], abs=1e-4)
    assert "seconds" in summary and "utility" in summary["seconds"]
    assert "perplexity (lm-eval rolling windows)" in "\n".join(lines)
