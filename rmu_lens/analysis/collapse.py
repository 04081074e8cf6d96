"""Norms, directions and collapse: what RMU did to each dataset's activations, layer by layer.

For the statistics tokens ``h`` (position 0 and pads excluded, see activations.py) of one dataset at
one hook point, for the base and the unlearned model:

* ``mean_norm`` = mean ||h||, and the 5/25/50/75/95% quantiles of ||h|| (``norm_q05`` ... ``norm_q95``);
* ``cos_u`` = mean cos(h, u); ``cos_ones`` = mean cos(h, 1); ``cos_u_perp`` = mean cos(h, u⊥), where
  u⊥ is the part of u orthogonal to the all-ones direction. u = rand/||rand|| has cos(u, 1) ≈ 0.87,
  so a large ``cos_u`` alone may only say "the activations have a positive mean"; ``cos_u_perp``
  separates the two;
* ``dist_to_cu`` = mean ||h − c·u||;
* dispersion: ``mean_pairwise_cos`` = mean over pairs i≠j of cos(h_i, h_j) (exactly, from
  ||Σ ĥ_i||²), ``cov_trace`` = trace of the covariance (ddof 1), ``relative_dispersion`` =
  cov_trace / mean ||h||² (0 when every token is at one point, whatever the scale), and
  ``effective_rank`` = exp(entropy of σ_i / Σσ) over the singular values of the (uncentred) token
  matrix (Roy & Vetterli 2007). A collapse to one point near c·u shows as mean_pairwise_cos → 1,
  relative_dispersion → 0, effective_rank → 1 and dist_to_cu / c → 0.

Per dataset and hook point, base vs unlearned on the same tokens: ``cos_unlearned_base`` (mean and
quantiles of the per-token cosine) and ``norm_ratio`` = mean ||h_unlearned|| / mean ||h_base||.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rmu_lens.analysis.activations import Activations
from rmu_lens.analysis.registry import Analyzer, DatasetInfo, register_analyzer
from rmu_lens.results import JSONResult

COLLAPSE_FORMAT = "rmu_lens.collapse/1"
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
QUANTILE_NAMES = tuple(f"q{round(q * 100):02d}" for q in QUANTILES)
MODEL_METRICS = (
    "mean_norm", *(f"norm_{q}" for q in QUANTILE_NAMES), "cos_u", "cos_ones", "cos_u_perp", "dist_to_cu",
    "mean_pairwise_cos", "cov_trace", "relative_dispersion", "effective_rank",
)
SHIFT_METRICS = ("cos_unlearned_base", *(f"cos_unlearned_base_{q}" for q in QUANTILE_NAMES), "norm_ratio")
ROLES = ("forget", "retain", "adjacent", "distant")
LAYER_OF_HOOK = re.compile(r"^blocks\.(\d+)\.")


def reference_directions(control_vector: Any) -> dict[str, torch.Tensor]:
    """Unit vectors u, 1/√d and u⊥ (u minus its all-ones component, normalised), in float64."""
    u = torch.as_tensor(control_vector, dtype=torch.float64).reshape(-1)
    if not torch.isfinite(u).all() or float(u.norm()) == 0:
        raise ValueError("control_vector must be a finite, non-zero vector of length d_model")
    u = u / u.norm()
    ones = torch.full_like(u, 1.0 / u.numel() ** 0.5)
    perp = u - (u @ ones) * ones
    if float(perp.norm()) < 1e-12:
        raise ValueError("control_vector is parallel to the all-ones direction: cos_u_perp is undefined")
    return {"u": u, "ones": ones, "u_perp": perp / perp.norm()}


def effective_rank(h: torch.Tensor) -> float:
    """Roy & Vetterli's effective rank of the token matrix ``h`` ``[n, d]``: exp(entropy of σ / Σσ).

    σ are the singular values of ``h`` itself, not centred: tokens spread over many directions give a
    large value; tokens collapsed onto one point (or one ray) give ~1, whatever their scale.
    """
    if h.shape[0] == 0:
        return float("nan")
    # Gram matrix in float32 (the cost), eigenvalues in float64 (the precision).
    x32 = h.to(torch.float32)
    gram = x32 @ x32.T if h.shape[0] < h.shape[1] else x32.T @ x32
    singular = torch.linalg.eigvalsh(gram.to(torch.float64)).clamp(min=0).sqrt()
    total = singular.sum()
    if float(total) == 0:
        return float("nan")
    p = singular[singular > 0] / total
    return float(torch.exp(-(p * p.log()).sum()))


def token_metrics(h: torch.Tensor, control_vector: Any, coefficient: float) -> dict[str, float]:
    """Every per-model metric of the module docstring for tokens ``h`` ``[n, d]`` (computed in float64)."""
    h = torch.as_tensor(h).to(torch.float64)
    if h.ndim != 2 or h.shape[0] == 0:
        raise ValueError(f"token_metrics needs a non-empty [n_tokens, d_model] matrix, got shape {tuple(h.shape)}")
    directions = reference_directions(control_vector)
    if directions["u"].numel() != h.shape[1]:
        raise ValueError(f"control_vector has {directions['u'].numel()} entries; the activations have d_model={h.shape[1]}")
    norms = h.norm(dim=1)
    safe = norms.clamp(min=1e-30)
    unit = h / safe.unsqueeze(1)
    quantiles = torch.quantile(norms, torch.tensor(QUANTILES, dtype=torch.float64))
    n = h.shape[0]
    summed = unit.sum(0)
    pairwise = float((summed @ summed - (unit * unit).sum()) / (n * (n - 1))) if n > 1 else float("nan")
    centered = h - h.mean(0)
    cov_trace = float((centered * centered).sum() / (n - 1)) if n > 1 else float("nan")
    metrics = {
        "mean_norm": float(norms.mean()),
        **{f"norm_{name}": float(value) for name, value in zip(QUANTILE_NAMES, quantiles)},
        "cos_u": float((unit @ directions["u"]).mean()),
        "cos_ones": float((unit @ directions["ones"]).mean()),
        "cos_u_perp": float((unit @ directions["u_perp"]).mean()),
        "dist_to_cu": float((h - coefficient * directions["u"]).norm(dim=1).mean()),
        "mean_pairwise_cos": pairwise,
        "cov_trace": cov_trace,
        "relative_dispersion": cov_trace / float((norms * norms).mean()),
        "effective_rank": effective_rank(h),
    }
    return metrics


def shift_metrics(base: torch.Tensor, unlearned: torch.Tensor) -> dict[str, float]:
    """Per-token cos(unlearned, base) (mean and quantiles) and the ratio of mean norms, same tokens in both."""
    base = torch.as_tensor(base).to(torch.float64)
    unlearned = torch.as_tensor(unlearned).to(torch.float64)
    if base.shape != unlearned.shape:
        raise ValueError(f"base and unlearned tokens differ in shape {tuple(base.shape)} vs {tuple(unlearned.shape)}")
    cos = torch.nn.functional.cosine_similarity(unlearned, base, dim=1, eps=1e-30)
    quantiles = torch.quantile(cos, torch.tensor(QUANTILES, dtype=torch.float64))
    return {
        "cos_unlearned_base": float(cos.mean()),
        **{f"cos_unlearned_base_{name}": float(value) for name, value in zip(QUANTILE_NAMES, quantiles)},
        "norm_ratio": float(unlearned.norm(dim=1).mean() / base.norm(dim=1).mean()),
    }


def collapse_stats(
    base: Activations,
    unlearned: Activations,
    control_vector: Any,
    coefficient: float,
    hook_names: list[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per hook point: ``{"base": metrics, "unlearned": metrics, "shift": cos/norm-ratio}`` on the statistics tokens.

    ``base`` and ``unlearned`` must come from the same token batch (same mask), so tokens pair up.
    ``control_vector`` is u (normalised here) and ``coefficient`` is c of the dataset's topic.
    """
    if base.reduce is not None or unlearned.reduce is not None:
        raise ValueError("collapse_stats needs per-token activations: collect with reduce=None")
    if base.mask.shape != unlearned.mask.shape or not torch.equal(base.mask, unlearned.mask):
        raise ValueError(
            "base and unlearned activations cover different tokens: collect both from the same TokenBatch "
            "(tokenize once, pass the batch to both models)"
        )
    names = hook_names or [n for n in base.hook_names if n in unlearned.hook_names]
    stats = {}
    for name in names:
        base_tokens, new_tokens = base.tokens(name), unlearned.tokens(name)
        stats[name] = {
            "base": token_metrics(base_tokens, control_vector, coefficient),
            "unlearned": token_metrics(new_tokens, control_vector, coefficient),
            "shift": shift_metrics(base_tokens, new_tokens),
        }
    return stats


