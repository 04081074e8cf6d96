"""`rmu-lens analyze`: a base model against a run directory's model/, with the run's own corpora by default."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rmu_lens.pipeline.plans import SMOLLM2_QUESTION_SETS, bundled_question_sets, question_set_datasets
from rmu_lens.pipeline.staging import DemoResult, StagedOutput, stderr_log


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
                f"name the datasets yourself (datasets=, or --data NAME=SOURCE:ROLE on the command line)"
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
    log: Callable[[str], None] = stderr_log,
    load_options: Mapping[str, Any] | None = None,
) -> DemoResult:
    """`rmu-lens analyze`: the base model against a run directory's model/, written to ``out`` as
    ``analysis/``, ``figures/``, ``report.html`` and ``summary.json`` (atomically, like the demo).

    ``base``: a model source for :func:`rmu_lens.load_model` or a loaded bridge. ``datasets`` default to
    :func:`default_analysis_datasets`. ``evaluations`` = (base EvalResult, unlearned EvalResult) adds
    accuracy, the comparison and the damage table; ``forget_subjects`` names the forget subjects there.
    ``load_options`` (device, dtype, device_map ...) go to :func:`rmu_lens.load_model` for both models.
    """
    from rmu_lens.analysis import analyze_run
    from rmu_lens.eval import compare
    from rmu_lens.models import load_model
    from rmu_lens.report import build_report
    from rmu_lens.rmu.record import RMURun

    output = StagedOutput(out, overwrite, log, total_steps=3)
    run_dir = Path(run_dir)
    run = RMURun.load(run_dir)
    info = run.record
    subjects: dict[str, str] = {}
    if datasets is None:
        datasets, subjects = default_analysis_datasets(info)
    comparison, roles = None, {}
    if evaluations is not None:
        base_eval, new_eval = evaluations
        roles = default_subject_roles(sorted({r["subject"] for r in base_eval.records}), forget_subjects)
        comparison = compare(base_eval, new_eval, forget_subjects=[s for s, r in roles.items() if r == "forget"])
        subjects = {name: subject for name, subject in subjects.items() if subject in roles}
    steps = output.steps
    with output.staging() as staging:
        steps.start("load", f"loading the base model {base if isinstance(base, (str, os.PathLike)) else ''} and {run_dir / 'model'}")
        options = dict(load_options or {})
        base_model = load_model(base, **options) if isinstance(base, (str, os.PathLike)) else base
        unlearned_model = load_model(run_dir / "model", **options)
        steps.start("analysis", f"analyzing representations: {len(datasets)} datasets, up to {max_texts} texts each")
        analysis = analyze_run(
            base_model, run, datasets, unlearned_model=unlearned_model, layers=layers, max_texts=max_texts,
            comparison=comparison, subjects=subjects or None, progress=progress,
        )
        analysis.save(staging / "analysis")
        steps.start("report", "writing figures and report")
        if comparison is not None:
            comparison.save(staging / "comparison.json")
        report = build_report(
            title=f"RMU analysis of {run_dir.name}", base_eval=evaluations[0] if evaluations else None,
            unlearned_eval=evaluations[1] if evaluations else None, subject_roles=roles, run=run,
            comparison=comparison, analysis=analysis,
            meta={"base model": str(base) if isinstance(base, (str, os.PathLike)) else "in memory",
                  "run": run_dir.name, "read hook": run.config.read_hook,
                  "steering coefficients": ", ".join(f"{t}: {c:.4g}" for t, c in run.steering_coeffs.items())},
        )
        result = output.finish(staging, report, {
            "name": f"analysis of {run_dir.name}", "mode": evaluations[0].mode if evaluations else None,
            "datasets": {name: role for name, (_, role) in datasets.items()}, "max_texts": max_texts,
            "layers": list(layers) if layers else None,
        })
    return result
