"""Recover what RMU did from two models alone: the steered layer l̂, the direction û, the scale ĉ.

    est = recover(base, unlearned, {"virology": virology_texts}, retain_texts)
    est.topics["virology"].layer, .direction, .scale, .collapsed      # l̂, û, ĉ, the verdict
    est.weights.changed                                                # tensors that differ
    est.check(run.control_vectors, run.steering_coeffs, layer)         # cos(û, u), ĉ / c, l̂ == l
    est.figures()                                                      # the curves with the rule; the weight diff
    est.save("out/"); Recovery.load("out/")                            # out/recovery.json

Per layer k (``blocks.k.hook_resid_post``), on the statistics tokens of the same token batch run
through both models (see activations.py):

* change  r(k) = mean ‖h_u − h_b‖ / mean ‖h_b‖, for the forget set and for the retain set;
* concentration of the unlearned forget tokens H (rows h): the top right singular vector v of the
  uncentred H, sign chosen so that the mean projection is positive; ``mean_cos`` = mean cos(h, v)
  and ``share`` = σ₁² / Σσᵢ² (the first component's share of Σ‖h‖²); the same for the base.

**Collapsed layers.** Layer k shows an RMU-like collapse when the forget set moved
(r_f ≥ ``min_change``), the retain set did not move as much (r_f ≥ ``selectivity`` · r_r), and the
unlearned forget tokens point one way (mean_cos ≥ ``min_concentration``) more than the base ones did
(1 − share at most ``max_residual_ratio`` × the base's). **l̂** is the first collapsed layer — except that RMU reads layer l and trains
nothing after it, so when the weight diff shows the last changed block L collapsed too (the
collapse already shows in an earlier trained block, because the residual stream carries it on), l̂ = L.
No collapsed layer: ``collapsed=False`` with the measures, and no direction is made up (û = None).

**û** = v at l̂; **ĉ** = the median of h·û over the forget tokens at l̂ aligned with û
(cos ≥ ``ALIGNED_COS`` = 0.95; the mean over all tokens when fewer than a tenth are): RMU pulls each
token to c·u, the tokens it reached sit at c, and a short run leaves others short of it, which would
pull a plain mean below c. ``mean_projection`` and ``mean_norm`` are reported beside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rmu_lens.analysis.activations import collect_activations, resid_post_hooks, statistics_batch
from rmu_lens.analysis.weights import WeightDiff, check_same_architecture, weight_diff
from rmu_lens.errors import RMULensError
from rmu_lens.results import JSONResult
from rmu_lens.rmu.batches import TokenBatch

RECOVERY_FORMAT = "rmu_lens.recovery.v1"
RECOVERY_FILE = "recovery.json"
ALIGNED_COS = 0.95
"""Tokens with cos(h, û) at least this are the ones RMU moved onto its target; ĉ is their median projection."""

__all__ = ["CollapseRule", "NoCollapseError", "Recovery", "TopicEstimate", "direction_of", "recover"]


class NoCollapseError(RMULensError, ValueError):
    """No forget topic shows an RMU collapse, so there is no direction to read the analysis against."""


@dataclass(frozen=True)
class CollapseRule:
    """Thresholds of the collapsed-layer rule (module docstring); each declared once, saved with the result."""

    min_change: float = 0.5
    """Forget tokens moved by at least half their base norm on average."""
    selectivity: float = 5.0
    """...and at least 5x as much as the retain tokens (RMU keeps the retain set in place)."""
    min_concentration: float = 0.8
    """Mean cos(h, û) of the unlearned forget tokens: they point one way (the embedded default's 40-step
    demo run reaches 0.86-0.92 at l, its base 0.56-0.66; the testbed 0.93 against 0.24)."""
    max_residual_ratio: float = 0.5
    """...more than the base forget tokens did: the energy off the first component, 1 − share, is at most
    half the base's (uncentred tokens of any model already share a large common direction)."""

    def to_dict(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in ("min_change", "selectivity", "min_concentration", "max_residual_ratio")}


