"""Direction-ablation audit: estimate the "RMU direction" per layer and project it out at inference time.

Following Arditi (2024) and Łucki et al. (2024): on forget prompts, the direction at layer i is

* ``mean_diff``: mean(unlearned activations) - mean(base activations) at ``blocks.{i}.hook_resid_post``,
* ``pca``: the first principal component of the pooled base and unlearned activations (sign-aligned
  with ``mean_diff``),

over real tokens, leaving out the first ``skip_first`` tokens of every text (position 0 carries a
massive activation) and outlier tokens whose base-model norm exceeds ``outlier_factor`` x the median
(the exclusions are recorded). Ablation projects the unit direction out of the residual stream,
``h <- h - (h·d)d``, with TransformerLens hooks on the unlearned model, at every position of every
layer of a layer set, while the evaluator scores the forget and retain questions. A random direction
of the same norm at the same layers is the control: it must recover about nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from rmu_lens.audit.recovery_stats import Baseline, Recovery

HOOK_TEMPLATE = "blocks.{layer}.hook_resid_post"
METHODS = ("mean_diff", "pca")
CONTROL = "random"


# --- the RMU direction per layer ---------------------------------------------------------------


@dataclass
class RMUDirections:
    """Per layer: the mean-difference and first-PC directions and what they were estimated from."""

    vectors: dict[str, dict[int, torch.Tensor]]
    """method -> layer -> direction (``mean_diff`` keeps its norm; ``pca`` is a unit vector)."""
    stats: dict[int, dict[str, Any]]
    """layer -> token counts, norms, cos(pca, mean_diff), cos with each control vector."""
    exclusions: str
    hook_template: str = HOOK_TEMPLATE

    @property
    def layers(self) -> list[int]:
        return sorted(self.stats)

    def random_like(self, seed: int = 0) -> dict[int, torch.Tensor]:
        """Random Gaussian directions with the norms of the mean-difference directions (the control)."""
        generator = torch.Generator().manual_seed(seed)
        out = {}
        for layer, vector in self.vectors["mean_diff"].items():
            random = torch.randn(vector.shape, generator=generator, dtype=torch.float64)
            out[layer] = (random / random.norm() * vector.norm()).to(vector.dtype)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"hook_template": self.hook_template, "exclusions": self.exclusions,
                "stats": {str(k): v for k, v in self.stats.items()}}

    def tensors(self) -> dict[str, torch.Tensor]:
        """``{method}.{layer}`` -> direction, for safetensors."""
        return {f"{m}.{layer}": v for m, per_layer in self.vectors.items() for layer, v in per_layer.items()}


def estimate_directions(
    base: Any,
    unlearned: Any,
    texts: Sequence[str],
    layers: Sequence[int],
    *,
    batch_size: int = 8,
    max_length: int = 256,
    skip_first: int = 1,
    outlier_factor: float = 4.0,
    control_vectors: Mapping[str, torch.Tensor] | None = None,
    progress: bool = False,
) -> RMUDirections:
    """Estimate the RMU direction at ``blocks.{i}.hook_resid_post`` for each layer i from forget texts.

    ``base`` and ``unlearned`` are bridges sharing a tokenizer; both see exactly the same tokens.
    ``control_vectors`` (the run's u per topic) are compared with each direction by cosine.
    """
    from rmu_lens.analysis.activations import collect_activations, resid_post_hooks, tokenize
    from rmu_lens.models import tokenizer_of

    layers = sorted({int(l) for l in layers})
    if not layers:
        raise ValueError("estimate_directions needs at least one layer")
    hooks = resid_post_hooks(unlearned, layers)
    if base.cfg.d_model != unlearned.cfg.d_model or base.cfg.n_layers != unlearned.cfg.n_layers:
        raise ValueError("base and unlearned models differ in shape: pass the model the run started from as base")
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise ValueError("estimate_directions needs forget texts (a non-empty list of strings)")
    batch = tokenize(tokenizer_of(unlearned), texts, max_length)
    options = dict(batch_size=batch_size, skip_first=skip_first, progress=progress)
    with collect_activations(base, batch, hooks, **options) as base_acts, collect_activations(unlearned, batch, hooks, **options) as new_acts:
        return directions_from_activations(base_acts, new_acts, layers, outlier_factor=outlier_factor,
                                           control_vectors=control_vectors, max_length=max_length)


def directions_from_activations(
    base_acts: Any,
    unlearned_acts: Any,
    layers: Sequence[int],
    *,
    outlier_factor: float = 4.0,
    control_vectors: Mapping[str, torch.Tensor] | None = None,
    max_length: int | None = None,
) -> RMUDirections:
    """The directions from per-token :class:`~rmu_lens.analysis.activations.Activations` of both models
    on the same token batch (collected with ``reduce=None``)."""
    from sklearn.decomposition import PCA

    if not torch.equal(base_acts.mask, unlearned_acts.mask):
        raise ValueError("base and unlearned activations were collected on different tokens: use one TokenBatch for both")
    vectors: dict[str, dict[int, torch.Tensor]] = {"mean_diff": {}, "pca": {}}
    stats: dict[int, dict[str, Any]] = {}
    for layer in sorted({int(l) for l in layers}):
        hook = HOOK_TEMPLATE.format(layer=layer)
        base_tokens, unlearned_tokens = base_acts.tokens(hook).double(), unlearned_acts.tokens(hook).double()
        if len(base_tokens) < 2:
            raise ValueError(f"Too few tokens to estimate a direction (got {len(base_tokens)}): give longer or more forget texts")
        base_norms = base_tokens.norm(dim=-1)
        inliers = base_norms <= outlier_factor * base_norms.median()
        b, u = base_tokens[inliers], unlearned_tokens[inliers]
        mean_diff = u.mean(0) - b.mean(0)
        pca = PCA(n_components=1).fit(torch.cat([b, u]).numpy())
        pc1 = torch.from_numpy(pca.components_[0].copy())
        pc1 = pc1 / pc1.norm()
        if float(pc1 @ mean_diff) < 0:
            pc1 = -pc1
        unit = mean_diff / mean_diff.norm()
        stats[layer] = {
            "hook": hook,
            "n_tokens": int(inliers.sum()),
            "n_outliers": int((~inliers).sum()),
            "base_mean_norm": float(b.norm(dim=-1).mean()),
            "unlearned_mean_norm": float(u.norm(dim=-1).mean()),
            "mean_diff_norm": float(mean_diff.norm()),
            "pca_explained_variance_ratio": float(pca.explained_variance_ratio_[0]),
            "cos_pca_mean_diff": float(pc1 @ unit),
            "cos_control_vector": {
                topic: float(unit @ (v.double().flatten() / v.double().norm())) for topic, v in (control_vectors or {}).items()
            },
        }
        vectors["mean_diff"][layer] = mean_diff.float()
        vectors["pca"][layer] = pc1.float()
    exclusions = (
        f"real tokens only; the first {base_acts.skip_first} token(s) of each text excluded (position 0 carries a "
        f"massive activation); tokens whose base-model norm exceeds {outlier_factor:g} x the layer's median excluded "
        f"as outliers" + (f"; texts truncated to {max_length} tokens" if max_length else "")
    )
    return RMUDirections(vectors=vectors, stats=stats, exclusions=exclusions)


# --- ablation at inference time -----------------------------------------------------------------


def projection_hook(direction: torch.Tensor):
    """A TL hook function that removes the component along ``direction``: ``h - (h·d)d`` with d unit."""
    unit = (direction.double() / direction.double().norm()).float()
    if not torch.isfinite(unit).all():
        raise ValueError("Cannot ablate a zero direction: the base and unlearned activations do not differ there")

    def hook(activation: torch.Tensor, hook: Any = None) -> torch.Tensor:
        d = unit.to(activation.device, activation.dtype)
        return activation - (activation @ d).unsqueeze(-1) * d

    return hook


@contextmanager
def ablated(model: Any, directions: Mapping[int, torch.Tensor], hook_template: str = HOOK_TEMPLATE) -> Iterator[Any]:
    """Within the block, ``model`` (a bridge) runs with each direction projected out at its layer.

    The hooks also fire when the bridge's HF model is called directly, as :func:`rmu_lens.eval.evaluate` does.
    """
    hooks = [(hook_template.format(layer=layer), projection_hook(vector)) for layer, vector in sorted(directions.items())]
    with model.hooks(fwd_hooks=hooks):
        yield model


# --- the audit -----------------------------------------------------------------------------------


@dataclass
class AblationCondition:
    """One ablation: a method's directions projected out at a set of layers, and what it recovered."""

    layers: list[int]
    method: str
    forget_acc: float
    retain_acc: float | None
    retain_change: float | None
    """Retain accuracy with the ablation minus the unlearned model's (the cost of the ablation)."""
    recovery: Recovery
    forget_outcomes: dict[str, bool] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.method} @ layers {','.join(map(str, self.layers))}"

    def to_dict(self) -> dict[str, Any]:
        return {"layers": self.layers, "method": self.method, "label": self.label, "forget_acc": self.forget_acc,
                "retain_acc": self.retain_acc, "retain_change": self.retain_change,
                "recovery": self.recovery.to_dict(), "forget_outcomes": self.forget_outcomes}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AblationCondition:
        return cls(layers=list(data["layers"]), method=data["method"], forget_acc=data["forget_acc"],
                   retain_acc=data.get("retain_acc"), retain_change=data.get("retain_change"),
                   recovery=Recovery.from_dict(data["recovery"]), forget_outcomes=dict(data.get("forget_outcomes", {})))


