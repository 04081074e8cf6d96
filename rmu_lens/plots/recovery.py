"""Figures of the estimate of u, c and l (:class:`rmu_lens.analysis.recover.Recovery`), Agg, no pyplot.

* :func:`recovery_figure` — one row per forget topic, three panels, each a test of the
  :class:`~rmu_lens.analysis.recover.CollapseRule` drawn beside the curve it reads:
  **change** (forget_change and retain_change per layer; the ``min_change`` level and
  ``selectivity`` × retain_change), **direction** (mean cos(h, v) of the unlearned and the base forget
  tokens; the ``min_concentration`` level), **residual** (1 − share, the energy off the first
  component, unlearned and base; ``max_residual_ratio`` × the base's). Collapsed layers are shaded,
  l̂ is a vertical line with a star on the forget curve; a topic that did not collapse says so (no û
  is drawn), and identical models say that nothing changed.
* :func:`weight_diff_figure` — changed tensors per block (bars) and the largest relative change
  ‖Δ‖_F / ‖W‖_F per module × block (log colour scale); identical models say that nothing changed.

Every artist that carries data has a ``gid`` (``forget_change``, ``layer_hat``, ``relative_change``…),
so the numbers can be read back from the figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from rmu_lens.plots.text import plain

FORGET, RETAIN, BASE, RULE, SHADE = "#c0392b", "#2e86c1", "#7f8c8d", "#8e44ad", "#f5b041"


def verdict(estimate: Any, nothing_changed: bool = False) -> str:
    """The one-line verdict of a topic as the figures and the explorer show it."""
    if nothing_changed:
        return "nothing changed: the two models are identical"
    if estimate.collapsed:
        return f"collapsed at l̂ = {estimate.layer}, ĉ = {estimate.scale:.4g}"
    return "not collapsed: no layer meets the rule, so there is no û"


def topic_title(estimate: Any, nothing_changed: bool = False) -> str:
    """``topic: verdict``, as drawn above a topic's panels."""
    return f"{plain(estimate.topic)}: {verdict(estimate, nothing_changed)}"


def draw_topic(axes: Sequence[Any], estimate: Any, layers: Sequence[int], rule: Any, nothing_changed: bool = False) -> None:
    """Draw one topic's curves, the rule's thresholds, the collapsed layers and l̂ into three axes."""
    change, direction, residual = axes
    curves, layers = estimate.curves, list(layers)
    dots = dict(marker="o", markersize=3)
    change.plot(layers, curves["forget_change"], color=FORGET, label="forget", gid="forget_change", **dots)
    change.plot(layers, curves["retain_change"], color=RETAIN, label="retain", gid="retain_change", **dots)
    change.plot(layers, [rule.selectivity * r for r in curves["retain_change"]], color=RETAIN, linestyle=":",
                label=f"{rule.selectivity:g} × retain (rule)", gid="selectivity")
    change.axhline(rule.min_change, color=RULE, linestyle="--", linewidth=1, label=f"min change {rule.min_change:g} (rule)",
                   gid="min_change")
    change.set(ylabel="mean ‖h_u − h_b‖ / mean ‖h_b‖", title="how far the tokens moved")
    direction.plot(layers, curves["mean_cos"], color=FORGET, label="unlearned", gid="mean_cos", **dots)
    direction.plot(layers, curves["base_mean_cos"], color=BASE, linestyle="--", label="base", gid="base_mean_cos", **dots)
    direction.axhline(rule.min_concentration, color=RULE, linestyle="--", linewidth=1,
                      label=f"min {rule.min_concentration:g} (rule)", gid="min_concentration")
    direction.set(ylabel="mean cos(h, v) of forget tokens", title="do the forget tokens point one way?")
    residual.plot(layers, [1 - s for s in curves["share"]], color=FORGET, label="unlearned", gid="residual", **dots)
    residual.plot(layers, [1 - s for s in curves["base_share"]], color=BASE, linestyle="--", label="base",
                  gid="base_residual", **dots)
    residual.plot(layers, [rule.max_residual_ratio * (1 - s) for s in curves["base_share"]], color=RULE, linestyle=":",
                  label=f"{rule.max_residual_ratio:g} × base (rule)", gid="max_residual")
    residual.set(ylabel="1 − σ₁²/Σσ² (energy off v)", title="more than the base did?")
    for ax in axes:
        for k in estimate.collapsed_layers:
            ax.axvspan(k - 0.4, k + 0.4, color=SHADE, alpha=0.3, linewidth=0, gid="collapsed")
        if estimate.layer is not None:
            ax.axvline(estimate.layer, color="black", linewidth=1, gid="layer_hat")
        ax.set_xlabel("layer (hook_resid_post)")
        ax.grid(alpha=0.3)
        _integer_layers(ax)
    if estimate.layer is not None:
        i = layers.index(estimate.layer)
        change.plot([estimate.layer], [curves["forget_change"][i]], marker="*", markersize=13, color="black",
                    linestyle="none", label=f"l̂ = {estimate.layer}", gid="layer_hat_marker")
    else:
        change.text(0.5, 0.5, "nothing changed" if nothing_changed else "not collapsed: no û", transform=change.transAxes,
                    ha="center", va="center", fontsize=11, color="#555555",
                    bbox={"facecolor": "white", "edgecolor": "#bbbbbb", "alpha": 0.9}, gid="verdict")
    for ax in axes:
        ax.legend(fontsize=7, loc="best", framealpha=0.85)


