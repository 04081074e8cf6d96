"""The demo pipeline and the `demo` / `analyze` commands: layout, atomic output, headline = JSON files."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import WORDS, ReportHTML, texts
from rmu_lens.cli import main
from rmu_lens.data.corpora import Corpus
from rmu_lens.eval import Question
from rmu_lens.pipeline import DemoPlan, check_output_dir, run_analysis, run_pipeline, smollm2_plan

LAYOUT = ("run/run.json", "run/control_vectors.safetensors", "run/model/config.json", "eval_base.json",
          "eval_unlearned.json", "comparison.json", "analysis/analysis.json", "report.html", "summary.json")


def report_cells(path: Path) -> ReportHTML:
    return ReportHTML(path.read_text(encoding="utf-8"))


def word_questions(kind: str, subject: str, n: int = 10) -> list[Question]:
    """Questions whose answer is a word of ``kind``'s vocabulary, distractors from the others."""
    rng = random.Random(subject)
    others = [w for k, words in WORDS.items() if k != kind for w in words]
    questions = []
    for i in range(n):
        answer = rng.choice(WORDS[kind])
        choices = rng.sample(others, 3)
        position = i % 4
        choices.insert(position, answer)
        questions.append(Question(f"Which word belongs with {kind} number {i}?", choices, position, subject, "words", f"{subject}-{i}"))
    return questions


def tiny_plan(**overrides) -> DemoPlan:
    from rmu_lens.models import build_random_model, load_model
    from rmu_lens.rmu import RMUConfig

    def fresh_model():
        model, tokenizer = build_random_model("llama", n_layers=3, d_model=32, n_heads=2, seed=0)
        return load_model(model, tokenizer=tokenizer)

    forget = [Corpus("bio", texts("bio", 12), "test:bio"), Corpus("cyber", texts("cyber", 12), "test:cyber")]
    retain = Corpus("retain", texts("retain", 12), "test:retain")
    questions = word_questions("bio", "bio_words") + word_questions("cyber", "cyber_words") + word_questions("retain", "retain_words")
    config = RMUConfig(layer=1, update_layers=[0, 1], steering_coeff=20.0, alpha=1.0, lr=1e-2, batch_size=4,
                       max_batches=6, max_length=32, retain_max_length=32, cycle=True, checkpoint_every=0)
    fields = dict(
        name="tiny llama", load_model=fresh_model, forget=forget, retain=retain, questions=questions,
        subject_roles={"bio_words": "forget", "cyber_words": "adjacent", "retain_words": "distant"}, config=config,
        analysis_datasets={"bio": (forget[0], "forget"), "cyber": (forget[1], "forget"), "retain": (retain, "retain"),
                           "cyber_words": ([q.question for q in questions[10:20]], "adjacent")},
        analysis_max_texts=10, eval_batch_size=8,
    )
    fields.update(overrides)
    return DemoPlan(**fields)


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    lines: list[str] = []
    result = run_pipeline(tiny_plan(), out, progress=False, log=lines.append)
    return out, result, lines


def test_pipeline_writes_the_documented_layout(tiny_demo):
    out, result, _ = tiny_demo
    for name in LAYOUT:
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary == json.loads(json.dumps(result.summary))
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(Path(f).name for f in summary["figures"])
    names = [Path(f).stem for f in summary["figures"]]
    assert names[:3] == ["accuracy", "accuracy_change", "training"]
    assert {"norms", "cos_u", "pca", "dispersion", "probe_domain", "probe_knowledge"} <= set(names)
    parsed = report_cells(out / "report.html")
    assert parsed.figures == names and parsed.embedded_images == len(names)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "staging directories left behind"


def test_pipeline_prints_numbered_step_headers_and_a_summary(tiny_demo):
    _, _, lines = tiny_demo
    headers = [line for line in lines if line.startswith("[")]
    assert [h.split("]")[0] + "]" for h in headers] == [f"[{i}/6]" for i in range(1, 7)]
    assert "30 questions" in headers[1] and "3 question sets" in headers[1]
    assert "report:" in lines[-1] and "forget" in lines[-1]


def test_pipeline_headline_equals_the_eval_files(tiny_demo):
    out, _, _ = tiny_demo
    roles = {"bio_words": "forget", "cyber_words": "adjacent", "retain_words": "distant"}
    base = json.loads((out / "eval_base.json").read_text(encoding="utf-8"))["records"]
    after = {r["id"]: r for r in json.loads((out / "eval_unlearned.json").read_text(encoding="utf-8"))["records"]}
    cells = report_cells(out / "report.html").cells
    for subject, role in roles.items():
        rows = [r for r in base if r["subject"] == subject]
        before = sum(r["correct"] for r in rows) / len(rows)
        later = sum(after[r["id"]]["correct"] for r in rows) / len(rows)
        assert float(cells[f"accuracy.{role}.base_acc"]) == pytest.approx(before, abs=5e-4)
        assert float(cells[f"accuracy.{role}.unlearned_acc"]) == pytest.approx(later, abs=5e-4)
        assert int(cells[f"accuracy.{role}.n"]) == len(rows) == 10


