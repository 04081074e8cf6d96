"""Notebooks run top to bottom in a fresh kernel, and their outputs and widgets show what they claim."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(work|tmp|root|home|Users)/")


def execute(name: str, workdir: Path, parameters: dict | None = None) -> nbformat.NotebookNode:
    """Run a notebook in ``workdir``; ``parameters`` are set in a cell after the one tagged ``parameters``."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    if parameters:
        index = next(i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", []))
        assignments = "\n".join(f"{key} = {value!r}" for key, value in parameters.items())
        notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(assignments))
    NotebookClient(notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    errors = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == "error"]
    assert not errors, "\n".join("\n".join(e.traceback) for e in errors)
    return notebook


def outputs(notebook: nbformat.NotebookNode) -> list:
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]


def text_of(notebook: nbformat.NotebookNode) -> str:
    """Everything the notebook printed or displayed as text or HTML."""
    parts = []
    for output in outputs(notebook):
        parts.append(output.get("text", ""))
        data = output.get("data", {})
        parts += [data.get("text/plain", ""), data.get("text/html", "")]
    return "\n".join(parts)


def html_tables(notebook: nbformat.NotebookNode, headers: list[str]) -> list[list[list[str]]]:
    """The rows (cell texts) of every displayed HTML table whose header row is ``headers``."""
    tables = []
    for output in outputs(notebook):
        html = output.get("data", {}).get("text/html", "")
        for table in re.findall(r"<table.*?</table>", html, flags=re.S):
            if re.findall(r"<th(?:\s[^>]*)?>(.*?)</th>", table) == headers:
                rows = [re.findall(r"<td(?:\s[^>]*)?>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", table)]
                tables.append([row for row in rows if row])
    return tables


def widgets(notebook: nbformat.NotebookNode, model_name: str) -> list[dict]:
    """States of the widgets of one model class, from the widget state nbclient saved in the notebook."""
    state = notebook.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    return [model["state"] for model in state.values() if model["model_name"] == model_name]


def test_committed_notebooks_carry_no_outputs_or_machine_paths():
    names = sorted(path.name for path in NOTEBOOKS.glob("*.ipynb"))
    assert names == ["adjacent_damage.ipynb", "collapse_analysis.ipynb", "probes.ipynb", "published_checkpoint.ipynb",
                     "quickstart.ipynb", "sweep.ipynb", "testbed_walkthrough.ipynb", "utility.ipynb"]
    for path in NOTEBOOKS.glob("*.ipynb"):
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert not cell.get("outputs") and cell.get("execution_count") is None, path.name
            assert not ABSOLUTE_PATH.search(cell.source), f"{path.name}: absolute path in {cell.source[:80]!r}"
        assert "widgets" not in notebook.metadata, f"{path.name} carries saved widget state"


@pytest.mark.integration
def test_quickstart_unlearns_evaluates_and_plots_the_signature(tmp_path, smollm2_dir):
    from rmu_lens.eval import EvalResult

    notebook = execute("quickstart.ipynb", tmp_path)
    assert any("image/png" in o.get("data", {}) for o in outputs(notebook)), "the norm/cosine figure was not drawn"
    assert any("finished" in o.get("text", "") for o in outputs(notebook))
    record = json.loads((tmp_path / "runs" / "quickstart" / "run.json").read_text())
    for topic in record["topics"]:
        steps = [h for h in record["history"] if h["topic"] == topic]
        c = record["steering_coeffs"][topic]
        assert abs(steps[-1]["forget_norm"] - c) < abs(steps[0]["frozen_forget_norm"] - c)
    # the dashboard followed the whole run
    progress = [w for w in widgets(notebook, "IntProgressModel") if w.get("description") == "steps"]
    assert len(progress) == 1 and progress[0]["value"] == progress[0]["max"] == len(record["history"])
    assert any("finished" in w.get("value", "") for w in widgets(notebook, "HTMLModel"))
    assert any(w.get("format") == "png" for w in widgets(notebook, "ImageModel"))
    # what was removed and what was kept, from the evaluations the notebook saved
    before = EvalResult.load(tmp_path / "runs" / "quickstart" / "eval_before.json").by_subject()
    after = EvalResult.load(tmp_path / "runs" / "quickstart" / "eval_after.json").by_subject()
    forget_drop = before["virology"]["acc"] - after["virology"]["acc"]
    distant_drop = before["geography"]["acc"] - after["geography"]["acc"]
    assert forget_drop > distant_drop + 0.1, (before, after)
    assert "Comparison" in text_of(notebook)


def test_sweep_notebook_redraws_the_front_in_one_output(tmp_path):
    import optuna

    notebook = execute("sweep.ipynb", tmp_path, {"N_TRIALS": 3})
    live_cell = next(c for c in notebook.cells if c.cell_type == "code" and "LiveFront(" in c.source)
    images = [o for o in live_cell.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1  # one display, updated in place after each trial
    assert "front redrawn 3 times" in text_of(notebook)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "sweeps" / "tiny" / "study.journal")))
    trials = optuna.load_study(study_name="rmu-sweep", storage=storage).trials
    assert len(trials) == 3 and all(t.state.name == "COMPLETE" for t in trials)


