"""Explorers: ipywidgets over analysis results (no model is run; everything comes from the result objects).

* :class:`LayerExplorer` — a layer slider, a dataset selector and a view (norm / cos to u / PCA)
  over a :class:`~rmu_lens.analysis.collapse.CollapseAnalysis`;
* :class:`ProbeExplorer` — probe accuracy against layer; the slider picks the layer whose
  confusion matrix (or per-group accuracy) is shown, from :class:`~rmu_lens.analysis.probes.ProbeAnalysis`;
* :class:`DamageExplorer` — one button per domain; clicking shows that domain's shift per layer
  and the per-subject accuracy changes, from :class:`~rmu_lens.analysis.damage.DamageAnalysis`
  (and the :class:`~rmu_lens.eval.Comparison` it came from, when given);
* :class:`RecoveryExplorer` — a topic selector over the estimate of u, c and l
  (:class:`~rmu_lens.analysis.recover.Recovery`): the per-layer curves with the rule's thresholds,
  the collapsed layers and l̂, the verdict line and the numbers per layer.

An analysis of a model without a run record (``analyze_model``) is read against the estimated û, ĉ
and l̂; the explorers say so (``LayerExplorer.estimated``).

Each explorer keeps its controls as attributes (``layer``, ``dataset``, ``view``, ``domain``…), its
figure in ``image`` (PNG) and the numbers behind the figure in ``table`` (escaped HTML), and
redraws on every change. Display the explorer object itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets

from rmu_lens.jupyter.display import figure_png, html_table, html_title, new_figure
from rmu_lens.plots.text import plain

ROLE_COLOURS = {"forget": "#c0392b", "adjacent": "#e67e22", "distant": "#2e86c1", "retain": "#7f8c8d"}
VARIANT_STYLES = {"base": ("#7f8c8d", "--"), "transfer": ("#e67e22", ":"), "unlearned": ("#2c3e50", "-")}
ALL = "all datasets"


class _Explorer:
    """Shared plumbing: an image, a table, a title, and a redraw on every control change."""

    def __init__(self, controls: list[Any], width: float, height: float) -> None:
        self.size = (width, height)
        self.title = widgets.HTML()
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self.table = widgets.HTML()
        self.redraws = 0
        for control in controls:
            control.observe(lambda _change: self.update(), names="value")
        self.widget = widgets.VBox([self.title, widgets.HBox(controls), self.image, self.table])

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def figure(self) -> Any:
        raise NotImplementedError

    def table_html(self) -> str:
        raise NotImplementedError

    def update(self) -> None:
        """Redraw the figure and the table for the controls' current values."""
        self.image.value = figure_png(self.figure())
        self.table.value = self.table_html()
        self.redraws += 1


