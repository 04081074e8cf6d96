"""GenerationsExplorer: the controls choose the rows; every prompt and completion is escaped."""

from __future__ import annotations

from tests.test_utility_report import PLANTED, planted_section
from rmu_lens.jupyter.generations import ALL_ROLES, GenerationsExplorer
from rmu_lens.utility.generation import Generations


def two_role_generations() -> Generations:
    section = planted_section()
    forget = section.generations.records[0]
    distant = {**forget, "role": "distant", "prompt": "The castle", "greedy": {"base": "stands", "unlearned": "stood"},
               "sampled": {"base": "rose", "unlearned": "fell"}}
    return Generations(records=[forget, distant], config=section.generations.config)


def test_role_and_decoding_choose_the_rows():
    explorer = GenerationsExplorer(two_role_generations())
    assert len(explorer.rows()) == 2
    explorer.role.value = "distant"
    assert [r["prompt"] for r in explorer.rows()] == ["The castle"]
    assert "stood" in explorer.table.value and "fell" not in explorer.table.value
    explorer.decoding.value = "sampled"
    assert "fell" in explorer.table.value and "stood" not in explorer.table.value
    explorer.role.value = ALL_ROLES
    assert "Question:" in explorer.table.value


def test_planted_markup_is_escaped_in_every_view():
    explorer = GenerationsExplorer(planted_section())
    for decoding in explorer.decoding.options:
        explorer.decoding.value = decoding
        for html in (explorer.table.value, explorer.measures.value):
            assert "<script>" not in html and "<img src=x" not in html and "<h1>" not in html and "<b>bold" not in html
    assert "&lt;script&gt;" in explorer.table.value and "&lt;script&gt;" in explorer.measures.value  # the dataset name
    assert PLANTED not in explorer.table.value