def _integer_layers(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=16))


def recovery_figure(recovery: Any) -> Figure:
    """Per topic the per-layer curves of the estimate with the rule drawn, the collapsed layers and l̂."""
    topics = list(recovery.topics.values())
    if not topics:
        raise ValueError("this Recovery holds no topic: recover() needs at least one forget set")
    figure = Figure(figsize=(14, 0.6 + 3.6 * len(topics)), layout="constrained")
    for row, estimate in zip(figure.subfigures(len(topics), 1, squeeze=False)[:, 0], topics):
        draw_topic(row.subplots(1, 3), estimate, recovery.layers, recovery.rule, recovery.nothing_changed)
        row.suptitle(topic_title(estimate, recovery.nothing_changed), fontsize=11, x=0.01, ha="left")
    shaded = "shaded: layers that meet every test of the rule; vertical line: l̂"
    title = ("Nothing changed: every tensor of the two models is identical" if recovery.nothing_changed
             else f"Estimate of the steered layer l̂, direction û and scale ĉ ({shaded})")
    figure.suptitle(title)
    return figure


def weight_diff_figure(diff: Any) -> Figure:
    """Changed tensors per block and the largest relative change per module × block (None column: outside the blocks)."""
    from matplotlib.colors import LogNorm, Normalize

    if diff.identical:
        figure = Figure(figsize=(7, 2), layout="constrained")
        ax = figure.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, f"nothing changed: all {len(diff.tensors)} tensors are identical", ha="center", va="center",
                fontsize=12, transform=ax.transAxes, gid="verdict")
        return figure
    modules, blocks, relative = diff.grid()
    labels = [str(b) if b is not None else "outside" for b in blocks]
    values = np.array([[math.nan if v is None else v for v in row] for row in relative], dtype=float)
    finite = values[np.isfinite(values)]
    high = float(finite.max()) if finite.size else 1.0
    shown = np.where(np.isinf(values), high, values)  # a change of an all-zero tensor is drawn at the top of the scale
    positive = finite[finite > 0]
    low = float(positive.min()) if positive.size else high
    norm = LogNorm(vmin=low, vmax=high) if positive.size and high / low > 100 else Normalize(vmin=0.0, vmax=high)
    counts = [sum(1 for t in diff.tensors if t.changed and t.block == b) for b in blocks]
    figure = Figure(figsize=(max(7.0, 1.5 + 0.35 * len(blocks)), 2.2 + 0.3 * len(modules)), layout="constrained")
    bars, heat = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, max(2, len(modules) / 3)]})
    bars.bar(range(len(blocks)), counts, color="#2c3e50", gid="changed_per_block")
    bars.set(ylabel="changed tensors", title=f"{len(diff.changed)} of {len(diff.tensors)} tensors changed")
    bars.grid(axis="y", alpha=0.3)
    from matplotlib.ticker import MaxNLocator

    bars.yaxis.set_major_locator(MaxNLocator(integer=True))   # a count of tensors
    cmap = _cmap()
    image = heat.imshow(np.ma.masked_invalid(shown), aspect="auto", cmap=cmap, norm=norm, interpolation="nearest",
                        gid="relative_change")
    for i, j in zip(*np.nonzero(np.isinf(values))):
        heat.text(j, i, "∞", ha="center", va="center", fontsize=8, color="white")
    heat.set_xticks(range(len(blocks)), labels, fontsize=8)
    heat.set_yticks(range(len(modules)), [plain(m) for m in modules], fontsize=8)
    heat.set_xlabel("block")
    heat.set_title("largest relative change ‖Δ‖ / ‖W‖ per module (grey: unchanged)", fontsize=10)
    figure.colorbar(image, ax=heat, label="‖Δ‖ / ‖W‖")
    figure.suptitle("Which tensors the unlearning changed")
    return figure


def _cmap() -> Any:
    from matplotlib import colormaps

    return colormaps["viridis"].with_extremes(bad="#eeeeee")
