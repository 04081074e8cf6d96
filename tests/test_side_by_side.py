"""Several unlearned models of one base: the base's activations collected once, accuracy and damage per
model, one staged report.

Tiny random Llamas: the "unlearned" models are copies with block 1's MLP output scaled. The forward
passes of the base are counted with a torch forward hook on its input embedding (independent of the
code's own bookkeeping); cached results are checked against uncached ones, accuracy changes against
evaluations run here, and the page's numbers against the files the run wrote.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math

import pytest
import torch

from rmu_lens.analysis import analyze
from rmu_lens.eval import Question, compare, evaluate
from rmu_lens.models import build_random_model, load_model
from tests.helpers import ReportHTML, single_thread, texts  # noqa: F401  (single_thread is a fixture)

pytestmark = pytest.mark.usefixtures("single_thread")

N_LAYERS = 3
ODD_NAME = '<b onclick="x">odd'
DATASETS = {"bio": (texts("bio", 5), "forget"), "retain": (texts("retain", 5), "retain"),
            "cyber": (texts("cyber", 5, seed=1), "adjacent")}


def _questions(subject: str, words: list[str], n: int = 4) -> list[Question]:
    return [Question(f"Which {words[i % len(words)]} {i}?", [words[(i + k) % len(words)] for k in range(4)], i % 4,
                     subject, subject, f"{subject}-{i}") for i in range(n)]


QUESTIONS = {"bio": (_questions("bio", ["virus", "cell", "gene", "host", "enzyme"], 8), "forget"),
             "cyber": (_questions("cyber", ["key", "patch", "log", "port", "hash"], 8), "adjacent")}


@pytest.fixture(scope="module")
def models():
    """(base bridge, {name: unlearned bridge}): block 1's MLP output scaled by 2, 3 and 0.5 (small changes),
    30 and -20 (large enough to change answers: bio -1/8 and cyber +2/8 on QUESTIONS)."""
    hf, tok = build_random_model("llama", n_layers=N_LAYERS, d_model=32, seed=0)
    base = load_model(copy.deepcopy(hf), tokenizer=tok)
    unlearned = {}
    for name, scale in (("x2", 2.0), ("x3", 3.0), ("half", 0.5), ("x30", 30.0), ("neg20", -20.0)):
        edited = copy.deepcopy(hf)
        with torch.no_grad():
            edited.model.layers[1].mlp.down_proj.weight.mul_(scale)
        unlearned[name] = load_model(edited, tokenizer=tok)
    return base, unlearned


@contextlib.contextmanager
def forward_calls(bridge):
    """Counts the forward passes through ``bridge``'s input embedding while the block runs."""
    calls = [0]
    handle = bridge.original_model.get_input_embeddings().register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        yield calls
    finally:
        handle.remove()


