"""Figures of the representation analyses: norms, directions, PCA, dispersion, probes, damage.

Each function takes an analysis result (``CollapseAnalysis``, ``ProbeAnalysis``, ``DamageAnalysis``,
``OverlapSweep``, or the ``Analysis`` holding them) and returns a ``matplotlib.figure.Figure`` built
without pyplot. Base model: dashed lines / hollow markers; unlearned: solid lines / filled markers.
Layer l (where RMU steers) is marked by a dotted vertical line.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from rmu_lens.analysis.collapse import CollapseAnalysis
from rmu_lens.analysis.damage import DamageAnalysis, OverlapSweep
from rmu_lens.analysis.probes import ProbeAnalysis
from rmu_lens.plots.text import plain

ROLE_PALETTES = {
    "forget": ("#c0392b", "#8e44ad", "#e74c3c", "#6c3483"),
    "adjacent": ("#e67e22", "#b9770e", "#f5b041"),
    "retain": ("#2e86c1", "#1b4f72", "#5dade2"),
    "distant": ("#16a085", "#27ae60", "#0e6655", "#7dcea0"),
}
VARIANT_STYLES = {
    "base": {"color": "#7f8c8d", "linestyle": "--", "label": "base probe on base"},
    "transfer": {"color": "#e67e22", "linestyle": ":", "label": "base probe on unlearned (transfer)"},
    "unlearned": {"color": "#2c3e50", "linestyle": "-", "label": "probe retrained on unlearned"},
}


def _collapse(result: Any) -> CollapseAnalysis:
    found = getattr(result, "collapse", result)
    if not isinstance(found, CollapseAnalysis):
        raise TypeError(f"expected a CollapseAnalysis or an Analysis, got {type(result).__name__}")
    return found


def dataset_colors(collapse: CollapseAnalysis) -> dict[str, str]:
    """A colour per dataset: a hue family per role, a shade per dataset within it."""
    used: dict[str, int] = {}
    colors = {}
    for name, info in collapse.datasets.items():
        palette = ROLE_PALETTES.get(info["role"], ("#7f8c8d",))
        colors[name] = palette[used.get(info["role"], 0) % len(palette)]
        used[info["role"]] = used.get(info["role"], 0) + 1
    return colors


def _mark_layer(ax: Any, layer: int) -> None:
    ax.axvline(layer, color="#555555", linestyle=(0, (1, 2)), linewidth=1)
    ax.annotate(f"l = {layer}", (layer, 1), xycoords=("data", "axes fraction"), xytext=(3, -12),
                textcoords="offset points", fontsize=8, color="#555555")


def _per_layer(ax: Any, collapse: CollapseAnalysis, metric: str, datasets: list[str] | None = None) -> None:
    colors = dataset_colors(collapse)
    for name in datasets or list(collapse.datasets):
        role = collapse.datasets[name]["role"]
        ax.plot(collapse.layers, collapse.metrics[name]["base"][metric], color=colors[name], linestyle="--", linewidth=1.2,
                marker="o", markersize=3, markerfacecolor="none")
        ax.plot(collapse.layers, collapse.metrics[name]["unlearned"][metric], color=colors[name], linewidth=1.8,
                marker="o", markersize=3, label=plain(f"{name} ({role})"))
    _mark_layer(ax, collapse.layer)
    _integer_layers(ax)
    ax.set_xlabel("layer (hook_resid_post)")
    ax.grid(alpha=0.3)


def _integer_layers(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=16))


def _model_legend(ax: Any) -> None:
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="black", linestyle="--", marker="o", markerfacecolor="none", markersize=4),
                Line2D([], [], color="black", marker="o", markersize=4)]
    labels += ["base model", "unlearned model"]
    # Outside the axes: inside, it hides curves or the c lines whatever the data.
    ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), framealpha=0.85)


def _mark_levels(ax: Any, levels: list[tuple[float, str]]) -> None:
    """Horizontal reference lines labelled at the right end; close labels alternate below and above."""
    for index, (value, label) in enumerate(sorted(levels)):
        ax.axhline(value, color="#c0392b", linewidth=1, alpha=0.6)
        ax.annotate(label, (1, value), xycoords=("axes fraction", "data"), xytext=(-4, -11 if index % 2 == 0 else 3),
                    textcoords="offset points", fontsize=8, color="#c0392b", ha="right")


def plot_norms(result: Any, datasets: list[str] | None = None) -> Figure:
    """Mean token norm vs layer, base and unlearned per dataset, with each topic's c marked."""
    collapse = _collapse(result)
    figure = Figure(figsize=(8, 4.8), layout="constrained")
    ax = figure.add_subplot()
    _per_layer(ax, collapse, "mean_norm", datasets)
    _mark_levels(ax, [(c, f"c = {c:.4g} ({plain(topic)})") for topic, c in collapse.steering_coeffs.items()])
    values = [v for d in collapse.metrics.values() for m in d.values() for v in m["mean_norm"]] + list(collapse.steering_coeffs.values())
    if min(values) > 0 and max(values) / min(values) > 50:
        ax.set_yscale("log")
    ax.set_ylabel("mean token norm (position 0 and pads excluded)")
    ax.set_title("Token norm by layer: the forget set is pushed to c at layer l")
    _model_legend(ax)
    return figure


