"""The IPython extension: loading, help, argument errors, and each magic on a tiny random model."""

from __future__ import annotations

import json

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

import rmu_lens as rl
from rmu_lens.eval import Comparison, EvalResult, evaluate, load_questions
from rmu_lens.eval.prompts import MODES
from rmu_lens.jupyter.dashboard import TrainingJob
from rmu_lens.jupyter.magics import CONFIG_FORMAT
from rmu_lens.rmu.trainer import RMURun
from tests.helpers import texts

MAGICS = {"rmu_unlearn", "rmu_eval", "rmu_compare", "rmu_analyze"}
SETTINGS = "--layer 2 --alpha 5 --lr 1e-3 --batch-size 2 --max-batches 4 --max-length 24 --retain-max-length 24"


@pytest.fixture(scope="module")
def ip():
    from IPython import get_ipython
    from IPython.testing.globalipapp import start_ipython

    shell = start_ipython() or get_ipython()
    html = shell.display_formatter.formatters["text/html"]
    html_was_enabled, html.enabled = html.enabled, True  # as in a kernel (a terminal shell shows text only)
    shell.run_line_magic("load_ext", "rmu_lens")
    yield shell
    shell.run_line_magic("unload_ext", "rmu_lens")
    html.enabled = html_was_enabled


@pytest.fixture
def notebook(ip, make_tiny):
    """Variables a notebook would hold: a tiny model, two forget topics and a retain set."""
    ip.user_ns.update(tiny=make_tiny(n_layers=4, seed=1), bio=texts("bio", 8), cyber=texts("cyber", 8, seed=1),
                      wiki=texts("retain", 12))
    yield ip
    for name in ("tiny", "base", "bio", "cyber", "wiki", "run", "job", "rmu_run", "before", "after", "delta"):
        ip.user_ns.pop(name, None)


def rmu_magics(ip) -> set[str]:
    line = {name for name in ip.magics_manager.magics["line"] if name.startswith("rmu_")}
    cell = {name for name in ip.magics_manager.magics["cell"] if name.startswith("rmu_")}
    return line | {f"%%{name}" for name in cell}


def test_load_unload_and_reload_extension(ip):
    assert rmu_magics(ip) == MAGICS | {"%%rmu_unlearn"}
    ip.run_line_magic("unload_ext", "rmu_lens")
    assert rmu_magics(ip) == set()
    ip.run_line_magic("load_ext", "rmu_lens")
    ip.run_line_magic("reload_ext", "rmu_lens")
    assert rmu_magics(ip) == MAGICS | {"%%rmu_unlearn"}


def test_question_mark_shows_the_argparse_help(ip):
    with capture_output() as captured:
        ip.run_cell("%rmu_unlearn?")
    help_text = captured.stdout
    for flag in ("--forget", "--retain", "--background", "--steering-coeff", "--adaptive", "-o OUTPUT"):
        assert flag in help_text
    with capture_output() as captured:
        ip.run_cell("%rmu_eval?")
    assert "--mode {" + ",".join(MODES) + "}" in captured.stdout


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("--forget bio", "the following arguments are required: --retain"),
        ("--forget bio --retain wiki --layer two", "argument --layer: invalid int value: 'two'"),
        ("--forget no_such_corpus.jsonl --retain wiki --model tiny", "--forget no_such_corpus.jsonl"),
        ("--forget tiny --retain wiki --model tiny", "give a Corpus or a list of texts"),
        ("--forget bio --retain wiki --model wiki", "the variable holds a list, not a model"),
        ("--forget bio --retain wiki --model tiny --lr -1", "lr=-1.0 must be > 0"),
        ("--forget bio --retain wiki --model tiny -o 1st", "not a valid Python variable name"),
        ("--forget bio --retain wiki --model tiny --resume", "--resume needs --out"),
        ("--forget bio bio --retain wiki --model tiny", "distinct names"),
        ("--forget 'bio --retain wiki", "could not parse the arguments"),
    ],
)
def test_bad_unlearn_arguments_are_usage_errors_with_the_reason(notebook, line, reason):
    with pytest.raises(UsageError) as error:
        notebook.run_line_magic("rmu_unlearn", line)
    assert reason in str(error.value)


def test_bad_cell_settings_are_usage_errors(notebook):
    line = "--model tiny --forget bio --retain wiki --no-dashboard"
    with pytest.raises(UsageError, match=f"not valid {CONFIG_FORMAT}"):
        notebook.run_cell_magic("rmu_unlearn", line, "layer: [2\n" if CONFIG_FORMAT == "YAML" else "{layer: 2")
    with pytest.raises(UsageError, match="mapping of RMUConfig fields"):
        notebook.run_cell_magic("rmu_unlearn", line, "[1, 2]")
    with pytest.raises(UsageError, match=r"Unknown RMUConfig fields \['lyer'\]"):
        notebook.run_cell_magic("rmu_unlearn", line, '{"lyer": 2}')


