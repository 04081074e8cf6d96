"""The end-to-end demo as a function: load → evaluate base → RMU → evaluate → analyze → report.

    from rmu_lens.pipeline import smollm2_plan, run_pipeline
    result = run_pipeline(smollm2_plan(), "runs/demo")        # what `rmu-lens demo --out runs/demo` does

A :class:`DemoPlan` says what runs (a model factory, corpora, question sets with roles, the RMU
config, the analysis datasets and sizes); :func:`run_pipeline` runs it and writes

    out/
      run/                  the RMU run directory (run.json, control_vectors.safetensors, model/)
      eval_base.json        EvalResult of the base model
      eval_unlearned.json   EvalResult of the unlearned model
      comparison.json       per-subject change, paired by question
      analysis/             Analysis.save (norms, cosines, probes, damage)
      utility/              perplexity.json (per dataset, both models), generations.json (per role)
      figures/*.png         every figure of the report
      report.html           the self-contained report
      summary.json          headline numbers, roles, step timings, settings

Everything is written into a staging directory beside ``out`` and renamed at the end, so a failed
step leaves nothing half-written; an existing non-empty ``out`` is refused unless ``overwrite``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rmu_lens.data.corpora import Corpus
    from rmu_lens.eval import Question
    from rmu_lens.rmu.config import RMUConfig
    from rmu_lens.utility.generation import GenerationConfig


def _generation_config() -> GenerationConfig:
    from rmu_lens.utility.generation import GenerationConfig

    # One batch for the demo's 12 prompts: cached decoding costs about the same per step for 8 or 16 rows.
    return GenerationConfig(max_new_tokens=24, min_new_tokens=8, batch_size=16)

SUMMARY_FORMAT = "rmu_lens.demo/1"
N_STEPS = 6

SMOLLM2_QUESTION_SETS = {
    "virology": "forget", "cybersecurity": "forget",
    "biology": "adjacent", "computing": "adjacent",
    "geography": "distant", "history": "distant",
}
"""The bundled question sets and their roles for the bundled forget corpora (docs/question_sets.md)."""


@dataclass
class DemoPlan:
    """What the demo runs. ``load_model`` returns a fresh base model on every call (the demo needs two:
    one stays the base, one is edited by RMU)."""

    name: str
    load_model: Callable[[], Any]
    forget: list[Corpus]
    retain: Corpus
    questions: list[Question]
    subject_roles: dict[str, str]
    """Question subject -> forget / adjacent / distant."""
    config: RMUConfig
    analysis_datasets: dict[str, tuple[Any, str]] = field(default_factory=dict)
    """Name -> (texts or Corpus, role) for the representation analysis."""
    analysis_subjects: dict[str, str] = field(default_factory=dict)
    """Analysis dataset -> question subject, where the names differ (pairs them in the damage table)."""
    analysis_max_texts: int = 32
    analysis_layers: list[int] | None = None
    """Layers the analysis reads (None: every layer)."""
    analysis_questions: bool = True
    """Also probe the answers of the questions from the activations (the knowledge probe; one more pass per model)."""
    eval_batch_size: int = 16
    mode: str = "cloze"
    utility: bool = True
    """Also measure perplexity per analysis dataset and generations per role (the report's utility section)."""
    utility_max_texts: int = 3
    """Texts per dataset for perplexity (both models score the same texts)."""
    utility_prompts_per_role: int = 4
    """Question prompts per role (forget, adjacent, distant) that both models complete."""
    generation: GenerationConfig = field(default_factory=lambda: _generation_config())
    judge: Any = None
    """A rmu_lens.utility.judge.JudgeConfig to rate the generations MT-Bench style (off: None)."""

    def __post_init__(self) -> None:
        subjects = {q.group for q in self.questions}
        unknown = sorted(set(self.subject_roles) - subjects)
        if unknown:
            raise ValueError(f"subject_roles names {unknown}, which no question has; subjects: {sorted(subjects)}")
        if "forget" not in self.subject_roles.values():
            raise ValueError("subject_roles must mark at least one question subject as 'forget'")

    @property
    def forget_subjects(self) -> list[str]:
        return sorted(s for s, role in self.subject_roles.items() if role == "forget")

    def describe(self) -> dict[str, Any]:
        """The plan as JSON-ready data (for summary.json)."""
        counts: dict[str, int] = {}
        for question in self.questions:
            counts[question.group] = counts.get(question.group, 0) + 1
        return {
            "name": self.name,
            "forget": [c.summary() for c in self.forget],
            "retain": self.retain.summary(),
            "questions": counts,
            "subject_roles": self.subject_roles,
            "mode": self.mode,
            "config": self.config.to_dict(),
            "analysis": {
                "datasets": {name: role for name, (_, role) in self.analysis_datasets.items()},
                "max_texts": self.analysis_max_texts,
                "layers": self.analysis_layers,
                "knowledge_probe": self.analysis_questions,
                "subjects": self.analysis_subjects,
            },
            "utility": {"max_texts": self.utility_max_texts, "prompts_per_role": self.utility_prompts_per_role,
                        "generation": self.generation.to_dict()} if self.utility else None,
        }


# --- plans ---------------------------------------------------------------------------------


def question_texts(questions: Sequence[Question]) -> list[str]:
    """Each question with its correct answer as one text: material about a subject for the analysis."""
    return [f"Question: {q.question.strip()}\nAnswer: {q.choices[q.answer]}" for q in questions]


def bundled_question_sets(limit: int | None = None) -> dict[str, tuple[list[Question], str]]:
    """The six bundled question sets (first ``limit`` questions of each) with their roles."""
    from rmu_lens.eval import load_questions

    return {name: (load_questions(f"bundled:{name}", limit=limit), role) for name, role in SMOLLM2_QUESTION_SETS.items()}


def question_set_datasets(sets: Mapping[str, tuple[list[Question], str]]) -> tuple[dict[str, tuple[Any, str]], dict[str, str]]:
    """Analysis datasets from the non-forget question sets (question + answer as text), and dataset -> subject."""
    datasets, subjects = {}, {}
    for name, (questions, role) in sets.items():
        if role != "forget":
            datasets[name] = (question_texts(questions), role)
            subjects[name] = questions[0].group
    return datasets, subjects


SMOLLM2_ANALYSIS_LAYERS = [0, 2, 4, 6, 7, 8, 10, 12]
"""Layers the SmolLM2 demo analyzes: around l = 7, stopping at 12 so the 30-layer model is not run to the end."""


def smollm2_plan(
    question_limit: int | None = 30,
    *,
    max_batches: int | None = None,
    analysis_max_texts: int = 16,
    analysis_layers: list[int] | None = SMOLLM2_ANALYSIS_LAYERS,
    analysis_questions: bool = False,
    model: str = "smollm2-135m",
    load_options: Mapping[str, Any] | None = None,
) -> DemoPlan:
    """The main job: SmolLM2-135M, forget bundled virology + cybersecurity, retain bundled retain text,
    the demo RMU profile, the six bundled question sets (first ``question_limit`` of each; None: all).

    Analysis datasets: the forget corpora and the retain corpus, plus the adjacent and distant question
    sets as text (question + answer), so every role is measured inside the model too. The defaults
    (30 questions per set, 16 texts per dataset, 8 layers, no knowledge probe) keep the demo under ten
    minutes on two CPU cores (docs/report.md). ``load_options`` (device, dtype, device_map ...) go to
    :func:`rmu_lens.load_model`.
    """
    from rmu_lens.data.corpora import load_corpus
    from rmu_lens.models import load_model
    from rmu_lens.rmu.config import RMUConfig

    sets = bundled_question_sets(question_limit)
    questions = [q for subset, _ in sets.values() for q in subset]
    roles = {q.group: role for subset, role in sets.values() for q in subset}
    config = RMUConfig.profile("demo", **({"max_batches": max_batches} if max_batches else {}))
    forget = [load_corpus("bundled:virology"), load_corpus("bundled:cybersecurity")]
    retain = load_corpus("bundled:retain")
    datasets: dict[str, tuple[Any, str]] = {c.name: (c, "forget") for c in forget}
    datasets["retain"] = (retain, "retain")
    extra, subjects = question_set_datasets(sets)
    datasets.update(extra)
    subjects.update({name: subset[0].group for name, (subset, role) in sets.items() if role == "forget"})
    return DemoPlan(
        name=model, load_model=lambda: load_model(model, **(load_options or {})), forget=forget, retain=retain, questions=questions,
        subject_roles=roles, config=config, analysis_datasets=datasets, analysis_subjects=subjects,
        analysis_max_texts=analysis_max_texts, analysis_layers=analysis_layers, analysis_questions=analysis_questions,
    )


def testbed_plan(
    testbed: Any = None, *, analysis_max_texts: int = 48, load_options: Mapping[str, Any] | None = None
) -> DemoPlan:
    """The ground-truth world: the testbed model, its forget/retain corpora and preset, every held-out
    question; roles from ``Testbed.forget_domain`` / ``adjacent_domain`` / ``distant_domains``.

    ``testbed``: a loaded Testbed (default: ``load_testbed()``, trained once and cached);
    ``load_options`` go to :func:`rmu_lens.load_model` when the testbed model is loaded.
    """
    from rmu_lens.testbed import load_testbed, testbed_rmu_config

    testbed = testbed if testbed is not None else load_testbed()
    roles = {testbed.forget_domain: "forget", testbed.adjacent_domain: "adjacent"}
    roles.update({d: "distant" for d in testbed.distant_domains})
    datasets: dict[str, tuple[Any, str]] = {}
    for domain, role in roles.items():
        datasets[domain] = (testbed.corpus(domain, qa=False), role)
    datasets["retain"] = (testbed.retain_corpus(), "retain")
    return DemoPlan(
        name=f"testbed {testbed.model_dir.name}", load_model=lambda: testbed.bridge(**(load_options or {})),
        forget=[testbed.forget_corpus()], retain=testbed.retain_corpus(), questions=testbed.questions(),
        subject_roles=roles, config=testbed_rmu_config(), analysis_datasets=datasets,
        analysis_max_texts=analysis_max_texts,
    )


# --- running -------------------------------------------------------------------------------


@dataclass
class DemoResult:
    """Where the demo wrote its files and what it found (``summary`` is summary.json)."""

    out: Path
    summary: dict[str, Any]

    @property
    def report(self) -> Path:
        return self.out / "report.html"


def check_output_dir(out: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse a non-empty ``out`` unless ``overwrite`` (then it is replaced only when the demo succeeds)."""
    from rmu_lens.rmu.rundir import check_writable_directory

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"out={out} (--out) exists and is not a directory: choose a directory path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"out={out} (--out) is not empty: choose a new directory, or pass overwrite=True (--overwrite) to replace it")
    return check_writable_directory(out, "out")


class _Steps:
    """Prints ``[i/N] what`` headers and records each step's wall time."""

    def __init__(self, log: Callable[[str], None], total: int = N_STEPS) -> None:
        self.log, self.seconds, self._index, self.total = log, {}, 0, total
        self._name: str | None = None
        self._started = 0.0

    def start(self, name: str, header: str) -> None:
        self.stop()
        self._index += 1
        self._name, self._started = name, time.perf_counter()
        self.log(f"[{self._index}/{self.total}] {header}")

    def substep(self, name: str, header: str) -> None:
        """A timed part of the current step, logged indented and not numbered."""
        self.stop()
        self._name, self._started = name, time.perf_counter()
        self.log(f"      {header}")

    def stop(self) -> None:
        if self._name is not None:
            self.seconds[self._name] = round(time.perf_counter() - self._started, 1)
            self._name = None


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_pipeline(
    plan: DemoPlan,
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    progress: bool = True,
    analysis: bool = True,
    audit: bool | Mapping[str, Any] = False,
    log: Callable[[str], None] = _stderr,
) -> DemoResult:
    """Run the demo described by ``plan`` and write ``out`` (layout in the module docstring).

    ``analysis=False`` skips the representation analysis (the report then shows accuracy and training
    only). ``audit=True`` adds the recovery audits (:func:`rmu_lens.audit.audit`: direction ablation,
    few-shot fine-tuning, probes) on the forget questions, with the distant ones as retain questions,
    written to ``audit/`` and shown as the report's robustness section; a mapping instead of True
    passes its items to :func:`~rmu_lens.audit.audit` as keyword options (e.g. a smaller ``finetune``). Step headers and the final summary go to ``log``; progress bars to stderr.
    """
    from rmu_lens._io import atomic_directory, atomic_write_json
    from rmu_lens.eval import compare, evaluate
    from rmu_lens.report import build_report
    from rmu_lens.rmu import unlearn

    out = check_output_dir(out, overwrite)
    steps = _Steps(log, N_STEPS + int(bool(audit)))
    started = time.perf_counter()
    n_sets = len({q.group for q in plan.questions})
    with atomic_directory(out) as staging:
        steps.start("load", f"loading {plan.name} (base and a copy for RMU)")
        base_model = plan.load_model()
        unlearned_model = plan.load_model()

        steps.start("eval_base", f"evaluating base model on {n_sets} question sets ({len(plan.questions)} questions, {plan.mode} mode)")
        base_eval = evaluate(base_model, plan.questions, mode=plan.mode, batch_size=plan.eval_batch_size, progress=progress)
        base_eval.meta["model"] = plan.name
        base_eval.save(staging / "eval_base.json")

        cfg = plan.config
        steps.start("rmu", f"RMU on {', '.join(c.name for c in plan.forget)}: up to {cfg.max_batches} steps, "
                           f"reading {cfg.read_hook}, training layers {cfg.update_layers}")
        run = unlearn(unlearned_model, plan.forget, plan.retain, cfg, out=staging / "run", progress=progress)

        steps.start("eval_unlearned", f"evaluating unlearned model on the same {len(plan.questions)} questions")
        new_eval = evaluate(unlearned_model, plan.questions, mode=plan.mode, batch_size=plan.eval_batch_size, progress=progress)
        new_eval.meta["model"] = f"{plan.name} after RMU (run/model)"
        new_eval.save(staging / "eval_unlearned.json")
        comparison = compare(base_eval, new_eval, forget_subjects=plan.forget_subjects)
        comparison.save(staging / "comparison.json")

        result_analysis = None
        if analysis:
            from rmu_lens.analysis import analyze

            steps.start("analysis", f"analyzing representations: {len(plan.analysis_datasets)} datasets, "
                                    f"up to {plan.analysis_max_texts} texts each, base vs unlearned")
            result_analysis = analyze(
                base_model, unlearned_model, plan.analysis_datasets,
                control_vectors=run.control_vectors, steering_coeffs=run.steering_coeffs, layer=cfg.layer,
                questions=plan.questions if plan.analysis_questions else None, comparison=comparison,
                layers=plan.analysis_layers,
                max_texts=plan.analysis_max_texts, subjects=plan.analysis_subjects or None, progress=progress,
            )
            result_analysis.save(staging / "analysis")
        else:
            steps.start("analysis", "representation analysis skipped")

        utility = None
        if plan.utility:
            utility = _utility_step(plan, base_model, unlearned_model, staging / "utility", steps, progress)

        robustness = None
        if audit:
            options = dict(audit) if isinstance(audit, Mapping) else {}
            robustness = _audit_step(plan, base_model, run, staging / "audit", steps, progress, options)

        steps.start("report", "writing figures and report")
        report = build_report(
            title=f"RMU on {plan.name}", base_eval=base_eval, unlearned_eval=new_eval,
            subject_roles=plan.subject_roles, run=run, comparison=comparison, analysis=result_analysis,
            robustness=robustness, utility=utility,
            meta={
                "model": plan.name,
                "forget": ", ".join(c.name for c in plan.forget),
                "retain": plan.retain.name,
                "read hook": cfg.read_hook,
                "steering coefficients": ", ".join(f"{t}: {c:.4g}" for t, c in run.steering_coeffs.items()),
                "steps": f"{len(run.history)} ({run.status})",
                "questions": f"{len(plan.questions)} ({plan.mode} mode)",
            },
        )
        report.save_figures(staging / "figures")
        report.save(staging / "report.html")
        steps.stop()
        summary = {
            "format": SUMMARY_FORMAT,
            "plan": plan.describe(),
            "headline": report.headline.to_dict(),
            "run_status": run.status,
            "steering_coeffs": run.steering_coeffs,
            "utility": utility.summary() if utility is not None else None,
            "figures": [f"figures/{f.name}.png" for f in report.all_figures()],
            "seconds": {**steps.seconds, "total": round(time.perf_counter() - started, 1)},
            "files": {
                "run": "run", "eval_base": "eval_base.json", "eval_unlearned": "eval_unlearned.json",
                "comparison": "comparison.json", "analysis": "analysis" if result_analysis is not None else None,
                "audit": "audit" if audit else None, "utility": "utility" if utility is not None else None,
                "figures": "figures", "report": "report.html",
            },
        }
        atomic_write_json(staging / "summary.json", summary)
    log(format_summary(summary, out))
    return DemoResult(out=out, summary=summary)


def _utility_step(plan: DemoPlan, base_model: Any, unlearned_model: Any, out: Path, steps: _Steps, progress: bool) -> Any:
    """Perplexity of both models on the analysis datasets and their completions of question prompts per role."""
    from rmu_lens.utility.section import question_prompts, utility_section

    datasets = plan.analysis_datasets or {c.name: (c, "forget") for c in plan.forget} | {"retain": (plan.retain, "retain")}
    prompts = question_prompts(plan.questions, plan.subject_roles, plan.utility_prompts_per_role)
    steps.substep("utility", f"utility: perplexity on {len(datasets)} datasets ({plan.utility_max_texts} texts each), "
                             f"{sum(map(len, prompts.values()))} prompts completed by both models")
    section = utility_section(base_model, unlearned_model, datasets, prompts, max_texts=plan.utility_max_texts,
                              generation=plan.generation, progress=progress)
    if plan.judge is not None and section.generations is not None:
        from rmu_lens.utility.judge import judge_generations

        judge_generations(section.generations, plan.judge)
    section.save(out)
    return section


def _audit_step(
    plan: DemoPlan, base_model: Any, run: Any, out: Path, steps: _Steps, progress: bool, options: dict[str, Any]
) -> dict[str, Any]:
    """Recovery audits of the demo's run: forget questions against the distant ones; the report section."""
    from rmu_lens.audit import audit

    forget_questions = [q for q in plan.questions if plan.subject_roles.get(q.subject) == "forget"]
    retain_questions = [q for q in plan.questions if plan.subject_roles.get(q.subject) == "distant"]
    steps.start("audit", f"recovery audits: ablation, few-shot fine-tuning, probes ({len(forget_questions)} forget questions)")
    result = audit(
        base_model, run, forget_questions=forget_questions, retain_questions=retain_questions or None,
        forget_texts=[text for corpus in plan.forget for text in corpus.texts], retain_texts=plan.retain.texts,
        mode=plan.mode, out=out, progress=progress, **options,
    )
    return result.report_section()


# --- `rmu-lens analyze` -------------------------------------------------------------------


def run_corpora(run_info: Mapping[str, Any]) -> dict[str, tuple[Any, str]]:
    """The forget and retain corpora a run was trained on, re-read from the sources run.json records.

    Bundled corpora and files are loaded again; testbed corpora come from the cached testbed directory.
    Data given to unlearn() in memory cannot be re-read: pass datasets explicitly then.
    """
    from rmu_lens.data.corpora import load_corpus

    datasets: dict[str, tuple[Any, str]] = {}
    entries = [(e, "forget") for e in run_info["data"]["forget"]] + [(e, "retain") for e in run_info["data"]["retain"]]
    for entry, role in entries:
        source, name = entry.get("source") or "", entry["name"]
        if source.startswith("testbed:"):
            corpus = _testbed_corpus(source)
        elif source.startswith("bundled:") or Path(source).is_file():
            corpus = load_corpus(source, name=name)
        else:
            raise ValueError(
                f"run.json records the {role} corpus {name!r} as {source!r}, which cannot be loaded again; "
                f"name the datasets yourself (--data NAME=SOURCE:ROLE, or datasets= in Python)"
            )
        datasets[name if name not in datasets else f"{name} ({role})"] = (corpus, role)
    return datasets


def _testbed_corpus(source: str) -> Any:
    from rmu_lens.models import cache_dir
    from rmu_lens.testbed import Testbed

    directory, _, domain = source[len("testbed:"):].partition("/")
    testbed = Testbed.from_dir(cache_dir() / "testbed" / directory)
    return testbed.retain_corpus() if domain == "retain" else testbed.corpus(domain)


def default_analysis_datasets(run_info: Mapping[str, Any]) -> tuple[dict[str, tuple[Any, str]], dict[str, str]]:
    """What `rmu-lens analyze` reads by default: the run's own corpora plus the bundled question sets
    as text (biology, computing: adjacent; geography, history: distant). Returns (datasets, dataset -> subject)."""
    datasets = run_corpora(run_info)
    extra, subjects = question_set_datasets(bundled_question_sets(None))
    for name, entry in extra.items():
        datasets.setdefault(name, entry)
    return datasets, subjects


def default_subject_roles(subjects: Sequence[str], forget_subjects: Sequence[str] | None) -> dict[str, str]:
    """Roles of evaluated subjects: the named forget subjects, the bundled sets' roles for the rest, else 'other'."""
    bundled = {}
    for name, role in SMOLLM2_QUESTION_SETS.items():
        bundled[{"cybersecurity": "computer_security"}.get(name, name)] = role
    forget = set(forget_subjects) if forget_subjects else {s for s in subjects if bundled.get(s) == "forget"}
    roles = {}
    for subject in subjects:
        if subject in forget:
            roles[subject] = "forget"
        else:
            role = bundled.get(subject, "other")
            roles[subject] = "other" if role == "forget" else role
    return roles


def plain_model_datasets() -> tuple[dict[str, tuple[Any, str]], dict[str, str]]:
    """Datasets for a model that has no run directory: the bundled virology and cybersecurity corpora
    (forget), the bundled retain corpus and the bundled question sets as text. Returns (datasets, subjects)."""
    from rmu_lens.data.corpora import load_corpus

    datasets: dict[str, tuple[Any, str]] = {
        "virology": (load_corpus("bundled:virology"), "forget"),
        "cybersecurity": (load_corpus("bundled:cybersecurity"), "forget"),
        "retain": (load_corpus("bundled:retain"), "retain"),
    }
    extra, subjects = question_set_datasets(bundled_question_sets(None))
    for name, entry in extra.items():
        datasets.setdefault(name, entry)
    return datasets, subjects


def _model_folder(source: Any) -> Path | None:
    """The local safetensors folder of a model source (embedded name or directory), else None (hub name, in memory)."""
    from rmu_lens.models import EMBEDDED_MODELS, embedded_model_dir

    if not isinstance(source, (str, os.PathLike)):
        return None
    text = os.fspath(source)
    if text in EMBEDDED_MODELS:
        return embedded_model_dir(text)
    path = Path(text)
    return path if path.is_dir() and any(path.glob("*.safetensors")) else None


def run_analysis(
    base: Any,
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    datasets: Mapping[str, tuple[Any, str]] | None = None,
    max_texts: int | None = 32,
    layers: Sequence[int] | None = None,
    evaluations: tuple[Any, Any] | None = None,
    forget_subjects: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = _stderr,
    load_options: Mapping[str, Any] | None = None,
) -> DemoResult:
    """`rmu-lens analyze`: the base model against an unlearned model, written to ``out`` as
    ``analysis/``, ``recovery.json``, ``figures/``, ``report.html`` and ``summary.json`` (atomically, like the demo).

    ``run_dir``: an RMU run directory (its recorded u, c and l are used, the estimate shown beside them)
    or any unlearned model — an HF folder or a hub name — whose u, c and l are estimated
    (:func:`rmu_lens.analysis.recover`). ``base``: a model source for :func:`rmu_lens.load_model` or a
    loaded bridge. ``datasets`` default to :func:`default_analysis_datasets` (a run) or
    :func:`plain_model_datasets`. ``evaluations`` = (base EvalResult, unlearned EvalResult) adds
    accuracy, the comparison and the damage table; ``forget_subjects`` names the forget subjects there.
    ``load_options`` (device, dtype, device_map ...) go to :func:`rmu_lens.load_model` for both models.
    """
    from rmu_lens._io import atomic_directory, atomic_write_json
    from rmu_lens.analysis import analyze_model
    from rmu_lens.analysis.recover import recover
    from rmu_lens.eval import compare
    from rmu_lens.models import load_model
    from rmu_lens.report import build_report
    from rmu_lens.rmu.rundir import read_run

    out = check_output_dir(out, overwrite)
    is_run = isinstance(run_dir, (str, os.PathLike)) and (Path(run_dir) / "run.json").is_file()
    source = Path(run_dir) / "model" if is_run else run_dir
    label = Path(run_dir).name if isinstance(run_dir, (str, os.PathLike)) else "in memory"
    info = read_run(Path(run_dir)) if is_run else {}
    subjects: dict[str, str] = {}
    if datasets is None:
        datasets, subjects = default_analysis_datasets(info) if is_run else plain_model_datasets()
    comparison, roles = None, {}
    if evaluations is not None:
        base_eval, new_eval = evaluations
        roles = default_subject_roles(sorted({r["subject"] for r in base_eval.records}), forget_subjects)
        comparison = compare(base_eval, new_eval, forget_subjects=[s for s, r in roles.items() if r == "forget"])
        subjects = {name: subject for name, subject in subjects.items() if subject in roles}
    steps = _Steps(log, total=4)
    started = time.perf_counter()
    with atomic_directory(out) as staging:
        steps.start("load", f"loading the base model {base if isinstance(base, (str, os.PathLike)) else ''} and {source}")
        options = dict(load_options or {})
        base_model = load_model(base, **options) if isinstance(base, (str, os.PathLike)) else base
        unlearned_model = load_model(source, **options) if isinstance(source, (str, os.PathLike)) else source
        folders = (_model_folder(base), _model_folder(source))
        steps.start("recover", "estimating the steered layer, direction and scale, and the changed tensors")
        forget = {name: entry[0] for name, entry in datasets.items() if entry[1] == "forget"}
        retain = [entry[0] for entry in datasets.values() if entry[1] == "retain"]
        if not forget or not retain:
            raise ValueError("the datasets need at least one forget set and one retain set (--data NAME=SOURCE:forget ...)")
        recovery = recover(base_model, unlearned_model, forget, retain[0], layers=layers, max_texts=max_texts,
                           weights=folders if None not in folders else None, progress=progress)
        recovery.save(staging)
        steps.start("analysis", f"analyzing representations: {len(datasets)} datasets, up to {max_texts} texts each")
        analysis = analyze_model(
            base_model, unlearned_model, datasets, run=Path(run_dir) if is_run else None, recovery=recovery,
            layers=layers, max_texts=max_texts, comparison=comparison, subjects=subjects or None, progress=progress,
        )
        analysis.save(staging / "analysis")
        steps.start("report", "writing figures and report")
        if comparison is not None:
            comparison.save(staging / "comparison.json")
        coeffs = info.get("steering_coeffs") or {t: c for t, c in analysis.collapse.steering_coeffs.items()}
        meta = {"base model": str(base) if isinstance(base, (str, os.PathLike)) else "in memory",
                "unlearned model" if not is_run else "run": label,
                "read hook": info.get("read_hook", f"blocks.{analysis.meta['layer']}.hook_resid_post (estimated)"),
                "steering coefficients": ", ".join(f"{t}: {c:.4g}" for t, c in coeffs.items()),
                **{f"recovered: {k}": v for k, v in recovery.verdicts().items()}}
        if recovery.nothing_changed:
            meta["recovered: weights"] = "nothing changed: the two models are identical"
        if is_run:
            for topic, row in (analysis.meta["recovery"]["check"] or {}).items():
                meta[f"estimate vs run: {topic}"] = (
                    f"l̂ {row['layer_hat']} (l {row['layer']}), cos(û, u) {row['cos_u']:.4f}, ĉ/c {row['c_ratio']:.3f}"
                    if row["cos_u"] is not None else f"not collapsed (l {row['layer']})")
        report = build_report(
            title=f"RMU analysis of {label}", base_eval=evaluations[0] if evaluations else None,
            unlearned_eval=evaluations[1] if evaluations else None, subject_roles=roles, run=info or None,
            comparison=comparison, analysis=analysis, meta=meta,
        )
        report.save_figures(staging / "figures")
        report.save(staging / "report.html")
        steps.stop()
        summary = {
            "format": SUMMARY_FORMAT,
            "plan": {"name": f"analysis of {label}", "mode": evaluations[0].mode if evaluations else None,
                     "datasets": {name: role for name, (_, role) in datasets.items()}, "max_texts": max_texts,
                     "layers": list(layers) if layers else None},
            "headline": report.headline.to_dict(),
            "recovery": analysis.meta["recovery"],
            "figures": [f"figures/{f.name}.png" for f in report.all_figures()],
            "seconds": {**steps.seconds, "total": round(time.perf_counter() - started, 1)},
        }
        atomic_write_json(staging / "summary.json", summary)
    log(format_summary(summary, out))
    return DemoResult(out=out, summary=summary)


def run_side_by_side(
    base: Any,
    unlearned: Mapping[str, Any] | Sequence[Any],
    out: str | os.PathLike,
    *,
    datasets: Mapping[str, tuple[Any, str]] | None = None,
    max_texts: int | None = 32,
    layers: Sequence[int] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = _stderr,
    load_options: Mapping[str, Any] | None = None,
) -> DemoResult:
    """`rmu-lens analyze --unlearned A B C`: several unlearned models of one base on the same datasets.

    ``unlearned``: sources (run directories, HF folders, hub names) or a mapping name -> source. Writes
    ``models/NAME/`` (``recovery.json``, ``analysis/``) per model, ``side_by_side.json`` and ``report.html``
    (one table: each model's collapse and per-dataset shift). The base model is loaded once and its
    activations for the estimate are collected once (``recover``'s ``base_cache``).
    """
    import html as html_module

    from rmu_lens._io import atomic_directory, atomic_write_json
    from rmu_lens.analysis import analyze_model
    from rmu_lens.analysis.recover import recover
    from rmu_lens.analysis.side_by_side import side_by_side
    from rmu_lens.models import load_model

    out = check_output_dir(out, overwrite)
    if not isinstance(unlearned, Mapping):
        sources = list(unlearned)
        names = [Path(os.fspath(s)).name or os.fspath(s) for s in sources]
        if len(set(names)) < len(names):
            names = [f"{i + 1}-{n}" for i, n in enumerate(names)]
        unlearned = dict(zip(names, sources))
    if not unlearned:
        raise ValueError("no unlearned models given: pass one or more sources")
    if datasets is None:
        datasets, _ = plain_model_datasets()
    forget = {name: entry[0] for name, entry in datasets.items() if entry[1] == "forget"}
    retain = [entry[0] for entry in datasets.values() if entry[1] == "retain"]
    if not forget or not retain:
        raise ValueError("the datasets need at least one forget set and one retain set (--data NAME=SOURCE:forget ...)")
    options = dict(load_options or {})
    steps = _Steps(log, total=len(unlearned) + 2)
    started = time.perf_counter()
    with atomic_directory(out) as staging:
        steps.start("load", f"loading the base model {base if isinstance(base, (str, os.PathLike)) else ''}")
        base_model = load_model(base, **options) if isinstance(base, (str, os.PathLike)) else base
        cache: dict[str, Any] = {}
        results = {}
        for name, source in unlearned.items():
            steps.start(name, f"{name}: estimating u, c, l and analyzing")
            is_run = isinstance(source, (str, os.PathLike)) and (Path(source) / "run.json").is_file()
            model_source = Path(source) / "model" if is_run else source
            model = load_model(model_source, **options) if isinstance(model_source, (str, os.PathLike)) else model_source
            folders = (_model_folder(base), _model_folder(model_source))
            recovery = recover(base_model, model, forget, retain[0], layers=layers, max_texts=max_texts,
                               weights=folders if None not in folders else None, base_cache=cache, progress=progress)
            analysis = analyze_model(base_model, model, datasets, run=Path(source) if is_run else None, recovery=recovery,
                                     layers=layers, max_texts=max_texts, progress=progress)
            recovery.save(staging / "models" / name)
            analysis.save(staging / "models" / name / "analysis")
            results[name] = (recovery, analysis, None)
            del model
        steps.start("report", "writing the side-by-side table")
        table = side_by_side(results)
        atomic_write_json(staging / "side_by_side.json", table.to_dict())
        verdicts = "".join(
            f"<h2>{html_module.escape(name)}</h2><ul>" + "".join(
                f"<li>{html_module.escape(k)}: {html_module.escape(v)}</li>" for k, v in rec.verdicts().items()) + "</ul>"
            for name, (rec, _, _) in results.items())
        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>RMU analysis: {len(results)} models</title>"
                f"<style>table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px}}</style></head><body>"
                f"<h1>{len(results)} unlearned models of {html_module.escape(str(base) if isinstance(base, (str, os.PathLike)) else 'the base')}</h1>"
                f"{table.html()}{verdicts}</body></html>")
        (staging / "report.html").write_text(page, encoding="utf-8")
        steps.stop()
        summary = {"format": SUMMARY_FORMAT, "models": list(results), "rows": table.rows,
                   "seconds": {**steps.seconds, "total": round(time.perf_counter() - started, 1)}}
        atomic_write_json(staging / "summary.json", summary)
    log(f"wrote {out}: {len(results)} models side by side (report.html, side_by_side.json)")
    return DemoResult(out=out, summary=summary)


def _utility_lines(utility: Mapping[str, Any] | None) -> list[str]:
    """Bits per byte per dataset before -> after, and the base model's loss on each model's text per role."""
    from rmu_lens.eval.results import format_table

    if not utility:
        return []
    lines = []
    if utility.get("perplexity"):
        rows = [[name, row["role"], str(row["n_texts"]), f"{row['base']['bits_per_byte']:.3f}", f"{row['unlearned']['bits_per_byte']:.3f}",
                 f"{row['base']['word_perplexity']:.4g}", f"{row['unlearned']['word_perplexity']:.4g}"]
                for name, row in utility["perplexity"].items()]
        lines += ["", "perplexity (lm-eval rolling windows)",
                  format_table(["dataset", "role", "texts", "bits/byte before", "after", "word ppl before", "after"], rows)]
    if utility.get("generations"):
        rows = []
        for role, measures in utility["generations"].items():
            loss, repeats = measures["base_loss"], measures["repeated_ngram_rate"]
            rows.append([role, str(loss["unlearned"]["n"]), f"{loss['base']['mean']:.3f}", f"{loss['unlearned']['mean']:.3f}",
                         f"[{loss['unlearned']['low']:.3f}, {loss['unlearned']['high']:.3f}]",
                         f"{repeats['base']['mean']:.3f}", f"{repeats['unlearned']['mean']:.3f}"])
        lines += ["", "generations: base-model loss (nats/token) and repeated n-gram rate of each model's greedy text",
                  format_table(["prompts", "n", "loss base", "loss unlearned", "95% CI", "repeats base", "repeats unlearned"], rows)]
    return lines


def format_summary(summary: Mapping[str, Any], out: str | os.PathLike | None = None) -> str:
    """The demo's final printout: accuracy per role before → after, the layer-l signature, timings."""
    from rmu_lens.eval.results import format_table
    from rmu_lens.report.headline import ROLE_LABELS

    headline = summary["headline"]
    rows = [
        [ROLE_LABELS.get(role, role), str(row["n"]), f"{row['base_acc']:.3f}", f"{row['unlearned_acc']:.3f}", f"{row['change']:+.3f}"]
        for role, row in headline["accuracy"].items()
    ]
    lines = [""]
    if rows:
        lines += [f"accuracy ({headline['metric']}, {summary['plan']['mode']} mode)",
                  format_table(["questions", "n", "before", "after", "change"], rows)]
    if headline["training"]:
        lines.append("")
        signature = [
            [topic, f"{s['steering_coeff']:.4g}", f"{s['forget_norm_start']:.4g}", f"{s['forget_norm_end']:.4g}",
             f"{s['forget_cos_end']:.3f}", f"{s['retain_cos_end']:.3f}"]
            for topic, s in headline["training"].items()
        ]
        lines.append(format_table(["forget topic", "c", "norm start", "norm end", "cos forget", "cos retain"], signature))
    datasets = (headline.get("representations") or {}).get("datasets") or {}
    if datasets:
        hook = headline["representations"].get("hook", "layer l")
        lines += ["", f"representations at {hook} (base -> unlearned)"]
        rows = [
            [name, row["role"], f"{row['norm_base']:.4g}", f"{row['norm_unlearned']:.4g}",
             f"{row['steering_coeff']:.4g}" if "steering_coeff" in row else "", f"{row['cos_unlearned_base']:.3f}"]
            for name, row in datasets.items()
        ]
        lines.append(format_table(["dataset", "role", "norm base", "norm after", "c", "cos(after, base)"], rows))
    lines += _utility_lines(summary.get("utility"))
    seconds = summary["seconds"]
    lines.append("")
    lines.append("time: " + ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items()))
    if out is not None:
        lines.append(f"report: {Path(out) / 'report.html'}")
    return "\n".join(lines)