def plot_cos_u(result: Any, datasets: list[str] | None = None) -> Figure:
    """cos(h, u) and cos(h, u⊥) vs layer: u⊥ removes u's all-ones component (cos(u, 1) ≈ 0.87)."""
    collapse = _collapse(result)
    figure = Figure(figsize=(11, 4.5), layout="constrained")
    left, right = figure.subplots(1, 2, sharey=True)
    _per_layer(left, collapse, "cos_u", datasets)
    _per_layer(right, collapse, "cos_u_perp", datasets)
    # A token exactly at c·u has cos(h, u⊥) = |u⊥| = sqrt(1 - cos(u, 1)²): the ceiling of this panel.
    _mark_levels(right, [(d["u_perp_norm"], f"cos(u, u⊥) = {d['u_perp_norm']:.2f} ({plain(topic)})")
                         for topic, d in collapse.directions.items()])
    left.set_ylabel("mean cosine")
    left.set_title("cos(h, u)")
    right.set_title("cos(h, u⊥): u without its all-ones component")
    cos_ones = ", ".join(f"{plain(t)}: {d['cos_u_ones']:.2f}" for t, d in collapse.directions.items())
    figure.suptitle(f"Alignment with the control vector (cos(u, all-ones) = {cos_ones})")
    _model_legend(right)
    return figure


def plot_dispersion(result: Any, datasets: list[str] | None = None) -> Figure:
    """Mean pairwise cosine, relative dispersion and effective rank vs layer: does the forget set collapse?"""
    collapse = _collapse(result)
    figure = Figure(figsize=(13, 4.3), layout="constrained")
    axes = figure.subplots(1, 3)
    titles = {"mean_pairwise_cos": "mean pairwise cosine (→ 1: one direction)",
              "relative_dispersion": "trace(cov) / mean ‖h‖² (→ 0: one point)",
              "effective_rank": "effective rank of the tokens (→ 1)"}
    for ax, (metric, title) in zip(axes, titles.items()):
        _per_layer(ax, collapse, metric, datasets)
        ax.set_title(title, fontsize=10)
    axes[2].set_yscale("log")
    figure.suptitle("Dispersion of each dataset's token activations by layer")
    _model_legend(axes[0])
    return figure