def pca_projection(
    points: dict[str, dict[str, np.ndarray]], targets: dict[str, np.ndarray]
) -> dict[str, Any]:
    """2-D PCA of every dataset's base and unlearned tokens together, with each c·u projected into it.

    ``points``: ``{dataset: {"base": [n, d], "unlearned": [n, d]}}``; ``targets``: ``{topic: c·u}``.
    """
    from sklearn.decomposition import PCA

    stacked = np.concatenate([np.asarray(p[m], dtype=np.float64) for p in points.values() for m in ("base", "unlearned")])
    pca = PCA(n_components=2, svd_solver="full").fit(stacked)
    return {
        "explained_variance_ratio": [float(v) for v in pca.explained_variance_ratio_],
        "points": {
            name: {m: np.round(pca.transform(np.asarray(p[m], dtype=np.float64)), 4).tolist() for m in ("base", "unlearned")}
            for name, p in points.items()
        },
        "targets": {topic: [float(v) for v in pca.transform(np.asarray(t, dtype=np.float64).reshape(1, -1))[0]]
                    for topic, t in targets.items()},
    }


def layer_of(hook_name: str) -> int:
    """Block index of a ``blocks.{i}.…`` hook name."""
    match = LAYER_OF_HOOK.match(hook_name)
    if not match:
        raise ValueError(f"{hook_name!r} is not a per-block hook name (blocks.{{i}}.…)")
    return int(match.group(1))