def _same(a, b, path="", rel=1e-6, abs_=1e-6):
    """Recursive equality of JSON-like data, numbers to tolerance; ``seconds`` entries are timings, skipped."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for key in a:
            if key != "seconds":
                _same(a[key], b[key], f"{path}.{key}", rel, abs_)
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]", rel, abs_)
    elif isinstance(a, float) and not isinstance(a, bool):
        assert (math.isnan(a) and math.isnan(b)) or b == pytest.approx(a, rel=rel, abs=abs_), path
    else:
        assert a == b, path


def _analysis_settings():
    u = torch.randn(32, generator=torch.Generator().manual_seed(1))
    return dict(control_vectors={"bio": u / u.norm()}, steering_coeffs={"bio": 4.0}, layer=1, progress=False)


def test_cached_base_activations_give_the_same_analysis_with_one_base_pass(models):
    base, unlearned = models
    settings = _analysis_settings()
    with forward_calls(base) as one:
        plain = [analyze(base, unlearned["x2"], DATASETS, max_texts=4, **settings)]
    small = {name: unlearned[name] for name in ("x2", "x3", "half")}
    plain += [analyze(base, m, DATASETS, max_texts=4, **settings) for name, m in small.items() if name != "x2"]
    assert one[0] > 0
    cache: dict = {}
    with forward_calls(base) as calls:
        cached = [analyze(base, m, DATASETS, max_texts=4, base_cache=cache, **settings) for m in small.values()]
    assert calls[0] == one[0]  # three models, the base run as often as for one
    for with_cache, without in zip(cached, plain):
        _same(with_cache.to_dict(), without.to_dict())
    # a subset of the cached hook points (layers 1 and 2 of the three) is read from the cache
    with forward_calls(base) as calls:
        subset = analyze(base, unlearned["x3"], DATASETS, max_texts=4, layers=[2], base_cache=cache, **settings)
    assert calls[0] == 0
    _same(subset.to_dict(), analyze(base, unlearned["x3"], DATASETS, max_texts=4, layers=[2], **settings).to_dict())
    # other batch settings never meet a stale entry: the base runs again, and the result is the uncached one
    for change in ({"max_texts": 3}, {"max_length": 16}):
        options = {"max_texts": 4, **change}
        with forward_calls(base) as calls:
            other = analyze(base, unlearned["x3"], DATASETS, base_cache=cache, **options, **settings)
        assert calls[0] > 0
        _same(other.to_dict(), analyze(base, unlearned["x3"], DATASETS, **options, **settings).to_dict())
    # changed texts under the same dataset name are collected again too
    renamed = {**DATASETS, "cyber": (texts("cyber", 5, seed=7), "adjacent")}
    with forward_calls(base) as calls:
        other = analyze(base, unlearned["x3"], renamed, max_texts=4, base_cache=cache, **settings)
    assert calls[0] > 0
    _same(other.to_dict(), analyze(base, unlearned["x3"], renamed, max_texts=4, **settings).to_dict())


def test_spilled_cache_entries_equal_the_in_memory_analysis(models):
    from rmu_lens.analysis.activations import Activations

    base, unlearned = models
    settings = _analysis_settings()
    cache: dict = {}
    spilled = [analyze(base, m, DATASETS, max_texts=4, probes=False, memory_limit_mb=1e-6, base_cache=cache, **settings)
               for m in (unlearned["x2"], unlearned["half"])]
    entries = [v for v in cache.values() if isinstance(v, Activations)]
    assert entries and all(e.spilled for e in entries)
    for result, model in zip(spilled, (unlearned["x2"], unlearned["half"])):
        memory = analyze(base, model, DATASETS, max_texts=4, probes=False, **settings)
        _same(result.to_dict()["collapse"], memory.to_dict()["collapse"])


def _side_by_side(base, chosen, out, **options):
    from rmu_lens.pipeline import run_side_by_side

    return run_side_by_side(base, chosen, out, datasets=DATASETS, max_texts=4, progress=False, log=lambda _: None,
                            **options)


def test_side_by_side_evaluates_once_and_reports_accuracy_damage_and_figures_per_model(models, tmp_path):
    base, unlearned = models
    chosen = {"x30": unlearned["x30"], ODD_NAME: unlearned["neg20"]}
    with forward_calls(base) as one:
        _side_by_side(base, {"x30": unlearned["x30"]}, tmp_path / "one", questions=QUESTIONS, batch_size=4)
    with forward_calls(base) as calls:
        result = _side_by_side(base, chosen, tmp_path / "two", questions=QUESTIONS, batch_size=4)
    assert calls[0] == one[0] > 0  # the base is evaluated and read once, whatever the number of models
    out = result.out
    questions = [q for subset, _ in QUESTIONS.values() for q in subset]
    base_eval = evaluate(base, questions, progress=False, batch_size=4)
    rows = {row["model"]: row for row in result.summary["rows"]}
    saved_base = json.loads((out / "eval_base.json").read_text(encoding="utf-8"))
    assert [x for r in saved_base["records"] for x in r["loglikelihoods"]] == pytest.approx(
        [x for r in base_eval.records for x in r["loglikelihoods"]], rel=1e-5)
    for name, model in chosen.items():
        expected = compare(base_eval, evaluate(model, questions, progress=False, batch_size=4), forget_subjects=["bio"])
        assert any(change.delta != 0 for change in expected.rows)  # the answers changed: the check below means something
        for change in expected.rows:
            role = QUESTIONS[change.subject][1]
            assert rows[name][f"{change.subject} ({role}): accuracy change"] == pytest.approx(change.delta, abs=1e-12)
        folder = out / "models" / name
        assert (folder / "recovery.json").is_file() and (folder / "eval.json").is_file()
        damage = json.loads((folder / "analysis" / "analysis.json").read_text(encoding="utf-8"))["damage"]
        assert {r["domain"] for r in damage["rows"]} == {"bio", "cyber"}
        for figure in ("norms", "cos_u", "damage", "accuracy_change"):
            assert (out / "figures" / name / f"{figure}.png").is_file()
    assert sorted(result.summary["figures"]) == sorted(str(p.relative_to(out)) for p in (out / "figures").rglob("*.png"))
    assert set(result.summary["headline"]["models"]) == set(chosen)
    page = (out / "report.html").read_text(encoding="utf-8")
    report = ReportHTML(page)
    comparison = json.loads((out / "models" / "x30" / "comparison.json").read_text(encoding="utf-8"))
    for row in comparison["subjects"]:
        assert float(report.cells[f"x30.accuracy.{row['subject']}.delta"]) == pytest.approx(row["delta"], abs=5e-4)
    for name in chosen:
        assert {f"{name}/norms", f"{name}/damage", f"{name}/accuracy_change"} <= set(report.figures)
    assert report.embedded_images == len(result.summary["figures"])
    assert ODD_NAME not in page and "&lt;b onclick=&#34;x&#34;&gt;odd" in page


def test_side_by_side_without_questions_has_no_accuracy(models, tmp_path):
    base, unlearned = models
    result = _side_by_side(base, {"x2": unlearned["x2"], "half": unlearned["half"]}, tmp_path / "out")
    assert not any("accuracy" in key for row in result.summary["rows"] for key in row)
    assert not (result.out / "eval_base.json").exists()
    assert "damage" not in json.loads((result.out / "models" / "x2" / "analysis" / "analysis.json").read_text())
    assert result.summary["plan"]["mode"] is None and result.summary["format"] == "rmu_lens.demo/1"


def test_bad_input_is_refused_before_anything_is_written(models, tmp_path):
    from rmu_lens.pipeline.side_by_side import SideBySideError

    base, unlearned = models
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("keep", encoding="utf-8")
    with pytest.raises(FileExistsError, match="not empty"):
        _side_by_side(base, {"x2": unlearned["x2"]}, full, questions=QUESTIONS)
    assert [p.name for p in full.iterdir()] == ["mine.txt"]
    cases = [({"x2": unlearned["x2"]}, {"bio": (QUESTIONS["bio"][0], "retain")}, "role='retain'"),
             ({"x2": unlearned["x2"]}, {"a": (QUESTIONS["bio"][0], "forget"), "b": (QUESTIONS["bio"][0], "distant")},
              "two roles"),
             ({"a/b": unlearned["x2"]}, None, "cannot name a folder"),
             ({}, None, "no unlearned models")]
    for chosen, questions, message in cases:
        with pytest.raises(SideBySideError, match=message):
            _side_by_side(base, chosen, tmp_path / "new", questions=questions)
        assert not (tmp_path / "new").exists()


def _analyze_args(*extra: str):
    from rmu_lens.cli import build_parser

    return build_parser().parse_args(["analyze", "--out", "unused", *extra])


def test_cli_questions_default_to_the_bundled_test_halves_for_the_embedded_base():
    from rmu_lens.cli import side_by_side_questions
    from rmu_lens.pipeline.plans import REPORT_SPLIT, SMOLLM2_QUESTION_SETS
    from rmu_lens.pipeline.side_by_side import SideBySideError

    defaults = side_by_side_questions(_analyze_args("--base", "smollm2-135m", "--unlearned", "a", "b"))
    assert defaults == {n: (f"bundled:{n}:{REPORT_SPLIT}", r) for n, r in SMOLLM2_QUESTION_SETS.items()}
    assert side_by_side_questions(_analyze_args("--base", "some/folder", "--unlearned", "a", "b")) is None
    assert side_by_side_questions(_analyze_args("--base", "smollm2-135m", "--unlearned", "a", "b", "--no-eval")) is None
    given = side_by_side_questions(_analyze_args("--base", "x", "--unlearned", "a", "b", "--questions",
                                                 "qs/bio.jsonl:forget", "bundled:geography:test"))
    assert given == {"qs/bio.jsonl": ("qs/bio.jsonl", "forget"), "geography": ("bundled:geography:test", "distant")}
    with pytest.raises(SideBySideError, match="SOURCE:ROLE"):
        side_by_side_questions(_analyze_args("--base", "x", "--unlearned", "a", "b", "--questions", "qs/bio.jsonl"))


def test_cli_evaluation_flags_with_one_unlearned_model_are_one_clear_error(tmp_path, capsys):
    from rmu_lens.cli import main

    for flags in (["--questions", "bundled:virology"], ["--mode", "letter"], ["--limit", "3"], ["--no-eval"]):
        code = main(["analyze", "--base", "no-such-model", "--unlearned", "no-such-run", "--out", str(tmp_path / "o"), *flags])
        assert code != 0
        assert f"{flags[0]} apply to several --unlearned models" in capsys.readouterr().err
        assert not (tmp_path / "o").exists()