def plot_pca(result: Any, max_points: int | None = None) -> Figure:
    """Tokens at layer l in the 2-D PCA plane (fitted on base and unlearned together), with each c·u marked."""
    collapse = _collapse(result)
    if not collapse.pca:
        raise ValueError("This CollapseAnalysis has no PCA: analyze() computes one at layer l")
    pca = collapse.pca
    colors = dataset_colors(collapse)
    figure = Figure(figsize=(11, 5), layout="constrained")
    axes = figure.subplots(1, 2, sharex=True, sharey=True)
    for ax, model in zip(axes, ("base", "unlearned")):
        for name, points in pca["points"].items():
            xy = np.asarray(points[model])[:max_points]
            ax.scatter(xy[:, 0], xy[:, 1], s=8, alpha=0.5, color=colors.get(name, "#7f8c8d"),
                       label=plain(f"{name} ({collapse.datasets[name]['role']})"))
        for topic, target in pca["targets"].items():
            ax.scatter([target[0]], [target[1]], marker="*", s=260, color="black", edgecolor="white", zorder=5,
                       label=f"c·u ({plain(topic)})")
        ax.set_title(f"{model} model")
        ax.set_xlabel(f"PC 1 ({pca['explained_variance_ratio'][0]:.0%} of variance)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"PC 2 ({pca['explained_variance_ratio'][1]:.0%})")
    axes[1].legend(fontsize=8, loc="best", framealpha=0.85)
    figure.suptitle(f"Token activations at layer {pca['layer']} ({pca['hook']}), PCA of both models together")
    return figure


def plot_probes(result: Any, task: str = "knowledge", group: str | None = None) -> Figure:
    """Probe accuracy vs layer: base, transfer (base probe on unlearned) and retrained, with 95% CIs and chance."""
    probe = result.probes[task] if hasattr(result, "probes") else result
    if not isinstance(probe, ProbeAnalysis):
        raise TypeError(f"expected a ProbeAnalysis or an Analysis, got {type(result).__name__}")
    x = [layer if layer is not None else i for i, layer in enumerate(probe.layers)]
    figure = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = figure.add_subplot()
    for variant, rows in probe.accuracy.items():
        style = VARIANT_STYLES[variant]
        if group is None:
            acc = [r["acc"] for r in rows]
            ax.fill_between(x, [r["ci_low"] for r in rows], [r["ci_high"] for r in rows], color=style["color"], alpha=0.15)
        else:
            if group not in probe.by_group.get(variant, {}):
                raise KeyError(f"No group {group!r}; groups: {sorted(probe.by_group.get(variant, {}))}")
            acc = probe.by_group[variant][group]
        ax.plot(x, acc, marker="o", markersize=4, linewidth=1.8, color=style["color"], linestyle=style["linestyle"],
                label=style["label"])
    ax.axhline(probe.chance, color="#c0392b", linewidth=1, linestyle="-.", label=f"chance ({probe.chance:.2f})")
    ax.set_ylim(0, 1.02)
    _integer_layers(ax)
    ax.set_xlabel("layer (hook_resid_post)")
    ax.set_ylabel("accuracy (out of fold)")
    scope = f", {plain(group)} only (n = {probe.group_sizes.get(group)})" if group else f" (n = {probe.n}, 95% Wilson bands)"
    ax.set_title(f"{plain(probe.name)} probe{scope}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best", framealpha=0.85)
    return figure


def plot_damage(result: Any) -> Figure:
    """Domain × layer map of 1 − cos(unlearned, base), beside each domain's accuracy drop (95% CI)."""
    damage = result.damage if hasattr(result, "damage") and not isinstance(result, DamageAnalysis) else result
    if not isinstance(damage, DamageAnalysis):
        raise ValueError("No damage analysis: pass comparison= to analyze() to join accuracy changes")
    rows = damage.rows
    names = [r["domain"] for r in rows]
    grid = np.asarray([damage.shift_map[n] for n in names])
    figure = Figure(figsize=(11, 1.2 + 0.55 * max(3, len(names))), layout="constrained")
    heat, bars = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1.3]}, sharey=True)
    image = heat.imshow(grid, aspect="auto", cmap="magma_r", vmin=0, vmax=max(1e-6, float(grid.max())))
    heat.set_xticks(range(len(damage.layers)), [str(x) for x in damage.layers], fontsize=8)
    heat.set_yticks(range(len(names)), [plain(f"{n} ({r['role']})") for n, r in zip(names, rows)])
    if damage.layer in damage.layers:
        heat.axvline(damage.layers.index(damage.layer), color="#2e86c1", linewidth=1.5, linestyle="--")
    heat.set_xlabel(f"layer (dashed: l = {damage.layer})")
    heat.set_title("representation shift 1 − cos(unlearned, base)")
    figure.colorbar(image, ax=heat, fraction=0.04, pad=0.02)
    drops = np.asarray([r["accuracy_drop"] for r in rows])
    errors = np.asarray([[d - r["drop_ci_low"] for d, r in zip(drops, rows)], [r["drop_ci_high"] - d for d, r in zip(drops, rows)]])
    colors = [ROLE_PALETTES.get(r["role"], ("#7f8c8d",))[0] for r in rows]
    bars.barh(range(len(names)), drops, xerr=np.clip(errors, 0, None), color=colors, alpha=0.85, capsize=3)
    bars.axvline(0, color="black", linewidth=0.8)
    bars.set_xlabel(f"accuracy drop ({damage.metric}, base − unlearned)")
    corr = damage.correlations.get("shift_at_layer_all", {})
    r_text = "n/a" if corr.get("pearson") is None else f"{corr['pearson']:+.2f}"
    rho_text = "n/a" if corr.get("spearman") is None else f"{corr['spearman']:+.2f}"
    bars.set_title(f"r = {r_text}, ρ = {rho_text} (n = {corr.get('n', 0)})", fontsize=10)
    bars.grid(axis="x", alpha=0.3)
    figure.suptitle("Which domains were hurt, and where their representations moved")
    return figure


def plot_overlap_sweep(sweep: OverlapSweep) -> Figure:
    """Adjacent-domain accuracy drop and representation shift at layer l against the testbed's overlap knob."""
    rows = sorted(sweep.rows, key=lambda r: r["overlap"])
    x = [r["overlap"] for r in rows]
    figure = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = figure.add_subplot()
    drop = [r["adjacent_drop"] for r in rows]
    low = [r["adjacent_drop_ci"][0] for r in rows]
    high = [r["adjacent_drop_ci"][1] for r in rows]
    ax.fill_between(x, low, high, color="#e67e22", alpha=0.2)
    ax.plot(x, drop, marker="o", color="#e67e22", linewidth=2, label="adjacent accuracy drop (95% CI)")
    ax.plot(x, [r["forget_drop"] for r in rows], marker="s", color="#c0392b", label="forget accuracy drop")
    ax.plot(x, [r["distant_drop"] for r in rows], marker="^", color="#16a085", label="distant accuracy drop (mean)")
    ax.set_xlabel("overlap (share of the forget domain's attribute types the adjacent domain borrows)")
    ax.set_ylabel("accuracy drop")
    ax.grid(alpha=0.3)
    twin = ax.twinx()
    twin.plot(x, [r["adjacent_shift_at_layer"] for r in rows], marker="D", color="#6c3483", linestyle="--",
              label="adjacent shift 1 − cos at l")
    twin.set_ylabel("representation shift at layer l", color="#6c3483")
    twin.set_ylim(bottom=0)
    handles, labels = ax.get_legend_handles_labels()
    more, more_labels = twin.get_legend_handles_labels()
    ax.legend(handles + more, labels + more_labels, fontsize=8, loc="upper left", framealpha=0.85)
    ax.set_title("Testbed: damage to the adjacent domain vs overlap")
    return figure