@dataclass
class CollapseAnalysis(JSONResult):
    """Per dataset × layer × model metrics (module docstring), the base→unlearned shift, and a PCA at layer l.

    ``metrics[dataset][model][metric]`` and ``shift[dataset][metric]`` are lists aligned with ``layers``.
    """

    layer: int
    layers: list[int]
    hook_names: list[str]
    steering_coeffs: dict[str, float]
    directions: dict[str, dict[str, float]]
    """Per topic: cos(u, all-ones) and the norm of u⊥ before normalising, to read cos_u against."""
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: dict[str, dict[str, dict[str, list[float]]]] = field(default_factory=dict)
    shift: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    pca: dict[str, Any] | None = None
    tokens: str = "statistics tokens: padding and the first real token of each row excluded"

    FORMAT = COLLAPSE_FORMAT
    WHAT = "a collapse analysis"

    @classmethod
    def empty(
        cls, layer: int, hook_names: list[str], control_vectors: dict[str, Any], steering_coeffs: dict[str, float],
        tokens: str | None = None,
    ) -> CollapseAnalysis:
        """A CollapseAnalysis with no datasets yet (fill with :meth:`add`)."""
        directions = {}
        for topic, vector in control_vectors.items():
            ref = reference_directions(vector)
            cos_ones = float(ref["u"] @ ref["ones"])
            directions[topic] = {"cos_u_ones": cos_ones, "u_perp_norm": float((1 - cos_ones**2) ** 0.5)}
        analysis = cls(layer, [layer_of(n) for n in hook_names], list(hook_names),
                       {t: float(c) for t, c in steering_coeffs.items()}, directions)
        if tokens:
            analysis.tokens = tokens
        return analysis

    def add(self, name: str, role: str, topic: str, stats: dict[str, dict[str, Any]], info: dict[str, Any] | None = None) -> None:
        """Record one dataset's :func:`collapse_stats` (``role`` in forget/retain/adjacent/distant)."""
        if role not in ROLES:
            raise ValueError(f"dataset {name!r}: role={role!r}; choose one of {ROLES}")
        missing = [h for h in self.hook_names if h not in stats]
        if missing:
            raise ValueError(f"dataset {name!r}: statistics lack hook points {missing}")
        self.datasets[name] = {"role": role, "topic": topic, **(info or {})}
        self.metrics[name] = {
            model: {m: [stats[h][model][m] for h in self.hook_names] for m in MODEL_METRICS} for model in ("base", "unlearned")
        }
        self.shift[name] = {m: [stats[h]["shift"][m] for h in self.hook_names] for m in SHIFT_METRICS}

    # -- reading --------------------------------------------------------------------------

    def index(self, layer: int | None = None) -> int:
        layer = self.layer if layer is None else layer
        if layer not in self.layers:
            raise ValueError(f"layer {layer} was not analysed; layers: {self.layers}")
        return self.layers.index(layer)

    def value(self, dataset: str, metric: str, model: str = "unlearned", layer: int | None = None) -> float:
        """One number: ``metric`` of ``dataset`` at ``layer`` (default l); shift metrics ignore ``model``."""
        if dataset not in self.datasets:
            raise KeyError(f"No dataset {dataset!r}; datasets: {list(self.datasets)}")
        i = self.index(layer)
        if metric in SHIFT_METRICS:
            return self.shift[dataset][metric][i]
        if metric not in MODEL_METRICS:
            raise KeyError(f"Unknown metric {metric!r}; per model: {MODEL_METRICS}; shift: {SHIFT_METRICS}")
        return self.metrics[dataset][model][metric][i]

    def by_role(self, role: str) -> list[str]:
        return [name for name, info in self.datasets.items() if info["role"] == role]

    # -- figures ----------------------------------------------------------------------------

    def figures(self) -> dict[str, Any]:
        """``norms``, ``cos_u``, ``pca`` (when a PCA was taken) and ``dispersion`` (rmu_lens.plots.representations)."""
        from rmu_lens.plots.representations import plot_cos_u, plot_dispersion, plot_norms, plot_pca

        figures = {"norms": plot_norms(self), "cos_u": plot_cos_u(self)}
        if self.pca is not None:
            figures["pca"] = plot_pca(self)
        figures["dispersion"] = plot_dispersion(self)
        return figures

    def captions(self) -> dict[str, str]:
        return {
            "norms": f"Mean token norm per layer, base model dashed and unlearned solid: RMU pushes the forget sets "
                     f"toward c at layer {self.layer}, while the other datasets should keep their norms.",
            "cos_u": "Cosine of each dataset's tokens with the control vector u and with u⊥ (u minus its all-ones part, "
                     "since cos(u, 1) ≈ 0.87): alignment with u⊥ is what shows activations really turned toward u.",
            "pca": f"Tokens at layer {self.layer} on the first two principal components of both models together: after "
                   f"RMU the forget tokens move toward c·u (star), away from the other datasets.",
            "dispersion": "Dispersion of each dataset's tokens per layer: a collapse of the forget set to one point shows "
                          "as pairwise cosine toward 1 and dispersion and effective rank falling.",
        }

    # -- files ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": COLLAPSE_FORMAT,
            "layer": self.layer,
            "layers": self.layers,
            "hook_names": self.hook_names,
            "tokens": self.tokens,
            "steering_coeffs": self.steering_coeffs,
            "directions": self.directions,
            "datasets": self.datasets,
            "metrics": self.metrics,
            "shift": self.shift,
            "pca": self.pca,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CollapseAnalysis:
        cls.check_format(data)
        return cls(
            layer=data["layer"], layers=data["layers"], hook_names=data["hook_names"],
            steering_coeffs=data["steering_coeffs"], directions=data["directions"], datasets=data["datasets"],
            metrics=data["metrics"], shift=data["shift"], pca=data.get("pca"), tokens=data["tokens"],
        )