def test_unlearn_cell_takes_settings_from_the_body_and_flags_win(notebook, tmp_path):
    body = '{"layer": 2, "steering_coeff": 8.0, "alpha": 3.0, "lr": 0.001, "batch_size": 2, "max_batches": 4,\n' \
           ' "max_length": 24, "retain_max_length": 24}'
    out = tmp_path / "run"
    notebook.run_cell_magic("rmu_unlearn", f"--model tiny --forget bio cyber --retain wiki --alpha 7 --out {out} "
                                           "--no-dashboard -o run", body)
    run = notebook.user_ns["run"]
    assert isinstance(run, RMURun) and run.status == "finished"
    assert run.topics == ["bio", "cyber"] and len(run.history) == 4
    assert run.config.alpha == 7.0 and run.config.steering_coeff == 8.0 and run.config.layer == 2
    saved = json.loads((out / "run.json").read_text())
    assert saved["config"] == run.config.to_dict() and saved["status"] == "finished"
    assert run.model is notebook.user_ns["tiny"]  # a notebook model is edited in place


def test_unlearn_shows_the_dashboard_and_the_run_summary(notebook):
    with capture_output() as captured:
        notebook.run_line_magic("rmu_unlearn", f"--model tiny --forget bio --retain wiki --steering-coeff 8 {SETTINGS}")
    run = notebook.user_ns["rmu_run"]
    assert run.status == "finished"
    kinds = [set(output.data) for output in captured.outputs]
    assert any("application/vnd.jupyter.widget-view+json" in kind for kind in kinds), "no dashboard displayed"
    html = [output.data["text/html"] for output in captured.outputs if "text/html" in output.data]
    assert any("RMU run" in text and "finished" in text for text in html)


def test_unlearn_in_the_background_stores_a_job(notebook):
    with capture_output() as captured:
        notebook.run_line_magic("rmu_unlearn", f"--model tiny --forget bio --retain wiki --steering-coeff 8 {SETTINGS} "
                                               "--background -o job")
    job = notebook.user_ns["job"]
    assert isinstance(job, TrainingJob)
    assert "job.result()" in captured.stdout
    run = job.result(timeout=120)
    assert run.status == "finished" and len(run.history) == 4
    assert job.dashboard.progress.value == 4


def test_unlearn_refuses_to_clobber_a_run_directory(notebook, tmp_path):
    line = f"--model tiny --forget bio --retain wiki --steering-coeff 8 {SETTINGS} --no-dashboard --out {tmp_path}/r"
    notebook.run_line_magic("rmu_unlearn", line)
    with pytest.raises(UsageError, match="overwrite"):
        notebook.run_line_magic("rmu_unlearn", line)


def questions_file(tmp_path):
    rows = [
        {"question": f"Which word is about {topic} number {i}?", "choices": ["virus", "river", "password", "castle"],
         "answer": answer, "subject": topic}
        for i in range(3) for topic, answer in (("bio", 0), ("geo", 1))
    ]
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_scores_like_evaluate_and_stores_the_result(notebook, tmp_path):
    path = questions_file(tmp_path)
    with capture_output() as captured:
        notebook.run_line_magic("rmu_eval", f"--model tiny --data {path} --mode letter --no-progress -o before "
                                            f"--save {tmp_path}/before.json")
    result = notebook.user_ns["before"]
    direct = evaluate(notebook.user_ns["tiny"], load_questions(path), mode="letter", progress=False)
    assert isinstance(result, EvalResult) and result.mode == "letter"
    assert [r["loglikelihoods"] for r in result.records] == [r["loglikelihoods"] for r in direct.records]
    assert EvalResult.load(tmp_path / "before.json").records == result.records
    assert any("Evaluation" in o.data.get("text/html", "") for o in captured.outputs)


def test_eval_errors_name_the_input(notebook, tmp_path):
    with pytest.raises(UsageError, match="--data missing.jsonl"):
        notebook.run_line_magic("rmu_eval", "--model tiny --data missing.jsonl")
    with pytest.raises(UsageError, match="the variable holds a list"):
        notebook.run_line_magic("rmu_eval", "--model tiny --data bio")
    with pytest.raises(UsageError, match="--batch-size 0"):
        notebook.run_line_magic("rmu_eval", f"--model tiny --data {questions_file(tmp_path)} --batch-size 0")