@pytest.mark.integration
def test_testbed_walkthrough_measures_with_the_magics(tmp_path, testbed):
    notebook = execute("testbed_walkthrough.ipynb", tmp_path)
    text = text_of(notebook)
    assert "the cell body is the testbed preset with 100 steps: True" in text
    record = json.loads((tmp_path / "runs" / "walkthrough" / "run.json").read_text())
    assert record["status"] == "finished" and record["topics"] == [testbed.forget_domain]
    progress = [w for w in widgets(notebook, "IntProgressModel") if w.get("description") == "steps"]
    assert len(progress) == 1 and progress[0]["value"] == progress[0]["max"] == 100
    groups = html_tables(notebook, ["group", "n", "before", "after", "change"])
    assert len(groups) == 1, "the accuracy-by-group table is missing"
    changes = {row[0]: (float(row[2]), float(row[3])) for row in groups[0] if row[0] in testbed.domains}
    assert set(changes) == set(testbed.domains), changes
    assert f"{testbed.adjacent_domain} (shared attributes)" in [row[0] for row in groups[0]]
    before, after = changes[testbed.forget_domain]
    assert before > 0.6 and after < 0.4  # pathogens: known, then near chance (0.25)
    for domain in testbed.distant_domains:
        assert changes[domain][1] > changes[domain][0] - 0.1  # distant domains keep their accuracy


@pytest.mark.integration
def test_collapse_analysis_explores_layers(tmp_path, testbed, testbed_run_dir):
    from rmu_lens.analysis import Analysis

    notebook = execute("collapse_analysis.ipynb", tmp_path, {"RUN_DIR": str(testbed_run_dir)})
    analysis = Analysis.load(tmp_path / "analysis" / "collapse")
    collapse = analysis.collapse
    sliders = [w for w in widgets(notebook, "SelectionSliderModel") if w.get("description") == "layer"]
    assert len(sliders) == 1 and sliders[0]["_options_labels"] == [str(x) for x in collapse.layers]
    assert collapse.layers[sliders[0]["index"]] == collapse.layer
    dropdowns = [w for w in widgets(notebook, "DropdownModel") if w.get("description") == "dataset"]
    assert dropdowns[0]["_options_labels"][1:] == list(collapse.datasets)
    assert any(f"layer {collapse.layer} (blocks.{collapse.layer}.hook_resid_post)" in w.get("value", "")
               for w in widgets(notebook, "HTMLModel"))
    forget = testbed.forget_domain
    c = collapse.steering_coeffs[collapse.datasets[forget]["topic"]]
    assert abs(collapse.value(forget, "mean_norm") - c) < abs(collapse.value(forget, "mean_norm", "base") - c)
    for distant in testbed.distant_domains:
        assert collapse.value(distant, "cos_unlearned_base") > collapse.value(forget, "cos_unlearned_base")


@pytest.mark.integration
def test_probes_notebook_shows_probe_accuracy_per_layer(tmp_path, testbed, testbed_run_dir):
    from rmu_lens.analysis import Analysis

    notebook = execute("probes.ipynb", tmp_path, {"RUN_DIR": str(testbed_run_dir)})
    analysis = Analysis.load(tmp_path / "analysis" / "probes")
    knowledge = analysis.probes["knowledge"]
    dropdowns = [w for w in widgets(notebook, "DropdownModel") if w.get("description") == "probe"]
    assert len(dropdowns) == 1 and dropdowns[0]["_options_labels"] == ["domain", "knowledge"]
    assert dropdowns[0]["index"] == 1  # the notebook picks the knowledge probe
    sliders = [w for w in widgets(notebook, "SelectionSliderModel") if w.get("description") == "layer"]
    assert sliders and sliders[0]["_options_labels"] == [str(x) for x in knowledge.layers]
    last = len(knowledge.layers) - 1
    assert any(f"knowledge probe at layer {knowledge.layers[last]}" in w.get("value", "")
               for w in widgets(notebook, "HTMLModel"))
    hook = f"blocks.{analysis.collapse.layer}.hook_resid_post"
    i = knowledge.hook_names.index(hook)
    assert knowledge.accuracy["base"][i]["ci_low"] > knowledge.chance  # the base model's answers are decodable
    assert knowledge.by_group["transfer"][testbed.forget_domain][i] < knowledge.by_group["base"][testbed.forget_domain][i]


@pytest.mark.integration
def test_adjacent_damage_ranks_domains_and_explores_them(tmp_path, testbed, testbed_run_dir):
    from rmu_lens.analysis import Analysis

    notebook = execute("adjacent_damage.ipynb", tmp_path, {"RUN_DIR": str(testbed_run_dir)})
    damage = Analysis.load(tmp_path / "analysis" / "damage").damage
    buttons = [w for w in widgets(notebook, "ToggleButtonsModel") if w.get("description") == "domain"]
    assert len(buttons) == 1 and sorted(buttons[0]["_options_labels"]) == sorted(testbed.domains)
    assert buttons[0]["_options_labels"][buttons[0]["index"]] == testbed.adjacent_domain
    drops = {row["domain"]: row["accuracy_drop"] for row in damage.rows}
    assert damage.rows[0]["domain"] == testbed.forget_domain
    assert drops[testbed.adjacent_domain] > max(drops[d] for d in testbed.distant_domains)
    assert f"{testbed.adjacent_domain} (shared attributes)" in text_of(notebook)


def test_published_checkpoint_recovers_a_stand_in_without_its_run_directory(tmp_path):
    import json as json_module

    from rmu_lens.analysis.weights import weight_diff

    notebook = execute("published_checkpoint.ipynb", tmp_path)
    printed = text_of(notebook)
    assert "tensors changed, in blocks" in printed and "mean cos(h, û)" in printed
    assert "cais/Zephyr_RMU" in "".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    # the changed tensors it printed are exactly the ones the run trained (run.json), from the folders it wrote
    run = tmp_path / "stand_in" / "run"
    info = json_module.loads((run / "run.json").read_text(encoding="utf-8"))
    changed = sorted(p["hf_name"] for p in info["trained_parameters"])
    assert sorted(weight_diff(tmp_path / "stand_in" / "base", run / "model").changed) == changed
    assert f"{len(changed)} of" in printed and all(f"block {name.split('.')[2]}" in printed for name in changed)
