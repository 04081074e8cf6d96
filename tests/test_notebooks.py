"""Notebooks run top to bottom in a fresh kernel, and their outputs show what they claim."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def execute(name: str, workdir: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    return notebook


def test_committed_notebooks_carry_no_outputs():
    for path in NOTEBOOKS.glob("*.ipynb"):
        notebook = nbformat.read(path, as_version=4)
        assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), path.name


@pytest.mark.integration
def test_quickstart_unlearns_and_plots_the_signature(tmp_path):
    notebook = execute("quickstart.ipynb", tmp_path)
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the norm/cosine figure was not drawn"
    assert any("finished" in o.get("text", "") for o in outputs)
    record = json.loads((tmp_path / "runs" / "quickstart" / "run.json").read_text())
    for topic in record["topics"]:
        steps = [h for h in record["history"] if h["topic"] == topic]
        c = record["steering_coeffs"][topic]
        assert abs(steps[-1]["forget_norm"] - c) < abs(steps[0]["frozen_forget_norm"] - c)