@register_analyzer("collapse", result=CollapseAnalysis)
class CollapseAnalyzer(Analyzer):
    """:func:`collapse_stats` per dataset, and a PCA at layer l of ``config.pca_points`` tokens per dataset."""

    def __init__(self, inputs: Any) -> None:
        super().__init__(inputs)
        self.analysis = CollapseAnalysis.empty(inputs.layer, inputs.hook_names, inputs.control_vectors,
                                               dict(inputs.steering_coeffs))
        self.rng = np.random.default_rng(inputs.config.seed)
        self.pca_tokens: dict[str, dict[str, np.ndarray]] = {}

    def observe(self, dataset: DatasetInfo, base: Activations, unlearned: Activations) -> None:
        inputs = self.inputs
        stats = collapse_stats(base, unlearned, inputs.control_vectors[dataset.topic],
                               float(inputs.steering_coeffs[dataset.topic]), inputs.hook_names)
        self.analysis.add(dataset.name, dataset.role, dataset.topic, stats,
                          {"n_sequences": base.n_sequences, "n_tokens": base.n_tokens})
        base_tokens, new_tokens = base.tokens(inputs.layer_hook), unlearned.tokens(inputs.layer_hook)
        size = min(inputs.config.pca_points, len(base_tokens))
        pick = np.sort(self.rng.choice(len(base_tokens), size=size, replace=False))
        self.pca_tokens[dataset.name] = {"base": base_tokens[pick].numpy(), "unlearned": new_tokens[pick].numpy()}

    def finish(self) -> CollapseAnalysis:
        inputs = self.inputs
        targets = {t: (float(inputs.steering_coeffs[t]) * u).numpy() for t, u in inputs.control_vectors.items()}
        self.analysis.pca = {"layer": inputs.layer, "hook": inputs.layer_hook,
                             "points_per_dataset": inputs.config.pca_points, **pca_projection(self.pca_tokens, targets)}
        return self.analysis
