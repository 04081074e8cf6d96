"""`rmu-lens analyze --unlearned A B C`: several unlearned models of one base in one staged report.

    result = run_side_by_side("smollm2-135m", {"rmu": "runs/a/run", "other": "some/model"}, "runs/two",
                              questions=bundled_question_sets())      # {name: (questions or source, role)}
    result.summary["rows"]                                             # the side-by-side table

The base model is loaded once, evaluated once on the questions, and its activations — for the
estimate of u, c and l and for the analysis — are collected once (``base_cache``). Each unlearned
model is loaded in turn, evaluated on the same questions, compared with the base, estimated and
analysed on the same datasets (damage from the comparison), then dropped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rmu_lens.errors import RMULensError
from rmu_lens.pipeline.analyze import (
    load_source,
    plain_model_datasets,
    unlearned_source,
    weight_folders,
)
from rmu_lens.pipeline.plans import SMOLLM2_QUESTION_SETS
from rmu_lens.pipeline.staging import DemoResult, StagedOutput, stderr_log

FIRST_FIGURES = ("norms", "cos_u", "damage", "accuracy_change")
"""Figure rows the page shows first: the collapse, the damage map and the accuracy change; the rest follow."""
QUESTION_ROLES = ("forget", "adjacent", "distant")
"""Roles a question set may take here (the report pools accuracy per role)."""


class SideBySideError(RMULensError, ValueError):
    """Models or question sets that cannot go side by side: the message names them and what would work."""


def model_names(unlearned: Mapping[str, Any] | Sequence[Any]) -> dict[str, Any]:
    """name -> source: a mapping as given, or sources named after their folders (numbered if two clash).

    A name becomes a folder (``models/NAME/``, ``figures/NAME/``): one path component, not ``.`` or ``..``.
    """
    if isinstance(unlearned, Mapping):
        named = {str(k): v for k, v in unlearned.items()}
    else:
        sources = list(unlearned)
        names = [Path(os.fspath(s)).name or os.fspath(s) if isinstance(s, (str, os.PathLike)) else f"model-{i + 1}"
                 for i, s in enumerate(sources)]
        if len(set(names)) < len(names):
            names = [f"{i + 1}-{n}" for i, n in enumerate(names)]
        named = dict(zip(names, sources))
    if not named:
        raise SideBySideError("no unlearned models given: pass one or more sources")
    bad = [n for n in named if not n or n in (".", "..") or "/" in n or "\\" in n or "\0" in n]
    if bad:
        raise SideBySideError(f"model names {bad} cannot name a folder: give names without '/' or '\\' "
                              f"(unlearned={{name: source}})")
    return named


def load_question_sets(
    questions: Mapping[str, tuple[Any, str]] | Sequence[tuple[Any, str]], limit: int | None = None
) -> tuple[dict[str, list[Any]], dict[str, str]]:
    """(set name -> questions, subject -> role) from ``{name: (source | [Question], role)}`` or a list of
    ``(source | [Question], role)``. A source goes to :func:`rmu_lens.eval.load_questions` (first
    ``limit`` of each subject); every subject of a set takes the set's role."""
    from rmu_lens.eval import load_questions

    entries = list(questions.items()) if isinstance(questions, Mapping) else [(None, e) for e in questions]
    if not entries:
        raise SideBySideError("questions is empty: give question sets with roles, or None for no evaluation")
    sets: dict[str, list[Any]] = {}
    roles: dict[str, str] = {}
    for name, entry in entries:
        if not isinstance(entry, (tuple, list)) or len(entry) != 2:
            raise SideBySideError(f"question set {name or entry!r}: give (source or questions, role), role in {QUESTION_ROLES}")
        data, role = entry
        if role not in QUESTION_ROLES:
            raise SideBySideError(f"question set {name or data!r}: role={role!r}; choose one of {QUESTION_ROLES}")
        loaded = load_questions(data, limit=limit) if isinstance(data, (str, os.PathLike)) else list(data)
        if not loaded:
            raise SideBySideError(f"question set {name or data!r} holds no questions")
        key = str(name) if name is not None else (os.fspath(data) if isinstance(data, (str, os.PathLike)) else loaded[0].group)
        if key in sets:
            raise SideBySideError(f"question set {key!r} is given twice: give each set once")
        sets[key] = loaded
        for subject in sorted({q.group for q in loaded}):
            if roles.get(subject, role) != role:
                raise SideBySideError(f"subject {subject!r} is given two roles, {roles[subject]!r} and {role!r}: "
                                      f"give each subject one role")
            roles[subject] = role
    return sets, roles


def bundled_role(source: str) -> str:
    """The role of a bundled question set named by ``source`` (``bundled:NAME[:SPLIT]``), for the CLI."""
    name = source.removeprefix("bundled:").partition(":")[0] if source.startswith("bundled:") else None
    if name not in SMOLLM2_QUESTION_SETS:
        raise SideBySideError(f"--questions {source}: give its role as SOURCE:ROLE (roles: {', '.join(QUESTION_ROLES)}); "
                              f"only the bundled sets have a known role")
    return SMOLLM2_QUESTION_SETS[name]