def direction_of(tokens: torch.Tensor) -> tuple[np.ndarray, float, float]:
    """(v, mean cos(h, v), σ₁²/Σσ²) of token rows ``[n, d]``: the top right singular vector, mean projection > 0.

    Computed in float64.
    """
    h = tokens.to(torch.float64)
    _, s, vh = torch.linalg.svd(h, full_matrices=False)
    v = vh[0]
    if float((h @ v).mean()) < 0:
        v = -v
    norms = h.norm(dim=1).clamp(min=1e-30)
    mean_cos = float(((h @ v) / norms).mean())
    share = float(s[0] ** 2 / (s ** 2).sum()) if float((s ** 2).sum()) > 0 else 0.0
    return v.numpy(), mean_cos, share


@dataclass
class TopicEstimate:
    """l̂, û, ĉ of one forget topic, the verdict, and the per-layer curves they come from."""

    topic: str
    collapsed: bool
    layer: int | None
    direction: np.ndarray | None
    scale: float | None
    mean_norm: float | None
    concentration: dict[str, float]
    """At l̂ (or, when nothing collapsed, at the layer where the forget set moved most): mean_cos, share, base values."""
    curves: dict[str, list[float]]
    """Per layer (``Recovery.layers``): forget_change, retain_change, mean_cos, share, base_mean_cos, base_share."""
    collapsed_layers: list[int] = field(default_factory=list)
    reason: str = ""
    top_direction: np.ndarray | None = None
    """The first component at ``concentration["layer"]`` whether or not anything collapsed: a reference
    axis for the figures when there is no û, never presented as a control vector."""

    def to_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "collapsed": self.collapsed, "layer": self.layer,
                "direction": None if self.direction is None else [float(x) for x in self.direction],
                "scale": self.scale, "mean_norm": self.mean_norm, "concentration": self.concentration,
                "curves": self.curves, "collapsed_layers": self.collapsed_layers, "reason": self.reason,
                "top_direction": None if self.top_direction is None else [float(x) for x in self.top_direction]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TopicEstimate:
        direction = data.get("direction")
        return cls(data["topic"], bool(data["collapsed"]), data.get("layer"),
                   None if direction is None else np.asarray(direction, dtype=np.float64), data.get("scale"),
                   data.get("mean_norm"), dict(data.get("concentration", {})), dict(data.get("curves", {})),
                   list(data.get("collapsed_layers", [])), data.get("reason", ""),
                   None if data.get("top_direction") is None else np.asarray(data["top_direction"], dtype=np.float64))


