"""Layer study: sweep the RMU layer l (update layers l-2..l) for plain and adaptive coefficients.

Tests the Adaptive RMU paper's claim (Dang et al. 2024): plain RMU, with one steering coefficient c
for every layer, loses effectiveness at middle and late layers (residual norms grow with depth, so a
fixed c·u becomes small against them), while the adaptive coefficient c = beta x the layer's mean
token norm works at most layers. For each (layer, mode) the study runs RMU on the model, scores the
forget and retain questions, and measures the ablation audit's recovery (mean-difference
directions projected out from the first trained layer to the last layer).

The study is a preset of :func:`rmu_lens.sweep.sweep`'s machinery: an Optuna GridSampler over
layer x mode, each run trained on the one model passed in and its trained tensors restored
bit-exactly afterwards (and on errors) by :class:`rmu_lens.sweep.reuse.TrialRunner`. Runs whose
first trained layer is the same (plain and adaptive at one layer) share the frozen prefix
activations: layers below the first trained one are never trained and the weights are restored
between runs, so the prefix of a token batch is the same in every such run.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from rmu_lens.audit.recovery_stats import Recovery, recovery
from rmu_lens.results import JSONResult
from rmu_lens.rmu.trainer import RMUTrainer

FORMAT = "rmu_lens.layer_study/1"
MODES = ("plain", "adaptive")
DEFAULT_BETA = 5.0  # the Adaptive RMU paper's beta


@dataclass
class LayerPoint:
    """One RMU run of the sweep: its layer and mode, accuracies after it, and the ablation recovery."""

    layer: int
    mode: str
    update_layers: list[int]
    steering_coeff: float
    forget_acc: float
    retain_acc: float | None
    ablation_recovery: Recovery | None
    final_forget_norm: float
    final_retain_cos: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "ablation_recovery"}
        data["ablation_recovery"] = self.ablation_recovery.to_dict() if self.ablation_recovery else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerPoint:
        values = {k: data[k] for k in cls.__dataclass_fields__ if k != "ablation_recovery"}
        rec = data.get("ablation_recovery")
        return cls(**values, ablation_recovery=Recovery.from_dict(rec) if rec else None)


@dataclass
class LayerStudy(JSONResult):
    """Forget/retain accuracy and ablation recovery per (layer, mode); see the module docstring."""

    layers: list[int]
    modes: list[str]
    base: dict[str, Any]
    results: list[LayerPoint]
    config: dict[str, Any]
    chance: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    FORMAT = FORMAT
    WHAT = "an rmu_lens layer study"

    def points(self, mode: str) -> list[LayerPoint]:
        """One mode's runs by increasing layer."""
        return sorted((p for p in self.results if p.mode == mode), key=lambda p: p.layer)

    def effective_layers(self, mode: str, removed_share: float = 0.5, retain_share: float = 0.9) -> list[int]:
        """Layers where RMU removed at least ``removed_share`` of the above-chance forget accuracy while
        keeping at least ``retain_share`` of the base retain accuracy."""
        floor = self.chance if self.chance is not None else 0.0
        removable = self.base["forget_acc"] - floor
        out = []
        for p in self.points(mode):
            removed = (self.base["forget_acc"] - p.forget_acc) / removable if removable > 0 else 0.0
            kept = p.retain_acc is None or self.base.get("retain_acc") in (None, 0) or p.retain_acc >= retain_share * self.base["retain_acc"]
            if removed >= removed_share and kept:
                out.append(p.layer)
        return out

    def verdict(self) -> str:
        """Does the paper's claim hold here: adaptive effective at more layers than plain?"""
        effective = {mode: self.effective_layers(mode) for mode in self.modes}
        text = "; ".join(f"{mode} effective at layers {effective[mode] or 'none'}" for mode in self.modes)
        if set(MODES) <= set(self.modes):
            plain, adaptive = len(effective["plain"]), len(effective["adaptive"])
            claim = "supports" if adaptive > plain else "does not support"
            text += f" ({claim} the claim that adaptive RMU works at more layers than plain RMU)"
        return text

    def table(self) -> str:
        lines = [f"base: forget {self.base['forget_acc']:.3f}, retain {self.base.get('retain_acc', float('nan')):.3f}",
                 f"{'layer':>5} {'mode':9} {'c':>9} {'forget':>7} {'retain':>7} {'ablation recovery':>22} {'s':>6}"]
        for mode in self.modes:
            for p in self.points(mode):
                rec = p.ablation_recovery.describe() if p.ablation_recovery else "-"
                retain = f"{p.retain_acc:.3f}" if p.retain_acc is not None else "-"
                lines.append(f"{p.layer:>5} {mode:9} {p.steering_coeff:9.3g} {p.forget_acc:7.3f} {retain:>7} {rec:>22} {p.seconds:6.1f}")
        lines.append(self.verdict())
        return "\n".join(lines)

    def figure(self) -> Any:
        """Forget/retain accuracy and ablation recovery vs layer, plain vs adaptive (a matplotlib Figure)."""
        from rmu_lens.plots.audit import layer_study_figure

        return layer_study_figure(self)

    def figures(self) -> dict[str, Any]:
        """``layer_study``: :meth:`figure`."""
        return {"layer_study": self.figure()}

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "layers": self.layers, "modes": self.modes, "base": self.base,
                "results": [p.to_dict() for p in self.results], "config": self.config, "chance": self.chance,
                "verdict": self.verdict(), "meta": self.meta}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerStudy:
        """The inverse of :meth:`to_dict` (the ``verdict`` it writes is recomputed, not read)."""
        cls.check_format(data)
        return cls(layers=data["layers"], modes=data["modes"], base=data["base"],
                   results=[LayerPoint.from_dict(p) for p in data["results"]], config=data["config"],
                   chance=data.get("chance"), meta=data.get("meta") or {})


