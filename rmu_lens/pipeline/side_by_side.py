"""`rmu-lens analyze --unlearned A B C`: several unlearned models of one base, one table side by side."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rmu_lens.pipeline.analyze import (
    forget_and_retain,
    load_source,
    plain_model_datasets,
    unlearned_source,
    weight_folders,
)
from rmu_lens.pipeline.staging import SUMMARY_FORMAT, DemoResult, Steps, check_output_dir, stderr_log


def model_names(unlearned: Mapping[str, Any] | Sequence[Any]) -> dict[str, Any]:
    """name -> source: a mapping as given, or sources named after their folders (numbered if two clash)."""
    if isinstance(unlearned, Mapping):
        named = dict(unlearned)
    else:
        sources = list(unlearned)
        names = [Path(os.fspath(s)).name or os.fspath(s) for s in sources]
        if len(set(names)) < len(names):
            names = [f"{i + 1}-{n}" for i, n in enumerate(names)]
        named = dict(zip(names, sources))
    if not named:
        raise ValueError("no unlearned models given: pass one or more sources")
    return named


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
    log: Callable[[str], None] = stderr_log,
    load_options: Mapping[str, Any] | None = None,
) -> DemoResult:
    """Several unlearned models of one base on the same datasets, in one report.

    ``unlearned``: sources (run directories, HF folders, hub names) or a mapping name -> source. Writes
    ``models/NAME/`` (``recovery.json``, ``analysis/``) per model, ``side_by_side.json`` and ``report.html``
    (one table: each model's collapse and per-dataset shift). The base model is loaded once and its
    activations for the estimate are collected once (``recover``'s ``base_cache``).
    """
    from rmu_lens._io import atomic_directory, atomic_write_json
    from markupsafe import Markup

    from rmu_lens._templates import render
    from rmu_lens.analysis import analyze_model
    from rmu_lens.analysis.recover import recover
    from rmu_lens.analysis.side_by_side import side_by_side

    out = check_output_dir(out, overwrite)
    named = model_names(unlearned)
    if datasets is None:
        datasets, _ = plain_model_datasets()
    forget, retain = forget_and_retain(datasets)
    options = dict(load_options or {})
    steps = Steps(log, total=len(named) + 2)
    started = time.perf_counter()
    with atomic_directory(out) as staging:
        steps.start("load", f"loading the base model {base if isinstance(base, (str, os.PathLike)) else ''}")
        base_model = load_source(base, options)
        cache: dict[str, Any] = {}
        results = {}
        for name, source in named.items():
            steps.start(name, f"{name}: estimating u, c, l and analyzing")
            run, model_source = unlearned_source(source)
            model = load_source(model_source, options)
            recovery = recover(base_model, model, forget, retain, layers=layers, max_texts=max_texts,
                               weights=weight_folders(base, model_source), base_cache=cache, progress=progress)
            analysis = analyze_model(base_model, model, datasets, run=run, recovery=recovery,
                                     layers=layers, max_texts=max_texts, progress=progress)
            recovery.save(staging / "models" / name)
            analysis.save(staging / "models" / name / "analysis")
            results[name] = (recovery, analysis, None)
            del model
        steps.start("report", "writing the side-by-side table")
        table = side_by_side(results)
        atomic_write_json(staging / "side_by_side.json", table.to_dict())
        page = render("side_by_side.html", base=str(base) if isinstance(base, (str, os.PathLike)) else "the base",
                      table_html=Markup(table.html()), verdicts={name: rec.verdicts() for name, (rec, _, _) in results.items()})
        (staging / "report.html").write_text(page, encoding="utf-8")
        steps.stop()
        summary = {"format": SUMMARY_FORMAT, "models": list(results), "rows": table.rows,
                   "seconds": {**steps.seconds, "total": round(time.perf_counter() - started, 1)}}
        atomic_write_json(staging / "summary.json", summary)
    log(f"wrote {out}: {len(results)} models side by side (report.html, side_by_side.json)")
    return DemoResult(out=out, summary=summary)