def _integer_layers(axes: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def _layer_slider(layers: list[int], value: int) -> Any:
    return widgets.SelectionSlider(options=[(str(layer), layer) for layer in layers], value=value, description="layer",
                                   continuous_update=False)


# --- layers ------------------------------------------------------------------------------------


class LayerExplorer(_Explorer):
    """Norms, cosines to u and the PCA of a collapse analysis, one layer at a time.

    ``collapse``: a CollapseAnalysis (or an Analysis, whose ``.collapse`` is used). Views: ``norm``
    (mean token norm per layer, base dashed and unlearned solid, c dotted for forget sets),
    ``cos to u`` (cos(h, u) and cos(h, u⊥) per layer), ``PCA`` (tokens at layer l, base vs
    unlearned, with c·u as a star; the PCA exists at the read layer only).

    ``estimated``: whether u, c and l are the estimates û, ĉ, l̂ read off the two models (default:
    what an Analysis's ``meta["recovery"]["source"]`` says; False for a bare CollapseAnalysis). The
    title, labels and table then name û, ĉ and l̂ and say that the direction is estimated.
    """

    VIEWS = ("norm", "cos to u", "PCA")

    def __init__(self, collapse: Any, *, layer: int | None = None, view: str = "norm", estimated: bool | None = None,
                 width: float = 11.0, height: float = 3.6) -> None:
        recovery = getattr(collapse, "meta", {}).get("recovery") or {}
        self.estimated = bool(str(recovery.get("source", "")).startswith("estimated")) if estimated is None else estimated
        self.verdicts = dict(recovery.get("verdicts") or {}) if self.estimated else {}
        collapse = getattr(collapse, "collapse", collapse)
        if not getattr(collapse, "datasets", None):
            raise ValueError("LayerExplorer needs a CollapseAnalysis with at least one dataset (rmu_lens.analysis.analyze)")
        if view not in self.VIEWS:
            raise ValueError(f"view={view!r}; choose one of {self.VIEWS}")
        self.collapse = collapse
        start = collapse.layer if layer is None else layer
        if start not in collapse.layers:
            raise ValueError(f"layer {start} was not analysed; layers: {collapse.layers}")
        self.layer = _layer_slider(list(collapse.layers), start)
        self.dataset = widgets.Dropdown(options=[ALL, *collapse.datasets], value=ALL, description="dataset")
        self.view = widgets.ToggleButtons(options=list(self.VIEWS), value=view, description="view",
                                          style={"button_width": "80px"})
        super().__init__([self.layer, self.dataset, self.view], width, height)
        if self.estimated:
            not_collapsed = [t for t, line in self.verdicts.items() if t != "weights" and line.startswith("not collapsed")]
            caveat = (f"; not collapsed, read against the first principal direction instead: {', '.join(not_collapsed)}"
                      if not_collapsed else "")
            detail = (f"read layer l̂ = {collapse.layer}, direction û and scale ĉ estimated from the two models "
                      f"(no run record){caveat}; {collapse.tokens}")
        else:
            detail = f"read layer l = {collapse.layer}; {collapse.tokens}"
        self.title.value = html_title("Layers", detail)
        self.update()

    @property
    def u(self) -> str:
        """How the direction is named: û when it is estimated, else u."""
        return "û" if self.estimated else "u"

    def selected(self) -> list[str]:
        """The datasets on show."""
        return list(self.collapse.datasets) if self.dataset.value == ALL else [self.dataset.value]

    def figure(self) -> Any:
        c, layer, names = self.collapse, self.layer.value, self.selected()
        figure, (curves, detail) = new_figure(*self.size, n_axes=2)
        if self.view.value == "PCA":
            self._pca(curves, detail, names)
            return figure
        metrics = ("mean_norm",) if self.view.value == "norm" else ("cos_u", "cos_u_perp")
        for name in names:
            colour = ROLE_COLOURS.get(c.datasets[name]["role"])
            for metric, marker in zip(metrics, ("o", "^")):
                label = plain(name) if metric in ("mean_norm", "cos_u") else f"{plain(name)} ({self.u}⊥)"
                curves.plot(c.layers, c.metrics[name]["unlearned"][metric], color=colour, marker=marker, markersize=3,
                            label=label)
                curves.plot(c.layers, c.metrics[name]["base"][metric], color=colour, linestyle="--", marker=marker,
                            markersize=3, alpha=0.6)
            if self.view.value == "norm" and c.datasets[name]["role"] == "forget":
                curves.axhline(c.steering_coeffs[c.datasets[name]["topic"]], color=colour, linestyle=":", linewidth=0.9)
        curves.axvline(layer, color="black", linewidth=0.8)
        view = f"cos to {self.u} (estimated)" if self.estimated and self.view.value == "cos to u" else self.view.value
        curves.set(xlabel="layer", title=f"{view} per layer (dashed: base, solid: unlearned)")
        curves.legend(fontsize="small")
        _integer_layers(curves)
        i = c.layers.index(layer)
        positions = range(len(names))
        metric = metrics[0]
        base = [c.metrics[n]["base"][metric][i] for n in names]
        new = [c.metrics[n]["unlearned"][metric][i] for n in names]
        detail.bar([p - 0.2 for p in positions], base, width=0.4, color="#bdc3c7", label="base")
        detail.bar([p + 0.2 for p in positions], new, width=0.4,
                   color=[ROLE_COLOURS.get(c.datasets[n]["role"], "#2c3e50") for n in names], label="unlearned")
        detail.set_xticks(list(positions), [plain(n) for n in names], rotation=20, fontsize="small")
        detail.set(title=f"{metric} at layer {layer}")
        detail.legend(fontsize="small")
        return figure

    def _pca(self, scatter: Any, detail: Any, names: list[str]) -> None:
        c = self.collapse
        pca = c.pca or {}
        if not pca.get("points"):
            scatter.text(0.5, 0.5, "this analysis holds no PCA", ha="center", transform=scatter.transAxes)
            return
        for name in names:
            colour = ROLE_COLOURS.get(c.datasets[name]["role"])
            points = pca["points"].get(name, {})
            for model, marker, alpha in (("base", "x", 0.35), ("unlearned", "o", 0.6)):
                xy = points.get(model) or []
                if xy:
                    scatter.scatter([p[0] for p in xy], [p[1] for p in xy], s=8, marker=marker, alpha=alpha, color=colour,
                                    label=f"{plain(name)} ({model})")
        for topic, (x, y) in pca.get("targets", {}).items():
            target = "ĉ·û" if self.estimated else "c·u"
            scatter.scatter([x], [y], marker="*", s=160, color="black", label=f"{target} ({plain(topic)})")
        ratio = pca.get("explained_variance_ratio", [float("nan")] * 2)
        scatter.set(title=f"PCA of tokens at layer {pca.get('layer', c.layer)} (read layer only)",
                    xlabel=f"PC1 ({ratio[0]:.0%})", ylabel=f"PC2 ({ratio[1]:.0%})")
        scatter.legend(fontsize="x-small", markerscale=1.5)
        i = c.layers.index(self.layer.value)
        shift = [c.shift[n]["cos_unlearned_base"][i] for n in names]
        detail.bar(range(len(names)), shift, color=[ROLE_COLOURS.get(c.datasets[n]["role"]) for n in names])
        detail.set_xticks(list(range(len(names))), [plain(n) for n in names], rotation=20, fontsize="small")
        detail.set(title=f"cos(unlearned, base) at layer {self.layer.value}", ylim=(min(0.0, *shift), 1.05))

    def rows(self) -> list[list[Any]]:
        """The table under the figure: one row per dataset on show, at the selected layer."""
        c, layer = self.collapse, self.layer.value
        return [
            [name, c.datasets[name]["role"], c.value(name, "mean_norm", "base", layer),
             c.value(name, "mean_norm", "unlearned", layer), c.value(name, "cos_u", "unlearned", layer),
             c.value(name, "cos_u_perp", "unlearned", layer), c.value(name, "cos_unlearned_base", layer=layer)]
            for name in self.selected()
        ]

    def table_html(self) -> str:
        u = self.u
        headers = ["dataset", "role", "norm base", "norm unlearned", f"cos(h, {u})", f"cos(h, {u}⊥)", "cos(unlearned, base)"]
        estimated = f"; {u} estimated from the two models" if self.estimated else ""
        return html_table(headers, self.rows(),
                          caption=f"layer {self.layer.value} (blocks.{self.layer.value}.hook_resid_post){estimated}")


# --- probes ------------------------------------------------------------------------------------


class ProbeExplorer(_Explorer):
    """Probe accuracy against layer (base, transfer, unlearned, with 95% intervals and chance).

    ``probes``: a ProbeAnalysis, a mapping name → ProbeAnalysis, or an Analysis (its ``.probes``).
    The slider picks a layer: the right panel shows the confusion matrix of the chosen variant
    there when the analysis recorded one (``confusion[variant][i]``, rows = true class), else the
    accuracy per group (e.g. per domain) at that layer.
    """

    def __init__(self, probes: Any, *, width: float = 11.0, height: float = 3.6) -> None:
        probes = getattr(probes, "probes", probes)
        if not isinstance(probes, Mapping):
            probes = {getattr(probes, "name", "probe"): probes}
        if not probes:
            raise ValueError("ProbeExplorer needs at least one ProbeAnalysis (analyze(..., probes=True))")
        self.probes = dict(probes)
        first = next(iter(self.probes.values()))
        layers = [layer for layer in first.layers if layer is not None]
        self.probe = widgets.Dropdown(options=list(self.probes), description="probe")
        self.layer = _layer_slider(layers, layers[-1])
        self.variant = widgets.ToggleButtons(options=list(first.accuracy), value="base" if "base" in first.accuracy else
                                             next(iter(first.accuracy)), description="variant")
        self.probe.observe(lambda _change: self._probe_changed(), names="value")
        super().__init__([self.probe, self.layer, self.variant], width, height)
        self.update()

    def current(self) -> Any:
        """The ProbeAnalysis on show."""
        return self.probes[self.probe.value]

    def _probe_changed(self) -> None:
        probe = self.current()
        layers = [layer for layer in probe.layers if layer is not None]
        options = [(str(layer), layer) for layer in layers]
        if list(self.layer.options) != options:
            self.layer.options = options  # resets the slider to the first option
            self.layer.value = layers[-1]
        if list(self.variant.options) != list(probe.accuracy):
            self.variant.options = list(probe.accuracy)

    def _index(self) -> int:
        return self.current().layers.index(self.layer.value)

    def confusion(self) -> list[list[int]] | None:
        """The selected variant's confusion matrix at the selected layer, when the analysis has one."""
        matrices = getattr(self.current(), "confusion", None) or {}
        per_layer = matrices.get(self.variant.value)
        return per_layer[self._index()] if per_layer else None

    def figure(self) -> Any:
        probe, i = self.current(), self._index()
        self.title.value = html_title(f"Probe: {probe.name}", probe.description)
        figure, (curves, detail) = new_figure(*self.size, n_axes=2)
        layers = probe.layers
        for variant, rows in probe.accuracy.items():
            colour, style = VARIANT_STYLES.get(variant, (None, "-"))
            curves.plot(layers, [r["acc"] for r in rows], color=colour, linestyle=style, marker="o", markersize=3, label=variant)
            curves.fill_between(layers, [r["ci_low"] for r in rows], [r["ci_high"] for r in rows], color=colour, alpha=0.12)
        curves.axhline(probe.chance, color="black", linestyle=":", linewidth=0.9, label="chance")
        curves.axvline(self.layer.value, color="black", linewidth=0.8)
        curves.set(xlabel="layer", ylabel="cross-validated accuracy", ylim=(0, 1.02), title="accuracy per layer")
        curves.legend(fontsize="small")
        matrix = self.confusion()
        if matrix is not None:
            image = detail.imshow(matrix, cmap="Blues")
            detail.figure.colorbar(image, ax=detail)
            labels = [plain(c) for c in probe.classes][: len(matrix)]
            detail.set_xticks(range(len(labels)), labels, rotation=30, fontsize="x-small")
            detail.set_yticks(range(len(labels)), labels, fontsize="x-small")
            detail.set(xlabel="predicted", ylabel="true", title=f"{self.variant.value}: confusion at layer {self.layer.value}")
        elif probe.by_group.get(self.variant.value):
            groups = probe.by_group[self.variant.value]
            names = list(groups)
            detail.bar(range(len(names)), [groups[g][i] for g in names], color="#2c3e50")
            detail.set_xticks(range(len(names)), [plain(n) for n in names], rotation=20, fontsize="small")
            detail.axhline(probe.chance, color="black", linestyle=":", linewidth=0.9)
            detail.set(ylim=(0, 1.02), title=f"{self.variant.value}: accuracy per group at layer {self.layer.value}")
        else:  # neither a confusion matrix nor groups recorded: the variants side by side at this layer
            variants = list(probe.accuracy)
            rows = [probe.accuracy[v][i] for v in variants]
            errors = [[r["acc"] - r["ci_low"] for r in rows], [r["ci_high"] - r["acc"] for r in rows]]
            detail.bar(range(len(variants)), [r["acc"] for r in rows], yerr=errors,
                       color=[VARIANT_STYLES.get(v, ("#2c3e50", "-"))[0] for v in variants])
            detail.set_xticks(range(len(variants)), variants)
            detail.axhline(probe.chance, color="black", linestyle=":", linewidth=0.9)
            detail.set(ylim=(0, 1.02), title=f"accuracy at layer {self.layer.value} (95% CI)")
        _integer_layers(curves)
        return figure

    def rows(self) -> list[list[Any]]:
        """The table under the figure: each variant's accuracy and interval at the selected layer."""
        probe, i = self.current(), self._index()
        return [[variant, rows[i]["acc"], f"[{rows[i]['ci_low']:.3f}, {rows[i]['ci_high']:.3f}]", rows[i]["n"], probe.chance]
                for variant, rows in probe.accuracy.items()]

    def table_html(self) -> str:
        return html_table(["variant", "accuracy", "95% CI", "n", "chance"], self.rows(),
                          caption=f"{self.current().name} probe at layer {self.layer.value}")


# --- damage ------------------------------------------------------------------------------------


class DamageExplorer(_Explorer):
    """Which domain got hurt, and where: click a domain to see its shift per layer and the accuracy changes.

    ``damage``: a DamageAnalysis (or an Analysis, its ``.damage``); ``comparison``: the
    :class:`~rmu_lens.eval.Comparison` behind it, for every subject's change (default: the
    domains' own rows).
    """

    def __init__(self, damage: Any, comparison: Any = None, *, width: float = 11.0, height: float = 3.6) -> None:
        damage = getattr(damage, "damage", damage)
        if damage is None or not damage.shift_map:
            raise ValueError("DamageExplorer needs a DamageAnalysis: pass comparison= to rmu_lens.analysis.analyze")
        self.damage = damage
        self.comparison = comparison
        self.domain = widgets.ToggleButtons(options=list(damage.shift_map), description="domain")
        super().__init__([self.domain], width, height)
        self.title.value = html_title("Damage", f"shift = 1 − mean cos(unlearned, base); read layer l = {damage.layer}")
        self.update()

    def row(self) -> dict[str, Any] | None:
        """The ranked-table row of the selected domain (None when it was not evaluated)."""
        return next((r for r in self.damage.rows if r["domain"] == self.domain.value), None)

    def subject_changes(self) -> list[tuple[str, float, float, float]]:
        """(subject, change, CI low, CI high) for every subject, largest drop first."""
        if self.comparison is not None:
            return [(r.subject, r.delta, r.ci_low, r.ci_high) for r in self.comparison.rows]
        return [(r["subject"], -r["accuracy_drop"], -r["drop_ci_high"], -r["drop_ci_low"]) for r in self.damage.rows]

    def figure(self) -> Any:
        d, selected = self.damage, self.domain.value
        figure, (shift_axes, change_axes) = new_figure(*self.size, n_axes=2)
        for name, shift in d.shift_map.items():
            chosen = name == selected
            shift_axes.plot(d.layers, shift, color="#c0392b" if chosen else "#bdc3c7", linewidth=2 if chosen else 1,
                            marker="o" if chosen else None, markersize=3, label=plain(name) if chosen else None, zorder=3 if chosen else 1)
        shift_axes.axvline(d.layer, color="black", linestyle=":", linewidth=0.9)
        shift_axes.set(xlabel="layer", ylabel="1 − cos(unlearned, base)", title=f"shift per layer: {plain(selected)} (grey: others)")
        shift_axes.legend(fontsize="small")
        _integer_layers(shift_axes)
        changes = self.subject_changes()
        row = self.row()
        subject = row["subject"] if row else None
        colours = ["#c0392b" if s == subject else "#7f8c8d" for s, *_ in changes]
        errors = [[delta - low for _, delta, low, _ in changes], [high - delta for _, delta, _, high in changes]]
        change_axes.barh(range(len(changes)), [delta for _, delta, _, _ in changes], xerr=errors, color=colours)
        change_axes.set_yticks(range(len(changes)), [plain(s) for s, *_ in changes], fontsize="small")
        change_axes.invert_yaxis()
        change_axes.axvline(0, color="black", linewidth=0.8)
        change_axes.set(xlabel=f"accuracy change ({d.metric}, 95% CI)", title="per-subject change")
        return figure

    def table_html(self) -> str:
        row = self.row()
        if row is None:
            return html_table(["domain"], [[self.domain.value]], caption="this domain has no evaluated subject")
        keys = ["domain", "subject", "role", "base_acc", "new_acc", "accuracy_drop", "shift_at_layer", "shift_mean",
                "shift_peak_layer", "norm_ratio_at_layer"]
        return html_table(keys, [[row[k] for k in keys]], caption=f"{self.domain.value} (layer l = {self.damage.layer})")


# --- recovery ----------------------------------------------------------------------------------


class RecoveryExplorer(_Explorer):
    """The estimate of u, c and l per forget topic: pick a topic, see its curves, its verdict and its numbers.

    ``recovery``: a :class:`~rmu_lens.analysis.recover.Recovery` (or a ``recovery.json`` file or the
    directory holding one). The figure is one topic's row of ``Recovery.figures()``: forget and retain
    change, mean cos(h, v) against the base, the energy off v, each with the rule's threshold; the
    collapsed layers shaded and l̂ marked. The title holds the verdict line, the table the curves per layer.
    """

    def __init__(self, recovery: Any, *, topic: str | None = None, width: float = 13.0, height: float = 3.6) -> None:
        from rmu_lens.analysis.recover import Recovery

        if not isinstance(recovery, Recovery):
            recovery = Recovery.load(recovery)
        if not recovery.topics:
            raise ValueError("RecoveryExplorer needs a Recovery with at least one topic (rmu_lens.analysis.recover)")
        start = next(iter(recovery.topics)) if topic is None else topic
        if start not in recovery.topics:
            raise ValueError(f"topic {start!r} was not estimated; topics: {list(recovery.topics)}")
        self.recovery = recovery
        self.topic = widgets.Dropdown(options=list(recovery.topics), value=start, description="topic")
        super().__init__([self.topic], width, height)
        self.update()

    def current(self) -> Any:
        """The TopicEstimate on show."""
        return self.recovery.topics[self.topic.value]

    def verdict(self) -> str:
        """The verdict line of the topic on show (and "nothing changed" for identical models)."""
        if self.recovery.nothing_changed:
            return "nothing changed: every tensor of the two models is identical"
        return self.recovery.verdicts()[self.topic.value]

    def figure(self) -> Any:
        from rmu_lens.plots.recovery import draw_topic

        weights = self.recovery.verdicts()["weights"]
        self.title.value = html_title(f"Recovery: {self.topic.value}", f"{self.verdict()} · weights: {weights}")
        figure, axes = new_figure(*self.size, n_axes=3)
        draw_topic(axes, self.current(), self.recovery.layers, self.recovery.rule, self.recovery.nothing_changed)
        return figure

    def rows(self) -> list[list[Any]]:
        """The table under the figure: the curves at every layer, and whether the layer meets the rule."""
        est, curves = self.current(), self.current().curves
        return [
            [layer, "l̂" if layer == est.layer else ("yes" if layer in est.collapsed_layers else ""),
             curves["forget_change"][i], curves["retain_change"][i], curves["mean_cos"][i], curves["base_mean_cos"][i],
             1 - curves["share"][i], 1 - curves["base_share"][i], curves["scale"][i]]
            for i, layer in enumerate(self.recovery.layers)
        ]

    def table_html(self) -> str:
        headers = ["layer", "collapsed", "forget change", "retain change", "mean cos", "base mean cos", "1 − share",
                   "base 1 − share", "scale h·v"]
        return html_table(headers, self.rows(), caption=f"{self.topic.value}: {self.verdict()}")