def test_compare_pairs_two_results_and_flags_forget_subjects(notebook, tmp_path):
    path = questions_file(tmp_path)
    notebook.run_line_magic("rmu_eval", f"--model tiny --data {path} --no-progress -o before")
    notebook.run_line_magic("rmu_unlearn", f"--model tiny --forget bio --retain wiki --steering-coeff 8 {SETTINGS} "
                                           "--no-dashboard")
    notebook.run_line_magic("rmu_eval", f"--model rmu_run --data {path} --no-progress -o after")
    notebook.run_line_magic("rmu_compare", "before after --forget-subjects bio -o delta")
    comparison = notebook.user_ns["delta"]
    assert isinstance(comparison, Comparison)
    roles = {row.subject: row.role for row in comparison.rows}
    assert roles == {"bio": "forget", "geo": "collateral"}
    before, after = notebook.user_ns["before"], notebook.user_ns["after"]
    bio = next(row for row in comparison.rows if row.subject == "bio")
    assert bio.delta == pytest.approx(after.by_subject()["bio"]["acc"] - before.by_subject()["bio"]["acc"])
    with pytest.raises(UsageError, match="not an EvalResult"):
        notebook.run_line_magic("rmu_compare", "before tiny")
    with pytest.raises(UsageError, match="neither a notebook variable nor a results file"):
        notebook.run_line_magic("rmu_compare", "before nothing_here")


def test_model_variable_of_the_wrong_kind_is_refused(notebook, tmp_path):
    with pytest.raises(UsageError, match="not a model"):
        notebook.run_line_magic("rmu_eval", f"--model bio --data {questions_file(tmp_path)}")


def test_package_import_stays_light():
    import subprocess
    import sys

    code = "import sys, rmu_lens; rmu_lens.load_ipython_extension; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
    assert callable(rl.load_ipython_extension) and callable(rl.unload_ipython_extension)


def test_analyze_matches_analyze_run_and_shows_a_summary(notebook, make_tiny):
    from rmu_lens.analysis import Analysis, analyze_run
    from rmu_lens.data.corpora import Corpus

    notebook.user_ns["base"] = make_tiny(n_layers=4, seed=1)  # the same weights as `tiny` before RMU
    notebook.run_line_magic("rmu_unlearn", f"--model tiny --forget bio --retain wiki --steering-coeff 8 {SETTINGS} "
                                           "--no-dashboard")
    with capture_output() as captured:
        notebook.run_line_magic("rmu_analyze", "rmu_run --base-model base --forget bio --retain wiki --no-probes "
                                               "--layers 1,2 -o a")
    analysis = notebook.user_ns.pop("a")
    assert isinstance(analysis, Analysis) and analysis.collapse.layers == [1, 2]
    datasets = {"bio": (Corpus("bio", notebook.user_ns["bio"], "x"), "forget"),
                "wiki": (Corpus("wiki", notebook.user_ns["wiki"], "x"), "retain")}
    direct = analyze_run(notebook.user_ns.pop("base"), notebook.user_ns["rmu_run"], datasets, layers=[1, 2], probes=False,
                         progress=False)
    assert analysis.collapse.metrics == direct.collapse.metrics
    html = "".join(o.data.get("text/html", "") for o in captured.outputs)
    assert "Analysis" in html and "blocks.2.hook_resid_post" in html


def test_analyze_errors_name_the_fix(notebook):
    notebook.run_line_magic("rmu_unlearn", f"--model tiny --forget bio --retain wiki --steering-coeff 8 {SETTINGS} "
                                           "--no-dashboard")
    with pytest.raises(UsageError, match="name the datasets"):
        notebook.run_line_magic("rmu_analyze", "rmu_run --base-model tiny")
    with pytest.raises(UsageError, match="--base-model is needed"):
        notebook.run_line_magic("rmu_analyze", "rmu_run --forget bio")
    with pytest.raises(UsageError, match="same object"):
        notebook.run_line_magic("rmu_analyze", "rmu_run --base-model tiny --forget bio --no-probes")
    with pytest.raises(UsageError, match="not an RMURun"):
        notebook.run_line_magic("rmu_analyze", "bio --forget bio")
    with pytest.raises(UsageError, match="neither a notebook variable nor a run directory"):
        notebook.run_line_magic("rmu_analyze", "nowhere --forget bio")


def test_analyze_takes_a_plain_unlearned_model_and_estimates_u_c_l(notebook, make_tiny):
    from rmu_lens.analysis import Analysis

    notebook.user_ns["base"] = make_tiny(n_layers=4, seed=1)  # the same weights as `tiny` before RMU
    notebook.run_line_magic("rmu_unlearn", f"--model tiny --forget bio --retain wiki --steering-coeff 8 {SETTINGS} "
                                           "--no-dashboard")
    notebook.user_ns["edited"] = notebook.user_ns["rmu_run"].model  # a bare bridge: no run record
    notebook.run_line_magic("rmu_analyze", "edited --base-model base --forget bio --retain wiki --no-probes -o a")
    analysis = notebook.user_ns.pop("a")
    assert isinstance(analysis, Analysis)
    recovery = analysis.meta["recovery"]
    assert recovery["source"] == "estimated from the two models" and recovery["check"] is None
    assert set(recovery["verdicts"]) == {"weights", "bio"}
    assert recovery["changed_tensors"]  # RMU changed the update layers' tensors
    with pytest.raises(UsageError, match="--base-model is needed"):
        notebook.run_line_magic("rmu_analyze", "edited --forget bio --retain wiki")