def test_pipeline_with_audit_adds_the_robustness_section_from_audit_json(tmp_path):
    from rmu_lens.audit import AuditResult, FinetuneConfig

    out = tmp_path / "out"
    lines: list[str] = []
    small = {"finetune": FinetuneConfig(n_examples=[2], steps=2, max_length=32)}  # keeps the tiny run fast
    run_pipeline(tiny_plan(), out, progress=False, audit=small, log=lines.append)
    assert [h.split("]")[0] + "]" for h in lines if h.startswith("[")] == [f"[{i}/7]" for i in range(1, 8)]
    saved = AuditResult.load(out / "audit" / "audit.json")
    parsed = report_cells(out / "report.html")
    for name, sentence in saved.headlines().items():
        assert parsed.cells[f"robustness.{name}"] == sentence
    assert {"audit_ablation", "audit_finetune"} <= set(parsed.figures)
    assert parsed.embedded_images == len(parsed.figures)


def test_pipeline_refuses_a_non_empty_output_directory(tmp_path):
    (tmp_path / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        run_pipeline(tiny_plan(), tmp_path, log=lambda line: None)
    with pytest.raises(FileExistsError, match="not a directory"):
        check_output_dir(tmp_path / "keep.txt", overwrite=True)
    assert check_output_dir(tmp_path / "new", overwrite=False) == tmp_path / "new"


def test_a_failing_step_leaves_nothing_half_written(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "previous.txt").write_text("previous demo", encoding="utf-8")
    broken = tiny_plan(analysis_datasets={"bio": (["x"], "sideways")})  # the analysis refuses this role
    with pytest.raises(ValueError, match="role"):
        run_pipeline(broken, out, overwrite=True, progress=False, log=lambda line: None)
    assert sorted(p.name for p in out.iterdir()) == ["previous.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_plan_checks_subject_roles():
    with pytest.raises(ValueError, match="no question has"):
        tiny_plan(subject_roles={"chemistry": "forget"})
    with pytest.raises(ValueError, match="forget"):
        tiny_plan(subject_roles={"bio_words": "distant"})


def test_smollm2_plan_is_the_main_job():
    plan = smollm2_plan(question_limit=5)
    assert [c.name for c in plan.forget] == ["virology", "cybersecurity"] and plan.retain.name == "retain"
    assert plan.config.to_dict() == __import__("rmu_lens").RMUConfig.profile("demo").to_dict()
    assert plan.subject_roles == {"virology": "forget", "computer_security": "forget", "biology": "adjacent",
                                  "computing": "adjacent", "geography": "distant", "history": "distant",
                                  "mathematics": "distant"}
    assert len(plan.questions) == 35 and plan.mode == "cloze"
    assert {q.split for q in plan.questions} == {"test"}  # reported numbers come from the test halves
    roles = {name: role for name, (_, role) in plan.analysis_datasets.items()}
    assert roles == {"virology": "forget", "cybersecurity": "forget", "retain": "retain", "biology": "adjacent",
                     "computing": "adjacent", "geography": "distant", "history": "distant", "mathematics": "distant"}
    assert plan.analysis_subjects["cybersecurity"] == "computer_security"


def test_demo_command_refuses_a_non_empty_out_before_loading_anything(tmp_path, capsys):
    (tmp_path / "x").write_text("", encoding="utf-8")
    assert main(["demo", "--out", str(tmp_path)]) == 3  # an output that cannot be used
    assert "--overwrite" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path / "new"), "--limit", "0"]) == 2
    assert "--limit 0" in capsys.readouterr().err


