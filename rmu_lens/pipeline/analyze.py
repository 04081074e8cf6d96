"""`rmu-lens analyze`: a base model against a run directory or any unlearned model (u, c and l estimated)."""

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


def model_folder(source: Any) -> Path | None:
    """The local safetensors folder of a model source (embedded name or directory), else None (hub name, in memory)."""
    from rmu_lens.models import EMBEDDED_MODELS, embedded_model_dir

    if not isinstance(source, (str, os.PathLike)):
        return None
    text = os.fspath(source)
    if text in EMBEDDED_MODELS:
        return embedded_model_dir(text)
    path = Path(text)
    return path if path.is_dir() and any(path.glob("*.safetensors")) else None


def is_run_directory(source: Any) -> bool:
    return isinstance(source, (str, os.PathLike)) and (Path(source) / "run.json").is_file()


def unlearned_source(source: Any) -> tuple[Any, Any]:
    """(the run record or None, the model to load): a run directory's ``model/``, else ``source`` itself."""
    from rmu_lens.rmu.record import RMURun

    if is_run_directory(source):
        return RMURun.load(source), Path(source) / "model"
    return None, source


def load_source(source: Any, options: Mapping[str, Any]) -> Any:
    """A bridge for a model source (loaded with ``options``); an already loaded model as it is."""
    from rmu_lens.models import load_model

    return load_model(source, **options) if isinstance(source, (str, os.PathLike)) else source


def weight_folders(base: Any, unlearned: Any) -> tuple[Path, Path] | None:
    """Both models' safetensors folders, for a shard-by-shard weight diff; None unless both are local."""
    folders = (model_folder(base), model_folder(unlearned))
    return None if None in folders else folders


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
    from rmu_lens.analysis import analyze_model
    from rmu_lens.analysis.analyze import forget_and_retain
    from rmu_lens.analysis.recover import recover
    from rmu_lens.eval import compare
    from rmu_lens.report import build_report

    output = StagedOutput(out, overwrite, log, total_steps=4)
    run, source = unlearned_source(run_dir)
    is_run = run is not None
    label = Path(run_dir).name if isinstance(run_dir, (str, os.PathLike)) else "in memory"
    subjects: dict[str, str] = {}
    if datasets is None:
        datasets, subjects = default_analysis_datasets(run.record) if is_run else plain_model_datasets()
    forget, retain = forget_and_retain(datasets)
    comparison, roles = None, {}
    if evaluations is not None:
        base_eval, new_eval = evaluations
        roles = default_subject_roles(sorted({r["subject"] for r in base_eval.records}), forget_subjects)
        comparison = compare(base_eval, new_eval, forget_subjects=[s for s, r in roles.items() if r == "forget"])
        subjects = {name: subject for name, subject in subjects.items() if subject in roles}
    steps = output.steps
    with output.staging() as staging:
        steps.start("load", f"loading the base model {base if isinstance(base, (str, os.PathLike)) else ''} and {source}")
        options = dict(load_options or {})
        base_model, unlearned_model = load_source(base, options), load_source(source, options)
        steps.start("recover", "estimating the steered layer, direction and scale, and the changed tensors")
        recovery = recover(base_model, unlearned_model, forget, retain, layers=layers, max_texts=max_texts,
                           weights=weight_folders(base, source), progress=progress)
        recovery.save(staging)
        steps.start("analysis", f"analyzing representations: {len(datasets)} datasets, up to {max_texts} texts each")
        analysis = analyze_model(
            base_model, unlearned_model, datasets, run=run, recovery=recovery,
            layers=layers, max_texts=max_texts, comparison=comparison, subjects=subjects or None, progress=progress,
        )
        analysis.save(staging / "analysis")
        steps.start("report", "writing figures and report")
        if comparison is not None:
            comparison.save(staging / "comparison.json")
        coeffs = run.steering_coeffs if run is not None else dict(analysis.collapse.steering_coeffs)
        meta = {"base model": str(base) if isinstance(base, (str, os.PathLike)) else "in memory",
                "run" if is_run else "unlearned model": label,
                "read hook": run.config.read_hook if run is not None
                else f"blocks.{analysis.meta['layer']}.hook_resid_post (estimated)",
                "steering coefficients": ", ".join(f"{t}: {c:.4g}" for t, c in coeffs.items())}
        report = build_report(  # the recovery section: verdicts, the check against the run's u, c, l, figures
            title=f"RMU analysis of {label}", base_eval=evaluations[0] if evaluations else None,
            unlearned_eval=evaluations[1] if evaluations else None, subject_roles=roles, run=run,
            comparison=comparison, analysis=analysis, recovery=recovery, meta=meta,
        )
        result = output.finish(staging, report, {
            "name": f"analysis of {label}", "mode": evaluations[0].mode if evaluations else None,
            "datasets": {name: role for name, (_, role) in datasets.items()}, "max_texts": max_texts,
            "layers": list(layers) if layers else None,
        }, recovery=analysis.meta["recovery"])
    return result
