"""The printout that ends the demo and `rmu-lens analyze`: accuracy per role, the layer-l signature, timings."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


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
    accuracy = headline["accuracy"]
    other = next((row.get("other_metric") for row in accuracy.values() if row.get("other_metric")), None)
    rows = [
        [ROLE_LABELS.get(role, role), str(row["n"]), f"{row['base_acc']:.3f}", f"{row['unlearned_acc']:.3f}", f"{row['change']:+.3f}"]
        + ([f"{row['base_other']:.3f}", f"{row['unlearned_other']:.3f}"] if other else [])
        + [row.get("note") or ""]
        for role, row in accuracy.items()
    ]
    lines = [""]
    if rows:
        headers = ["questions", "n", "before", "after", "change"] + ([f"{other} before", f"{other} after"] if other else [])
        lines += [f"accuracy ({headline['metric']}, {summary['plan']['mode']} mode)", format_table(headers + [""], rows)]
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