def test_analyze_command_reports_on_a_run_directory(tmp_path, capsys):
    from rmu_lens.models import build_random_model, load_model, save_hf_model
    from rmu_lens.rmu import RMUConfig, unlearn

    model, tokenizer = build_random_model("llama", n_layers=3, d_model=32, n_heads=2, seed=1)
    base_dir = save_hf_model(load_model(model, tokenizer=tokenizer), tmp_path / "base")
    corpora = {}
    for kind in ("bio", "retain"):
        path = tmp_path / f"{kind}.jsonl"
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts(kind, 12)), encoding="utf-8")
        corpora[kind] = str(path)
    config = RMUConfig(layer=1, update_layers=[0, 1], steering_coeff=20.0, alpha=1.0, lr=1e-2, max_batches=3,
                       max_length=32, retain_max_length=32, checkpoint_every=0)
    from rmu_lens.data.corpora import load_corpus

    unlearn(load_model(base_dir), load_corpus(corpora["bio"]), load_corpus(corpora["retain"]), config,
            out=tmp_path / "run", progress=False)
    out = tmp_path / "analysis"
    code = main(["analyze", "--base", str(base_dir), "--unlearned", str(tmp_path / "run"), "--out", str(out),
                 "--max-texts", "8", "--no-progress"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    # the run's own corpora (re-read from run.json) plus the bundled adjacent and distant question sets
    assert summary["plan"]["datasets"] == {"bio": "forget", "retain": "retain", "biology": "adjacent",
                                           "computing": "adjacent", "geography": "distant", "history": "distant",
                                           "mathematics": "distant"}
    assert (out / "analysis" / "analysis.json").is_file() and (out / "report.html").is_file()
    parsed = report_cells(out / "report.html")
    assert "training" in parsed.figures and parsed.embedded_images == len(summary["figures"])
    assert "[4/4]" in capsys.readouterr().out  # load, recover, analysis, report
    with pytest.raises(ValueError, match="NAME=SOURCE:ROLE"):
        from rmu_lens.cli import parse_dataset

        parse_dataset("virology=bundled:virology:sideways")


def test_analyze_refuses_a_run_whose_corpora_cannot_be_read_again(make_tiny, tmp_path):
    from rmu_lens.rmu import RMUConfig, unlearn

    run_dir = tmp_path / "run"
    config = RMUConfig(layer=1, steering_coeff=8.0, alpha=5.0, batch_size=2, max_batches=1, max_length=16,
                       retain_max_length=16, checkpoint_every=0)
    unlearn(make_tiny(n_layers=2), {"bio": texts("bio", 2)}, texts("retain", 2), config, out=run_dir, progress=False)
    with pytest.raises(ValueError, match="--data"):  # the texts were given in memory: run.json cannot re-read them
        run_analysis("unused", run_dir, tmp_path / "out", log=lambda line: None)
    assert not (tmp_path / "out").exists()


def test_build_parser_does_not_import_torch():
    code = "import sys, rmu_lens.cli as c; c.build_parser(); print('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert output.strip() == "False"


# --- the ground-truth demo (trained testbed) -----------------------------------------------------


@pytest.mark.integration
def test_demo_on_the_testbed_reports_what_its_json_files_say(testbed, tmp_path, capsys):
    """`rmu-lens demo --testbed`: every figure in the report, headline numbers equal to the JSON files."""
    out = tmp_path / "demo"
    assert main(["demo", "--testbed", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "[6/6]" in printed and "report:" in printed
    check_testbed_demo(out, testbed)


def check_testbed_demo(out: Path, testbed) -> None:
    """The testbed demo's report against the JSON files it wrote, and against the world's ground truth."""
    for name in LAYOUT:
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    parsed = report_cells(out / "report.html")
    figure_names = [Path(f).stem for f in summary["figures"]]
    assert parsed.figures == figure_names and parsed.embedded_images == len(figure_names)
    assert {"accuracy", "accuracy_change", "training"} <= set(figure_names)
    assert len(figure_names) > 3, "representation figures missing"
    for name in figure_names:
        assert (out / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    roles = {testbed.forget_domain: "forget", testbed.adjacent_domain: "adjacent", **{d: "distant" for d in testbed.distant_domains}}
    base = json.loads((out / "eval_base.json").read_text(encoding="utf-8"))
    after = {r["id"]: r for r in json.loads((out / "eval_unlearned.json").read_text(encoding="utf-8"))["records"]}
    for role in ("forget", "adjacent", "distant"):
        rows = [r for r in base["records"] if roles[r["subject"]] == role]
        before = sum(r["correct"] for r in rows) / len(rows)
        later = sum(after[r["id"]]["correct"] for r in rows) / len(rows)
        assert float(parsed.cells[f"accuracy.{role}.base_acc"]) == pytest.approx(before, abs=5e-4)
        assert float(parsed.cells[f"accuracy.{role}.unlearned_acc"]) == pytest.approx(later, abs=5e-4)
        assert summary["headline"]["accuracy"][role]["base_acc"] == pytest.approx(before, abs=1e-12)
    # the testbed's ground truth: the forget domain falls toward chance, the distant ones stay
    assert float(parsed.cells["accuracy.forget.unlearned_acc"]) < 0.45
    assert float(parsed.cells["accuracy.distant.change"]) > -0.1

    history = json.loads((out / "run" / "run.json").read_text(encoding="utf-8"))["history"]
    topic = testbed.forget_domain
    last = [h for h in history if h["topic"] == topic][-5:]
    assert float(parsed.cells[f"training.{topic}.forget_norm_end"]) == pytest.approx(
        sum(h["forget_norm"] for h in last) / len(last), abs=0.05)
    assert float(parsed.cells[f"training.{topic}.retain_cos_end"]) == pytest.approx(
        sum(h["retain_cos"] for h in last) / len(last), abs=5e-4)
    collapse = json.loads((out / "analysis" / "analysis.json").read_text(encoding="utf-8"))["collapse"]
    at_l = collapse["layers"].index(collapse["layer"])
    for model in ("base", "unlearned"):
        norm = collapse["metrics"][topic][model]["mean_norm"][at_l]
        assert float(parsed.cells[f"representations.datasets.{topic}.norm_{model}"]) == pytest.approx(norm, abs=0.05)
    cosine = collapse["shift"][topic]["cos_unlearned_base"][at_l]
    assert float(parsed.cells[f"representations.datasets.{topic}.cos_unlearned_base"]) == pytest.approx(cosine, abs=5e-4)
