"""Figures of the recovery audits and the layer study (matplotlib Figures, Agg, no pyplot state).

Recovery is drawn raw (it can fall below 0 or rise above 1) with its 95% paired-bootstrap interval;
dashed lines mark 0 (nothing recovered) and 1 (back to the base accuracy).
"""

from __future__ import annotations

import math
from typing import Any

from matplotlib.figure import Figure

METHOD_COLOURS = {"mean_diff": "tab:blue", "pca": "tab:orange", "random": "tab:gray"}
SOURCE_COLOURS = {"retain": "tab:green", "forget": "tab:red"}
MODE_COLOURS = {"plain": "tab:purple", "adaptive": "tab:cyan"}


def _reference_lines(axis: Any) -> None:
    axis.axhline(0.0, color="black", linewidth=0.8, linestyle="--")
    axis.axhline(1.0, color="black", linewidth=0.8, linestyle=":")


def _errors(recoveries: list[Any]) -> list[list[float]]:
    low = [r.recovery - r.ci_low if math.isfinite(r.ci_low) else 0.0 for r in recoveries]
    high = [r.ci_high - r.recovery if math.isfinite(r.ci_high) else 0.0 for r in recoveries]
    return [[max(0.0, x) for x in low], [max(0.0, x) for x in high]]


def ablation_figure(ablation: Any) -> Figure:
    """Recovery (with 95% intervals) and retain-accuracy change per layer set, one bar per direction method."""
    figure = Figure(figsize=(10, 4), layout="constrained")
    recovery_axis, retain_axis = figure.subplots(1, 2)
    labels: list[str] = []
    for condition in ablation.conditions:
        label = ",".join(map(str, condition.layers))
        if label not in labels:
            labels.append(label)
    methods = list(dict.fromkeys(c.method for c in ablation.conditions))
    width = 0.8 / max(1, len(methods))
    for k, method in enumerate(methods):
        chosen = [c for c in ablation.conditions if c.method == method]
        xs = [labels.index(",".join(map(str, c.layers))) + (k - (len(methods) - 1) / 2) * width for c in chosen]
        colour = METHOD_COLOURS.get(method, None)
        recovery_axis.bar(xs, [c.recovery.recovery if math.isfinite(c.recovery.recovery) else 0.0 for c in chosen], width,
                          yerr=_errors([c.recovery for c in chosen]), capsize=3, color=colour, label=method)
        retain = [c.retain_change if c.retain_change is not None else 0.0 for c in chosen]
        retain_axis.bar(xs, retain, width, color=colour, label=method)
    for axis in (recovery_axis, retain_axis):
        axis.set_xticks(range(len(labels)), labels)
        axis.set_xlabel("ablated layers (hook_resid_post)")
    _reference_lines(recovery_axis)
    recovery_axis.set_ylabel("recovery of removed forget accuracy")
    recovery_axis.set_title("Direction ablation: recovery")
    recovery_axis.legend(fontsize=8)
    retain_axis.axhline(0.0, color="black", linewidth=0.8)
    retain_axis.set_ylabel("retain accuracy change vs unlearned")
    retain_axis.set_title("Cost on retain questions")
    return figure


def finetune_figure(finetune: Any) -> Figure:
    """Recovery vs number of fine-tuning examples (log scale), one line per example source, 95% intervals."""
    figure = Figure(figsize=(10, 4), layout="constrained")
    recovery_axis, retain_axis = figure.subplots(1, 2)
    for source in finetune.sources:
        curve = finetune.curve(source)
        ns = [c.n_examples for c in curve]
        colour = SOURCE_COLOURS.get(source)
        recovery_axis.errorbar(ns, [c.recovery.recovery for c in curve], yerr=_errors([c.recovery for c in curve]),
                               marker="o", capsize=3, color=colour, label=f"{source} examples")
        retain_axis.plot(ns, [c.retain_change if c.retain_change is not None else math.nan for c in curve],
                         marker="o", color=colour, label=f"{source} examples")
    ns = sorted({c.n_examples for c in finetune.conditions})
    for axis in (recovery_axis, retain_axis):
        axis.set_xscale("log")
        axis.set_xticks(ns, [str(n) for n in ns])
        axis.minorticks_off()
        axis.set_xlabel("fine-tuning examples N")
        axis.legend(fontsize=8)
    _reference_lines(recovery_axis)
    recovery_axis.set_ylabel("recovery of removed forget accuracy")
    recovery_axis.set_title(f"Few-shot fine-tuning ({finetune.config.get('method', 'lora')})")
    retain_axis.axhline(0.0, color="black", linewidth=0.8)
    retain_axis.set_ylabel("retain accuracy change vs unlearned")
    retain_axis.set_title("Retain questions")
    return figure