@dataclass
class AblationResult:
    """Every ablation condition (methods x layer sets, plus the random control) and the directions' statistics."""

    conditions: list[AblationCondition]
    directions: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    def best(self) -> AblationCondition | None:
        """The non-control condition with the highest recovery (None if no recovery is defined)."""
        candidates = [c for c in self.conditions if c.method != CONTROL and math.isfinite(c.recovery.recovery)]
        return max(candidates, key=lambda c: c.recovery.recovery, default=None)

    def control(self) -> AblationCondition | None:
        return next((c for c in self.conditions if c.method == CONTROL), None)

    def to_dict(self) -> dict[str, Any]:
        return {"conditions": [c.to_dict() for c in self.conditions], "directions": self.directions, "meta": self.meta}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AblationResult:
        return cls([AblationCondition.from_dict(c) for c in data["conditions"]], dict(data["directions"]), dict(data.get("meta", {})))


def default_layer_sets(read_layer: int, update_layers: Sequence[int], n_layers: int) -> list[list[int]]:
    """The read layer alone; the trained layers with it; every layer from the first trained one to the last."""
    first = min([read_layer, *update_layers])
    sets = [[read_layer], sorted({*update_layers, read_layer}), list(range(first, n_layers))]
    unique: list[list[int]] = []
    for layer_set in sets:
        if layer_set not in unique:
            unique.append(layer_set)
    return unique