def _texts(data: Any) -> list[str]:
    return list(getattr(data, "texts", data))


def plain_coefficient(model: Any, forget: Any, retain: Any, config: Any, beta: float) -> float:
    """A fixed c for plain RMU: the adaptive coefficient (beta x mean frozen token norm) at ``config.layer``,
    averaged over topics — a c tuned for one layer, as the published plain RMU's is."""
    trainer = RMUTrainer(model, forget, retain, dataclasses.replace(config, adaptive_beta=beta))
    coefficients = trainer.calibrate_adaptive()
    return float(sum(coefficients.values()) / len(coefficients))


def layer_study(
    model: Any,
    forget: Any,
    retain: Any,
    forget_questions: Sequence[Any],
    retain_questions: Sequence[Any] | None = None,
    *,
    layers: Sequence[int],
    config: Any,
    modes: Sequence[str] = MODES,
    steering_coeff: float | None = None,
    adaptive_beta: float | None = None,
    ablation: bool = True,
    direction_texts: int = 64,
    max_length: int = 128,
    chance: float | None = 0.25,
    mode: str = "cloze",
    batch_size: int = 16,
    share_prefix: bool = True,
    progress: bool = True,
    out: str | os.PathLike | None = None,
) -> LayerStudy:
    """Run RMU at each layer in ``layers`` for each mode and measure forget/retain accuracy and ablation recovery.

    ``config`` is the template RMUConfig (lr, alpha, steps, trained tensors...); each run sets
    ``layer=l``, ``update_layers=l-2..l`` (clipped at 0), and for ``plain`` a fixed ``steering_coeff``
    (default :func:`plain_coefficient` at the template's layer), for ``adaptive`` ``adaptive_beta``
    (default the template's, else 5). The first ``direction_texts`` forget texts, truncated to
    ``max_length`` tokens, feed the ablation's direction estimate. ``model`` is restored to its
    original weights after every run and at the end (the points are run in the grid sampler's order
    and returned by layer, then mode). With ``out``, writes ``layer_study.json`` and
    ``figures/layer_study.png`` there.
    """
    from rmu_lens.analysis.activations import collect_activations, resid_post_hooks, tokenize
    from rmu_lens.audit.ablation import ablated, directions_from_activations
    from rmu_lens.eval import evaluate
    from rmu_lens.models import tokenizer_of

    import optuna

    from rmu_lens.sweep.reuse import TrialRunner
    from rmu_lens.sweep.study import AskTellGridSampler

    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"modes={list(modes)}: unknown {unknown}; choose from {MODES}")
    n_layers = model.cfg.n_layers
    layers = sorted({int(l) for l in layers})
    if not layers or layers[0] < 0 or layers[-1] >= n_layers:
        raise ValueError(f"layers={layers} must be non-empty and within 0..{n_layers - 1}")
    modes = list(modes)
    beta = adaptive_beta or config.adaptive_beta or DEFAULT_BETA
    started = time.perf_counter()

    def score(questions: Sequence[Any] | None):
        return evaluate(model, questions, mode=mode, batch_size=batch_size, progress=False) if questions else None

    runner = TrialRunner(model, forget, retain, share_prefix=share_prefix)
    base_acts = None
    try:
        base_forget, base_retain = score(forget_questions), score(retain_questions)
        plain_c = steering_coeff if steering_coeff is not None else (
            plain_coefficient(model, forget, retain, config, beta) if "plain" in modes else None)
        for parameter in model.parameters():  # the calibration trainer marked its tensors trainable
            parameter.requires_grad_(False)
        batch = None
        if ablation:
            batch = tokenize(tokenizer_of(model), _texts(forget)[:direction_texts], max_length)
            all_hooks = resid_post_hooks(model, range(max(0, layers[0] - 2), n_layers))
            base_acts = collect_activations(model, batch, all_hooks, progress=False)
        # The sweep's grid preset: layer x mode, each point trained on the one model and restored after.
        grid = {"layer": layers, "mode": modes}
        directions = ["minimize", "maximize"] if retain_questions else ["minimize"]
        study = optuna.create_study(directions=directions, sampler=AskTellGridSampler(grid, seed=0))
        results: list[LayerPoint] = []
        for _ in range(len(layers) * len(modes)):
            trial = study.ask()
            layer, rmu_mode = trial.suggest_categorical("layer", layers), trial.suggest_categorical("mode", modes)
            update = list(range(max(0, layer - 2), layer + 1))
            cfg = dataclasses.replace(
                config, layer=layer, update_layers=update, hook_point=None,
                adaptive_beta=beta if rmu_mode == "adaptive" else None,
                steering_coeff=plain_c if rmu_mode == "plain" else config.steering_coeff,
            )
            run_started = time.perf_counter()
            with runner.trained(cfg, progress=progress) as run:
                after_forget, after_retain = score(forget_questions), score(retain_questions)
                rec = None
                if ablation:
                    ablate_layers = list(range(update[0], n_layers))
                    ablate_hooks = resid_post_hooks(model, ablate_layers)
                    with collect_activations(model, batch, ablate_hooks, progress=False) as new_acts:
                        vectors = directions_from_activations(base_acts, new_acts, ablate_layers)
                    with ablated(model, vectors.vectors["mean_diff"]):
                        audited = score(forget_questions)
                    rec = recovery(base_forget.outcomes(), after_forget.outcomes(), audited.outcomes())
            last = run.history[-1] if run.history else {}
            coefficient = float(sum(run.steering_coeffs.values()) / len(run.steering_coeffs))
            point = LayerPoint(
                layer, rmu_mode, update, coefficient, after_forget.accuracy,
                after_retain.accuracy if after_retain else None, rec,
                float(last.get("forget_norm", math.nan)), float(last.get("retain_cos", math.nan)),
                round(time.perf_counter() - run_started, 1),
            )
            results.append(point)
            study.tell(trial, [point.forget_acc, point.retain_acc] if retain_questions else [point.forget_acc])
        results.sort(key=lambda p: (layers.index(p.layer), modes.index(p.mode)))
    finally:
        runner.restore()
        if base_acts is not None:
            base_acts.close()
    cache = runner.prefix_cache
    study = LayerStudy(
        layers=layers, modes=modes,
        base={"forget_acc": base_forget.accuracy, "retain_acc": base_retain.accuracy if base_retain else None},
        results=results, config=config.to_dict(), chance=chance,
        meta={"plain_steering_coeff": plain_c, "adaptive_beta": beta, "mode": mode,
              "ablation": "mean_diff directions projected out at every layer from the first trained one to the last",
              "prefix_cache": {"hits": cache.hits, "misses": cache.misses} if cache is not None else None,
              "sampler": "optuna GridSampler over layer x mode (rmu_lens.sweep)",
              "seconds": round(time.perf_counter() - started, 1)},
    )
    if out is not None:
        directory = Path(out)
        directory.mkdir(parents=True, exist_ok=True)
        study.save(directory / "layer_study.json")
        from rmu_lens._io import atomic_directory

        with atomic_directory(directory / "figures") as staging:
            study.figure().savefig(staging / "layer_study.png", dpi=120, bbox_inches="tight")
    return study

