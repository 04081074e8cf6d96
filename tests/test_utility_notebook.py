"""notebooks/utility.ipynb runs top to bottom and its explorer shows the perplexity it computed."""

from __future__ import annotations

from tests.test_notebooks import execute, widgets


def test_utility_notebook_runs_and_shows_the_explorer(tmp_path):
    notebook = execute("utility.ipynb", tmp_path)
    html = [state.get("value", "") for state in widgets(notebook, "HTMLModel")]
    assert any('id="utility-perplexity"' in value and 'id="utility-gibberish"' in value for value in html)
    assert any("<th>base, greedy</th>" in value for value in html)
    dropdowns = widgets(notebook, "DropdownModel")
    assert any(state.get("_options_labels") == ["all roles", "forget", "distant"] for state in dropdowns)