def probe_figure(probe: Any) -> Figure:
    """Linear-probe accuracy of the forget answers per layer: base, unlearned, and the surviving share."""
    figure = Figure(figsize=(10, 4), layout="constrained")
    accuracy_axis, share_axis = figure.subplots(1, 2)
    layers = probe.layers
    for key, colour in (("base_acc", "tab:blue"), ("unlearned_acc", "tab:red"), ("transfer_acc", "tab:gray")):
        accuracy_axis.plot(layers, getattr(probe, key), marker="o", color=colour, label=key.replace("_acc", ""))
    accuracy_axis.axhline(probe.chance, color="black", linewidth=0.8, linestyle="--", label="chance")
    for axis in (accuracy_axis, share_axis):
        axis.set_xticks(layers)
    accuracy_axis.set_xlabel("layer")
    accuracy_axis.set_ylabel("probe accuracy on forget answers")
    accuracy_axis.set_title("Linear decodability of the forget answers")
    accuracy_axis.legend(fontsize=8)
    share_axis.plot(layers, probe.surviving, marker="o", color="tab:purple", label="retrained probe")
    share_axis.plot(layers, probe.surviving_transfer, marker="o", color="tab:gray", label="base probe on unlearned")
    share_axis.legend(fontsize=8)
    _reference_lines(share_axis)
    share_axis.set_xlabel("layer")
    share_axis.set_ylabel("surviving share of above-chance decodability")
    share_axis.set_title("Probe audit")
    return figure


def layer_study_figure(study: Any) -> Figure:
    """Forget and retain accuracy, and ablation recovery, against the RMU layer for plain and adaptive RMU."""
    figure = Figure(figsize=(13, 4), layout="constrained")
    forget_axis, retain_axis, recovery_axis = figure.subplots(1, 3)
    for mode in study.modes:
        points = study.points(mode)
        layers = [p.layer for p in points]
        colour = MODE_COLOURS.get(mode)
        forget_axis.plot(layers, [p.forget_acc for p in points], marker="o", color=colour, label=mode)
        retain_axis.plot(layers, [p.retain_acc for p in points], marker="o", color=colour, label=mode)
        recoveries = [p.ablation_recovery for p in points]
        finite = [(l, r) for l, r in zip(layers, recoveries) if r is not None and math.isfinite(r.recovery)]
        if finite:
            recovery_axis.errorbar([l for l, _ in finite], [r.recovery for _, r in finite],
                                   yerr=_errors([r for _, r in finite]), marker="o", capsize=3, color=colour, label=mode)
    base = study.base
    forget_axis.axhline(base["forget_acc"], color="black", linewidth=0.8, linestyle=":", label="base")
    retain_axis.axhline(base["retain_acc"], color="black", linewidth=0.8, linestyle=":", label="base")
    if study.chance is not None:
        forget_axis.axhline(study.chance, color="black", linewidth=0.8, linestyle="--", label="chance")
    forget_axis.set_title("Forget accuracy (lower = removed)")
    retain_axis.set_title("Retain accuracy (higher = kept)")
    recovery_axis.set_title("Ablation recovery (lower = robust)")
    _reference_lines(recovery_axis)
    if not any(line.get_label() in study.modes for line in recovery_axis.get_lines()) and not recovery_axis.containers:
        recovery_axis.text(0.5, 0.5, "recovery undefined\n(nothing removed)", ha="center", va="center",
                           transform=recovery_axis.transAxes)
    for axis in (forget_axis, retain_axis, recovery_axis):
        axis.set_xlabel("RMU layer l (update layers l-2..l)")
        axis.set_xticks(study.layers)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    forget_axis.set_ylabel("accuracy")
    recovery_axis.set_ylabel("recovery of removed forget accuracy")
    return figure