@dataclass
class Recovery(JSONResult):
    """Estimates for every forget topic, the weight diff, the layers measured and the rule used.

    A :class:`rmu_lens.results.Result`: ``save(directory)`` writes ``recovery.json``, ``load`` reads
    the directory or the file, ``figures()`` draws the per-layer curves and the weight diff.
    """

    topics: dict[str, TopicEstimate]
    weights: WeightDiff | None
    layers: list[int]
    rule: CollapseRule = field(default_factory=CollapseRule)
    meta: dict[str, Any] = field(default_factory=dict)

    FORMAT = RECOVERY_FORMAT
    WHAT = "an rmu_lens recovery"
    FILE_NAME = RECOVERY_FILE

    @property
    def nothing_changed(self) -> bool:
        """True when the weight diff found every tensor identical."""
        return self.weights is not None and self.weights.identical

    @property
    def collapsed(self) -> bool:
        return any(t.collapsed for t in self.topics.values())

    def check(self, control_vectors: Mapping[str, Any], steering_coeffs: Mapping[str, float], layer: int) -> dict[str, dict[str, Any]]:
        """Estimate against the truth, per topic: l̂ == l, cos(û, u), ĉ / c (None where not collapsed)."""
        out = {}
        for topic, est in self.topics.items():
            if topic not in control_vectors:
                continue
            u = torch.as_tensor(control_vectors[topic], dtype=torch.float64).reshape(-1).numpy()
            c = float(steering_coeffs[topic])
            row: dict[str, Any] = {"layer": int(layer), "layer_hat": est.layer, "layer_match": est.layer == int(layer),
                                   "c": c, "c_hat": est.scale, "cos_u": None, "c_ratio": None}
            if est.direction is not None:
                row["cos_u"] = float(np.dot(est.direction, u) / (np.linalg.norm(est.direction) * np.linalg.norm(u)))
                row["c_ratio"] = float(est.scale / c) if c else None
            out[topic] = row
        return out

    def control_inputs(self, fallback: bool = False) -> dict[str, Any]:
        """control_vectors / steering_coeffs / layer for :func:`rmu_lens.analysis.analyze` from the estimates.

        Collapsed topics give û, ĉ and l̂. Without ``fallback`` a topic that did not collapse raises
        :class:`NoCollapseError`; with it, that topic is read against its ``top_direction`` and mean
        projection at the layer where its forget set moved most, and the analysis must say so (``verdicts``).
        """
        bad = [t for t, e in self.topics.items() if not e.collapsed]
        if bad and not fallback:
            raise NoCollapseError(
                "no RMU collapse for " + "; ".join(f"{t}: {self.topics[t].reason}" for t in bad)
                + ": there is no direction to read against"
            )
        vectors, coeffs, layers = {}, {}, []
        for t, e in self.topics.items():
            if e.collapsed:
                vectors[t], coeffs[t] = torch.as_tensor(e.direction, dtype=torch.float32), float(e.scale)
                layers.append(int(e.layer))
            else:
                at = int(e.concentration["layer"])
                i = self.layers.index(at)
                vectors[t] = torch.as_tensor(e.top_direction, dtype=torch.float32)
                coeffs[t] = float(e.curves["mean_projection"][i])
                layers.append(at)
        return {"control_vectors": vectors, "steering_coeffs": coeffs, "layer": layers[0]}

    def verdicts(self) -> dict[str, str]:
        """One line per topic (and "nothing changed" when every tensor is identical), for reports."""
        out = {"weights": self.weights.summary().splitlines()[0] if self.weights is not None else "not compared"}
        for t, e in self.topics.items():
            out[t] = (f"collapsed at layer {e.layer}, ĉ = {e.scale:.4g}, mean cos(h, û) {e.concentration['mean_cos']:.3f} "
                      f"(base {e.concentration['base_mean_cos']:.3f})" if e.collapsed else f"not collapsed: {e.reason}")
        return out

    def summary(self) -> str:
        lines = []
        if self.weights is not None:
            lines.append(self.weights.summary())
        for topic, e in self.topics.items():
            if e.collapsed:
                lines.append(f"{topic}: collapsed at layer {e.layer}: ĉ = {e.scale:.4g} (mean norm {e.mean_norm:.4g}), "
                             f"mean cos(h, û) {e.concentration['mean_cos']:.3f} (base {e.concentration['base_mean_cos']:.3f}), "
                             f"first-component share {e.concentration['share']:.3f}")
            else:
                lines.append(f"{topic}: not collapsed ({e.reason})")
        return "\n".join(lines)

    def figures(self) -> dict[str, Any]:
        """``recovery_curves`` (per topic: the curves, the rule, the collapsed layers, l̂) and ``weight_diff``
        (rmu_lens.plots.recovery)."""
        from rmu_lens.plots.recovery import recovery_figure, weight_diff_figure

        figures = {"recovery_curves": recovery_figure(self)}
        if self.weights is not None:
            figures["weight_diff"] = weight_diff_figure(self.weights)
        return figures

    def captions(self) -> dict[str, str]:
        if self.nothing_changed:
            return {"recovery_curves": "Nothing changed: every tensor of the two models is identical, so no layer, "
                                       "direction or scale can be read off.",
                    "weight_diff": "Nothing changed: every tensor of the two models is identical."}
        return {
            "recovery_curves": "Per forget topic and layer: how far the forget and retain tokens moved, how much the "
                               "unlearned forget tokens point one way against the base's, and the energy off that "
                               "direction, each with the rule's threshold; shaded layers meet every test, the vertical "
                               "line is the estimated l̂ (no line: not collapsed, no û).",
            "weight_diff": "Changed tensors per block and the largest relative change ‖Δ‖/‖W‖ per module: RMU trains "
                           "a few blocks up to layer l and nothing after it.",
        }

    def to_dict(self) -> dict[str, Any]:
        return {"format": RECOVERY_FORMAT, "layers": self.layers, "rule": self.rule.to_dict(), "meta": self.meta,
                "nothing_changed": self.nothing_changed,
                "topics": {t: e.to_dict() for t, e in self.topics.items()},
                "weights": None if self.weights is None else self.weights.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recovery:
        cls.check_format(data)
        return cls({t: TopicEstimate.from_dict(e) for t, e in data["topics"].items()},
                   WeightDiff.from_dict(data["weights"]) if data.get("weights") else None,
                   list(data["layers"]), CollapseRule(**data.get("rule", {})), dict(data.get("meta", {})))


def _change(base_tokens: torch.Tensor, new_tokens: torch.Tensor) -> float:
    b, n = base_tokens.to(torch.float64), new_tokens.to(torch.float64)
    return float((n - b).norm(dim=1).mean() / b.norm(dim=1).mean().clamp(min=1e-30))


def _check_models(base: Any, unlearned: Any) -> None:
    base_hf, new_hf = getattr(base, "original_model", base), getattr(unlearned, "original_model", unlearned)
    from rmu_lens.analysis.weights import _label

    check_same_architecture(base_hf.config.to_dict(), new_hf.config.to_dict(), _label(base), _label(unlearned))
    from rmu_lens.models import tokenizer_of

    vocab_a, vocab_b = tokenizer_of(base).get_vocab(), tokenizer_of(unlearned).get_vocab()
    if vocab_a != vocab_b:
        from rmu_lens.analysis.weights import ModelMismatchError

        raise ModelMismatchError(
            f"base model {_label(base)} and unlearned model {_label(unlearned)} have different tokenizer vocabularies "
            f"({len(vocab_a)} vs {len(vocab_b)} entries): their tokens would not align"
        )


def recover(
    base_model: Any,
    unlearned_model: Any,
    forget: Mapping[str, Any] | Any,
    retain: Any,
    *,
    weights: WeightDiff | tuple[Any, Any] | None = None,
    layers: Sequence[int] | None = None,
    rule: CollapseRule | None = None,
    max_texts: int | None = 32,
    max_length: int = 128,
    batch_size: int = 8,
    retain_acts: Any = None,
    base_cache: dict[str, Any] | None = None,
    progress: bool = True,
) -> Recovery:
    """Estimate l̂, û, ĉ per forget topic and the changed tensors from ``base_model`` and ``unlearned_model``.

    ``forget``: ``{topic: texts | Corpus | TokenBatch}`` (or one text list, topic "forget");
    ``retain``: texts, a Corpus or a TokenBatch. ``weights``: a ready :class:`WeightDiff`, or a pair of
    sources for :func:`weight_diff` (e.g. the two model folders, read shard by shard); default: the
    two loaded models. ``base_cache`` (a dict kept by the caller) holds the base model's activations
    across calls, so several unlearned models are compared with one base pass.
    Raises :class:`~rmu_lens.analysis.weights.ModelMismatchError` for models of different architectures
    or vocabularies.
    """
    from rmu_lens.models import tokenizer_of

    rule = rule or CollapseRule()
    _check_models(base_model, unlearned_model)
    if isinstance(weights, tuple):
        weights = weight_diff(*weights)
    elif weights is None:
        weights = weight_diff(base_model, unlearned_model)
    if not isinstance(forget, Mapping):
        forget = {"forget": forget}
    if not forget:
        raise ValueError("forget is empty: pass {topic: texts} for at least one forget topic")
    hooks = resid_post_hooks(base_model, layers)
    layer_ids = [int(h.split(".")[1]) for h in hooks]
    tokenizer = tokenizer_of(base_model)
    collect = dict(batch_size=batch_size, progress=progress)
    cache = base_cache if base_cache is not None else {}

    def base_tokens(key: str, batch: TokenBatch) -> dict[str, torch.Tensor]:
        if key not in cache:
            with collect_activations(base_model, batch, hooks, **collect) as acts:
                cache[key] = {h: acts.tokens(h) for h in hooks}
        return cache[key]

    retain_batch = statistics_batch(retain, tokenizer, max_texts, max_length, "retain")
    retain_base = base_tokens("retain", retain_batch)
    with collect_activations(unlearned_model, retain_batch, hooks, **collect) as acts:
        retain_change = [_change(retain_base[h], acts.tokens(h)) for h in hooks]

    last_changed = weights.last_changed_block if weights is not None else None
    topics = {}
    for topic, data in forget.items():
        batch = statistics_batch(data, tokenizer, max_texts, max_length, f"forget[{topic!r}]")
        fb = base_tokens(f"forget:{topic}", batch)
        with collect_activations(unlearned_model, batch, hooks, **collect) as acts:
            fu = {h: acts.tokens(h) for h in hooks}
        curves: dict[str, list[float]] = {k: [] for k in ("forget_change", "retain_change", "mean_cos", "share",
                                                          "base_mean_cos", "base_share", "mean_projection", "scale", "mean_norm")}
        directions = []
        for i, h in enumerate(hooks):
            v, mean_cos, share = direction_of(fu[h])
            _, base_cos, base_share = direction_of(fb[h])
            tokens64 = fu[h].to(torch.float64)
            projection = tokens64 @ torch.from_numpy(v)
            aligned = projection / tokens64.norm(dim=1).clamp(min=1e-30) >= ALIGNED_COS
            # RMU pulls each forget token to c·u: the tokens it reached sit at c, the ones it did not
            # (short runs) would pull a plain mean below c, so the median over the aligned tokens is read.
            scale_value = float(projection[aligned].median()) if int(aligned.sum()) >= max(3, len(projection) // 10) \
                else float(projection.mean())
            curves["forget_change"].append(_change(fb[h], fu[h]))
            curves["retain_change"].append(retain_change[i])
            curves["mean_cos"].append(mean_cos)
            curves["share"].append(share)
            curves["base_mean_cos"].append(base_cos)
            curves["base_share"].append(base_share)
            curves["mean_projection"].append(float(projection.mean()))
            curves["scale"].append(scale_value)
            curves["mean_norm"].append(float(fu[h].to(torch.float64).norm(dim=1).mean()))
            directions.append(v)
        collapsed_at = [
            layer_ids[i] for i in range(len(hooks))
            if curves["forget_change"][i] >= rule.min_change
            and curves["forget_change"][i] >= rule.selectivity * curves["retain_change"][i]
            and curves["mean_cos"][i] >= rule.min_concentration
            and 1 - curves["share"][i] <= rule.max_residual_ratio * (1 - curves["base_share"][i])
        ]
        if collapsed_at:
            layer = last_changed if last_changed is not None and last_changed in collapsed_at and last_changed > collapsed_at[0] \
                else collapsed_at[0]
            i = layer_ids.index(layer)
            reason = (f"layer {layer}: forget moved {curves['forget_change'][i]:.3g} of its norm "
                      f"(retain {curves['retain_change'][i]:.3g}), mean cos(h, û) {curves['mean_cos'][i]:.3f} "
                      f"(base {curves['base_mean_cos'][i]:.3f}), share {curves['share'][i]:.3f} (base {curves['base_share'][i]:.3f})")
            direction, scale, norm = directions[i], curves["scale"][i], curves["mean_norm"][i]
        else:
            i = int(np.argmax(curves["forget_change"]))
            layer, direction, scale, norm = None, None, None, None
            reason = ("nothing changed: every tensor is identical" if weights is not None and weights.identical else
                      f"no layer meets the rule; where the forget set moved most (layer {layer_ids[i]}): moved "
                      f"{curves['forget_change'][i]:.3g} of its norm (retain {curves['retain_change'][i]:.3g}), "
                      f"mean cos(h, û) {curves['mean_cos'][i]:.3f} (base {curves['base_mean_cos'][i]:.3f}), "
                      f"share {curves['share'][i]:.3f} (base {curves['base_share'][i]:.3f})")
        concentration = {"layer": layer_ids[i], "mean_cos": curves["mean_cos"][i], "share": curves["share"][i],
                         "base_mean_cos": curves["base_mean_cos"][i], "base_share": curves["base_share"][i],
                         "forget_change": curves["forget_change"][i], "retain_change": curves["retain_change"][i]}
        topics[str(topic)] = TopicEstimate(str(topic), bool(collapsed_at), layer, direction, scale, norm, concentration,
                                           curves, collapsed_at, reason, directions[i])
    from rmu_lens.analysis.weights import _label

    meta = {"base_model": _label(base_model), "unlearned_model": _label(unlearned_model), "max_texts": max_texts,
            "max_length": max_length, "last_changed_block": last_changed,
            "tokens": "statistics tokens (padding and each row's first token excluded), one batch shared by both models"}
    return Recovery(topics, weights, layer_ids, rule, meta)