def dataset_subjects(
    datasets: Mapping[str, Any], sets: Mapping[str, list[Any]], known: Mapping[str, str], roles: Mapping[str, str]
) -> dict[str, str]:
    """Dataset -> evaluated subject for the damage table: ``known`` pairs, else a question set of the
    dataset's own name with one subject; only subjects that were evaluated."""
    pairs = {}
    for name in datasets:
        if name in known:
            pairs[name] = known[name]
        elif name in sets and len({q.group for q in sets[name]}) == 1:
            pairs[name] = sets[name][0].group
    return {name: subject for name, subject in pairs.items() if subject in roles}


@dataclass
class SideBySideHeadline:
    """summary.json's ``headline``: the keys of a single report's (empty here), and each model's own."""

    metric: str
    models: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "accuracy": {}, "training": {}, "representations": {},
                "models": {name: headline.to_dict() for name, headline in self.models.items()}}


@dataclass
class SideBySideReport:
    """The side-by-side page: the table, then per model its verdicts, accuracy and figures in one column each.

    ``models`` holds each model's own :class:`~rmu_lens.report.build.Report` (headline and figures, as
    ``rmu-lens analyze`` would build it for that model alone); ``comparisons`` their Comparison or None.
    """

    title: str
    table: Any
    models: dict[str, Any]
    verdicts: dict[str, dict[str, str]]
    comparisons: dict[str, Any] = field(default_factory=dict)
    subject_roles: dict[str, str] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def headline(self) -> SideBySideHeadline:
        metric = next((r.headline.metric for r in self.models.values()), "acc")
        return SideBySideHeadline(metric, {name: report.headline for name, report in self.models.items()})

    def all_figures(self) -> list[Any]:
        """Every model's figures, named ``MODEL/FIGURE`` (saved as ``figures/MODEL/FIGURE.png``)."""
        return [replace(f, name=f"{name}/{f.name}") for name, report in self.models.items() for f in report.all_figures()]

    def save_figures(self, directory: str | os.PathLike) -> list[Path]:
        from rmu_lens.report.build import write_figures

        return write_figures(self.all_figures(), directory)

    def html(self) -> str:
        import base64

        from markupsafe import Markup

        from rmu_lens._templates import render

        names = list(self.models)
        found = list(dict.fromkeys(f.name for report in self.models.values() for f in report.all_figures()))
        figure_names = [f for f in FIRST_FIGURES if f in found] + [f for f in found if f not in FIRST_FIGURES]
        captions = {f.name: f.caption for report in self.models.values() for f in report.all_figures()}
        figures = {name: {f.name: base64.b64encode(f.png).decode("ascii") for f in report.all_figures()}
                   for name, report in self.models.items()}
        accuracy = {name: [self._change_row(row) for row in (c.rows + c.pooled)] if c is not None else []
                    for name, c in self.comparisons.items()}
        metric = next((c.metric for c in self.comparisons.values() if c is not None), None)
        html = render("side_by_side.html", title=self.title, meta=self.meta, table_html=Markup(self.table.html()),
                      names=names, verdicts=self.verdicts, accuracy=accuracy, metric=metric,
                      figure_names=figure_names, captions=captions, figures=figures)
        return html.rstrip("\n") + "\n"

    def _change_row(self, row: Any) -> dict[str, Any]:
        return {"subject": row.subject, "role": self.subject_roles.get(row.subject, row.role), "n": row.n,
                "base_acc": row.base_acc, "new_acc": row.new_acc, "delta": row.delta, "ci": (row.ci_low, row.ci_high),
                "significant": row.significant, "note": row.note}

    def save(self, path: str | os.PathLike) -> Path:
        from rmu_lens._io import atomic_write_text

        return atomic_write_text(path, self.html())


def _label(source: Any) -> str:
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else "in memory"