def ablation_audit(
    unlearned: Any,
    directions: RMUDirections,
    baseline: Baseline,
    forget_questions: Sequence[Any],
    retain_questions: Sequence[Any] | None = None,
    *,
    layer_sets: Sequence[Sequence[int]],
    methods: Sequence[str] = METHODS,
    control: bool = True,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = False,
) -> AblationResult:
    """Project each method's directions out at each layer set of ``unlearned`` and re-evaluate.

    The random control (directions of the mean-difference norms, drawn with ``seed``) runs at the
    layer set whose best method recovered most. ``baseline`` holds the base and unlearned
    evaluations of the same questions. The model is left without hooks afterwards.
    """
    from rmu_lens.eval import evaluate

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"methods={list(methods)}: unknown {unknown}; choose from {METHODS}")
    layer_sets = [sorted({int(l) for l in s}) for s in layer_sets]
    missing = sorted({l for s in layer_sets for l in s} - set(directions.layers))
    if missing:
        raise ValueError(f"layer_sets use layers {missing} for which no direction was estimated; estimate them first")
    mode = baseline.base_forget.mode

    def run(layers: list[int], method: str, vectors: Mapping[int, torch.Tensor]) -> AblationCondition:
        with ablated(unlearned, {l: vectors[l] for l in layers}, directions.hook_template):
            forget = evaluate(unlearned, forget_questions, mode=mode, batch_size=batch_size, progress=progress)
            retain = evaluate(unlearned, retain_questions, mode=mode, batch_size=batch_size, progress=progress) if retain_questions else None
        retain_change = retain.accuracy - baseline.unlearned_retain.accuracy if retain is not None and baseline.unlearned_retain is not None else None
        return AblationCondition(layers, method, forget.accuracy, retain.accuracy if retain else None, retain_change,
                                 baseline.recovery(forget, seed=seed), forget.outcomes())

    conditions = [run(layers, method, directions.vectors[method]) for layers in layer_sets for method in methods]
    result = AblationResult(conditions, directions.to_dict(), {
        "hook_template": directions.hook_template, "layer_sets": layer_sets, "methods": list(methods), "mode": mode,
        "ablation": "h <- h - (h·d)d with d the unit direction, at every position, at each layer of the set",
    })
    if control:
        best = result.best()
        layers = best.layers if best is not None else layer_sets[-1]
        result.conditions.append(run(layers, CONTROL, directions.random_like(seed)))
        result.meta["control"] = f"random Gaussian directions with the mean_diff norms (seed {seed}) at layers {layers}"
    return result
