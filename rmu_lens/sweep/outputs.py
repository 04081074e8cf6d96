"""A sweep directory's outputs: trials.csv / trials.json, the Pareto-front figure, one config file per
front point (``front/trial_NNNN.json``, accepted by ``rmu-lens unlearn --config``), and an HTML section."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import os
from html import escape
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from rmu_lens.plots.text import plain
from rmu_lens.plots.training import figure_png

FRONT_COLOR, OTHER_COLOR, BASE_COLOR = "#c0392b", "#7f8c8d", "#2c3e50"
CSV_COLUMNS = ("number", "state", "forget_acc", "forget_excess", "retain_acc", "adjacent_acc", "steering_coeff",
               "final_forget_norm", "final_retain_cos", "steps", "seconds", "pruned_at", "pruned_because", "retry_of")


def _color_axis(result: Any, color_by: str | None) -> str | None:
    searched = result.study.user_attrs.get("sweep", {}).get("space", {})
    names = [k for k, v in searched.items() if isinstance(v, dict)]
    if color_by is not None:
        if color_by not in names:
            raise ValueError(f"color_by={color_by!r} is not a searched setting; choose one of {names}")
        return color_by
    return "layer" if "layer" in names else (names[0] if names else None)


def front_figure(result: Any, color_by: str | None = None) -> Figure:
    """Forget accuracy (x) vs distant retain accuracy (y): every complete trial coloured by one searched
    setting, the Pareto front ringed and joined, the base model as a star and chance as a dashed line."""
    figure = Figure(figsize=(6.4, 4.6))
    ax = figure.add_subplot()
    done, front = result.complete(), result.front()
    axis = _color_axis(result, color_by)
    if done:
        values = [r["params"].get(axis) for r in done] if axis else None
        dimension = result.study.user_attrs["sweep"]["space"].get(axis, {}) if axis else {}
        # A range gets a colour bar; choices (a layer, a mode) get one colour each and a legend entry.
        numeric = values is not None and "choices" not in dimension and \
            all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        xs, ys = [r["forget_acc"] for r in done], [r["retain_acc"] for r in done]
        if numeric:
            log = dimension.get("log", False)
            from matplotlib.colors import LogNorm, Normalize

            norm = LogNorm() if log and min(values) > 0 else Normalize()
            points = ax.scatter(xs, ys, c=values, cmap="viridis", norm=norm, s=36, zorder=2)
            figure.colorbar(points, ax=ax, label=plain(axis))
        else:
            choices = dimension.get("choices") or []
            seen = {str(v) for v in values} if values else set()
            labels = [str(c) for c in choices if str(c) in seen] + sorted(seen - {str(c) for c in choices})
            for i, label in enumerate(labels or ["trials"]):
                pick = [j for j, v in enumerate(values or [None] * len(done)) if not labels or str(v) == label]
                ax.scatter([xs[j] for j in pick], [ys[j] for j in pick], s=36, zorder=2, color=f"C{i}",
                           label=plain(f"{axis}={label}" if axis else label))
        ordered = sorted(front, key=lambda r: r["forget_acc"])
        ax.plot([r["forget_acc"] for r in ordered], [r["retain_acc"] for r in ordered], color=FRONT_COLOR,
                drawstyle="steps-post", lw=1.2, zorder=1)
        ax.scatter([r["forget_acc"] for r in front], [r["retain_acc"] for r in front], s=110, facecolors="none",
                   edgecolors=FRONT_COLOR, linewidths=1.6, zorder=3, label="Pareto front")
    if result.base.get("forget_acc") is not None and result.base.get("retain_acc") is not None:
        ax.scatter([result.base["forget_acc"]], [result.base["retain_acc"]], marker="*", s=220, color=BASE_COLOR,
                   zorder=4, label="base model")
    ax.axvline(result.chance, color=OTHER_COLOR, ls="--", lw=1, label=f"chance ({result.chance:.2f})")
    ax.set_xlabel("forget accuracy (lower is better, down to chance)")
    ax.set_ylabel("distant retain accuracy (higher is better)")
    n_pruned = sum(r["state"] == "PRUNED" for r in result.rows())
    ax.set_title(f"RMU sweep: {len(done)} complete trials, {n_pruned} pruned, {len(front)} on the front")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return figure


def _number(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def front_table(result: Any) -> str:
    """The front as text: trial, accuracies, searched settings."""
    base = result.base
    lines = [f"base: forget {_number(base.get('forget_acc'))}, retain {_number(base.get('retain_acc'))}, "
             f"adjacent {_number(base.get('adjacent_acc'))}; chance {result.chance:.3f}"]
    for r in sorted(result.front(), key=lambda r: r["forget_acc"]):
        params = ", ".join(f"{k}={_number(v)}" for k, v in r["params"].items())
        lines.append(f"  trial {r['number']:>3}: forget {r['forget_acc']:.3f}  retain {r['retain_acc']:.3f}  "
                     f"adjacent {_number(r['adjacent_acc'])}  {params}")
    return "\n".join(lines)


def sweep_html(result: Any, color_by: str | None = None) -> str:
    """An HTML section (figure inline as base64 PNG, every text escaped) for a report or a notebook."""
    png = base64.b64encode(figure_png(front_figure(result, color_by))).decode("ascii")
    params = sorted({k for r in result.front() for k in r["params"]})
    head = "".join(f"<th>{escape(h)}</th>" for h in ["trial", "forget", "retain", "adjacent", *params])
    rows = "".join(
        "<tr>" + "".join(f"<td>{escape(_number(v))}</td>" for v in
                         [r["number"], r["forget_acc"], r["retain_acc"], r["adjacent_acc"], *[r["params"].get(p) for p in params]])
        + "</tr>"
        for r in sorted(result.front(), key=lambda r: r["forget_acc"])
    )
    base = result.base
    summary = (f"{len(result.complete())} complete trials; base model forget {_number(base.get('forget_acc'))}, "
               f"retain {_number(base.get('retain_acc'))}; chance {result.chance:.3f}")
    return (f'<section class="sweep"><h2>Forget/retain trade-off (RMU sweep)</h2><p>{escape(summary)}</p>'
            f'<figure id="figure-sweep_front"><img src="data:image/png;base64,{png}" alt="sweep Pareto front"></figure>'
            f"<table><tr>{head}</tr>{rows}</table></section>")


def _csv_text(rows: list[dict[str, Any]]) -> str:
    params = sorted({k for r in rows for k in r["params"]})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*CSV_COLUMNS, *(f"param_{p}" for p in params)])
    for r in rows:
        writer.writerow([("" if r.get(c) is None else r.get(c)) for c in CSV_COLUMNS]
                        + [("" if r["params"].get(p) is None else r["params"].get(p)) for p in params])
    return buffer.getvalue()


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_outputs(result: Any, out: Path, color_by: str | None = None) -> dict[str, Path]:
    """Write trials.csv, trials.json, pareto.png, front/trial_NNNN.json and sweep.html into ``out``."""
    from rmu_lens._io import atomic_directory, atomic_write_json, atomic_write_text

    rows, front = result.rows(), result.front()
    meta = result.study.user_attrs.get("sweep", {})
    paths = {
        "trials_csv": atomic_write_text(out / "trials.csv", _csv_text(rows)),
        "trials_json": atomic_write_json(out / "trials.json", _json_safe({
            "format": meta.get("format"), "study_name": result.study.study_name, "base": result.base,
            "chance": result.chance, "space": meta.get("space"), "template": meta.get("template"),
            "objectives": meta.get("objectives"), "front": [r["number"] for r in front], "trials": rows,
        })),
    }
    staging = out / f".pareto.png.{os.getpid()}.tmp"
    staging.write_bytes(figure_png(front_figure(result, color_by), dpi=120))
    staging.replace(out / "pareto.png")
    paths["pareto_png"] = out / "pareto.png"
    with atomic_directory(out / "front") as staging:
        for r in front:
            record = {"config": r["config"], "trial": r["number"], "forget_acc": r["forget_acc"],
                      "retain_acc": r["retain_acc"], "adjacent_acc": r["adjacent_acc"], "params": r["params"]}
            (staging / f"trial_{r['number']:04d}.json").write_text(json.dumps(_json_safe(record), indent=2) + "\n", encoding="utf-8")
    paths["front"] = out / "front"
    html = sweep_html(result, color_by)
    paths["html"] = atomic_write_text(out / "sweep.html", f"<!doctype html><meta charset=\"utf-8\"><title>RMU sweep</title>{html}\n")
    return paths