def run_side_by_side(
    base: Any,
    unlearned: Mapping[str, Any] | Sequence[Any],
    out: str | os.PathLike,
    *,
    datasets: Mapping[str, tuple[Any, str]] | None = None,
    questions: Mapping[str, tuple[Any, str]] | Sequence[tuple[Any, str]] | None = None,
    question_limit: int | None = None,
    mode: str = "cloze",
    batch_size: int = 16,
    max_texts: int | None = 32,
    layers: Sequence[int] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = stderr_log,
    load_options: Mapping[str, Any] | None = None,
) -> DemoResult:
    """Several unlearned models of one base on the same datasets and questions, in one report.

    ``unlearned``: sources (run directories, HF folders, hub names, loaded bridges) or a mapping
    name -> source. ``questions``: ``{name: (source or [Question], role)}`` (or a list of such pairs;
    roles forget / adjacent / distant), evaluated in ``mode`` on the base once and on every model;
    None: no evaluation. A dataset and a question set of the same name pair up in the damage table.
    Writes, atomically like ``rmu-lens analyze``: ``eval_base.json``; per model ``models/NAME/``
    (``recovery.json``, ``analysis/``, ``eval.json``, ``comparison.json``); ``figures/NAME/*.png``;
    ``side_by_side.json``; ``report.html`` (the table, then per model its collapse, damage and accuracy
    next to the others'); ``summary.json``. A non-empty ``out`` is refused unless ``overwrite``.
    """
    from rmu_lens.analysis import analyze_model
    from rmu_lens.analysis.analyze import forget_and_retain
    from rmu_lens.analysis.base_cache import recover_cache
    from rmu_lens.analysis.recover import recover
    from rmu_lens.analysis.side_by_side import side_by_side
    from rmu_lens.eval import compare, evaluate
    from rmu_lens.report import build_report

    named = model_names(unlearned)
    output = StagedOutput(out, overwrite, log, total_steps=len(named) + 2 + (questions is not None))
    known_subjects: dict[str, str] = {}
    if datasets is None:
        datasets, known_subjects = plain_model_datasets()
    forget, retain = forget_and_retain(datasets)
    sets, roles = load_question_sets(questions, question_limit) if questions is not None else ({}, {})
    all_questions = [q for subset in sets.values() for q in subset]
    subjects = dataset_subjects(datasets, sets, known_subjects, roles)
    forget_subjects = sorted(s for s, r in roles.items() if r == "forget")
    options = dict(load_options or {})
    steps = output.steps
    settings = dict(layers=layers, max_texts=max_texts, max_length=128)
    with output.staging() as staging:
        steps.start("load", f"loading the base model {_label(base)}")
        base_model = load_source(base, options)
        base_eval = None
        if all_questions:
            steps.start("base eval", f"evaluating the base model once: {len(all_questions)} questions, {mode} mode")
            base_eval = evaluate(base_model, all_questions, mode=mode, batch_size=batch_size, progress=progress)
            base_eval.save(staging / "eval_base.json")
        cache: dict[Any, Any] = {}
        results, reports, comparisons, verdicts, recoveries = {}, {}, {}, {}, {}
        for name, source in named.items():
            steps.start(f"model {name}", f"{name}: {'evaluating, ' if all_questions else ''}estimating u, c, l and analyzing")
            run, model_source = unlearned_source(source)
            model = load_source(model_source, options)
            folder = staging / "models" / name
            new_eval = comparison = None
            if base_eval is not None:
                new_eval = evaluate(model, all_questions, mode=mode, batch_size=batch_size, progress=progress)
                comparison = compare(base_eval, new_eval, forget_subjects=forget_subjects)
                folder.mkdir(parents=True, exist_ok=True)
                new_eval.save(folder / "eval.json")
                comparison.save(folder / "comparison.json")
            recovery = recover(base_model, model, forget, retain, **settings, weights=weight_folders(base, model_source),
                               base_cache=recover_cache(cache, base_model, forget, retain, **settings), progress=progress)
            analysis = analyze_model(base_model, model, datasets, run=run, recovery=recovery, layers=layers,
                                     max_texts=max_texts, comparison=comparison, subjects=subjects or None,
                                     base_cache=cache, progress=progress)
            recovery.save(folder)
            analysis.save(folder / "analysis")
            report = build_report(title=name, base_eval=base_eval, unlearned_eval=new_eval, subject_roles=roles,
                                  run=run, comparison=comparison, analysis=analysis, recovery=recovery)
            results[name] = (recovery, analysis, comparison)
            reports[name], comparisons[name], verdicts[name] = report, comparison, recovery.verdicts()
            recoveries[name] = analysis.meta["recovery"]
            del model
        steps.start("report", "writing the side-by-side table, figures and report")
        table = side_by_side(results, roles)
        from rmu_lens._io import atomic_write_json

        atomic_write_json(staging / "side_by_side.json", table.to_dict())
        meta = {"base model": _label(base), "models": ", ".join(f"{n}: {_label(s)}" for n, s in named.items()),
                "datasets": ", ".join(f"{n} ({role})" for n, (_, role) in datasets.items()),
                "questions": (f"{len(all_questions)} in {mode} mode: " + ", ".join(f"{s} ({r})" for s, r in roles.items()))
                if all_questions else "none (no evaluation)"}
        of = _label(base) if isinstance(base, (str, os.PathLike)) else "one base model"
        page = SideBySideReport(title=f"RMU analysis: {len(named)} unlearned models of {of}", table=table,
                                models=reports, verdicts=verdicts, comparisons=comparisons, subject_roles=roles, meta=meta)
        log(table.text())
        result = output.finish(staging, page, {
            "name": f"side by side of {len(named)} models", "mode": mode if all_questions else None,
            "models": {n: _label(s) for n, s in named.items()},
            "datasets": {n: role for n, (_, role) in datasets.items()}, "questions": roles,
            "max_texts": max_texts, "layers": list(layers) if layers else None,
        }, models=list(named), rows=table.rows, recovery=recoveries)
    return result
