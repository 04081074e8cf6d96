"""RMUConfig: every setting of an RMU run, serialisable to JSON so a run directory reproduces itself."""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass
from typing import Any

from rmu_lens.flags import setting

OPTIMIZERS = ("legacy_adamw", "adamw")
MASTER_WEIGHTS = (None, "float32")
MIN_TOKENS = 2
"""Smallest token limit: each row's first token is excluded from the metrics, so one more is needed."""


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class RMUConfig:
    """Settings of one RMU run. Defaults are the published Zephyr-7B setting (WMDP paper, official code).

    Per-topic settings (``steering_coeff``, ``alpha``, ``max_length``) take one value for every
    forget topic or a list with one value per topic, in topic order. Each field's ``help`` metadata
    is its description, shown by ``rmu-lens unlearn --help`` and ``%rmu_unlearn?`` (rmu_lens.flags).
    """

    layer: int = setting(7, "layer l whose output activations RMU steers (blocks.{layer}.hook_resid_post)")
    update_layers: list[int] | None = setting(None, "layers whose parameters are trained [default: layer-2 .. layer]")
    param_names: list[str] = setting(
        ["blocks.{layer}.mlp.out.weight"],
        "trained tensors by bridge name (blocks.5.mlp.out.weight) or HF name (model.layers.5.mlp.down_proj.weight); "
        "{layer} expands to each update layer; glob patterns allowed",
    )
    experts: list[int] | None = setting(
        None, "mixture-of-experts models: train only these experts of the selected expert tensors (the other experts' "
        "gradients are zeroed, so they stay bit-identical; needs weight_decay 0) [default: all experts]",
    )
    hook_point: str | None = setting(
        None, "hook point the losses read [default: blocks.{layer}.hook_resid_post, what the official code hooks]"
    )
    steering_coeff: float | list[float] = setting(
        6.5, "c: forget activations are pushed to c·u (u a unit random vector per topic); one value or one per topic"
    )
    alpha: float | list[float] = setting(1200.0, "weight of the retain loss; one value or one per topic")
    adaptive_beta: float | None = setting(
        None, "Adaptive RMU: when set, c of each topic = BETA x mean token norm of the frozen activations on the "
        "topic's first forget batch (position 0 and pads excluded); steering_coeff is then ignored (paper: 5)",
        flag="--adaptive", metavar="BETA",
    )
    lr: float = setting(5e-5, "learning rate")
    batch_size: int = setting(4, "texts per batch")
    max_batches: int = setting(
        150, "total optimisation steps (topics alternate step by step), capped by the data as officially unless cycle"
    )
    max_length: int | list[int] = setting(
        512, "forget-text token limit (right truncation); one value or one per topic"
    )
    retain_max_length: int = setting(512, "retain-text token limit")
    cycle: bool = setting(False, "cycle through the batches so runs can be longer than the corpora "
                                 "(official: stop at the shortest)")
    seed: int = setting(42, "seed of the control vectors' torch.rand draw")
    reference: bool = setting(
        False, "reproduce the official code where it matters: left padding with EOS, positions 0..T-1 on every row, "
        "losses averaged over every position including pads, legacy AdamW",
    )
    optimizer: str = setting(
        "legacy_adamw", "legacy_adamw (transformers 4.x AdamW, as the official code) or adamw (torch.optim.AdamW)",
        choices=OPTIMIZERS,
    )
    adam_eps: float = setting(1e-6, "optimizer eps")
    weight_decay: float = setting(0.0, "optimizer weight decay")
    master_weights: str | None = setting(
        None, "float32: the optimizer steps float32 master copies of trained tensors held in bf16/fp16 and writes them "
        "back rounded, so updates below bf16's spacing accumulate instead of vanishing (docs/devices.md); no effect "
        "on float32 tensors [default: none, train in the model's dtype as the official code does]",
        choices=tuple(m for m in MASTER_WEIGHTS if m is not None),
    )
    checkpoint_every: int = setting(50, "steps between checkpoints in the run directory (0: only at the end / on interruption)")
    metrics_every: int = setting(
        1, "steps between the frozen forget passes that the cosine metric needs (the official --verbose log)"
    )

    def __post_init__(self) -> None:
        if self.update_layers is None:
            self.update_layers = list(range(max(0, self.layer - 2), self.layer + 1))
        self.update_layers = [int(i) for i in self.update_layers]
        if isinstance(self.param_names, str):
            self.param_names = [self.param_names]
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming every setting that cannot work.

        Numbers must be finite (NaN or inf would train nothing and cannot be written to run.json);
        token limits must leave at least one token after each row's first, because the first token
        is left out of the metrics and of adaptive RMU's norm (docs/rmu.md).
        """
        problems = []
        numbers = ("layer", "lr", "batch_size", "max_batches", "retain_max_length", "adam_eps", "weight_decay",
                   "checkpoint_every", "metrics_every", "seed", "adaptive_beta", "steering_coeff", "alpha", "max_length")
        for name in numbers:
            value = getattr(self, name)
            values = value if isinstance(value, list) else [value]
            if value is None and name == "adaptive_beta":
                continue
            if not values or not all(_is_finite_number(v) for v in values):
                problems.append(f"{name}={value!r} must be a finite number")
        if problems:  # the comparisons below need numbers
            raise ValueError("Invalid RMUConfig: " + "; ".join(problems))
        if self.layer < 0:
            problems.append(f"layer={self.layer} must be >= 0")
        if not self.update_layers:
            problems.append("update_layers is empty: name at least one layer to train")
        elif max(self.update_layers) > self.layer or min(self.update_layers) < 0:
            problems.append(
                f"update_layers={self.update_layers} must lie in 0..layer={self.layer}: parameters after "
                f"layer l cannot change the activations RMU reads"
            )
        for name in ("lr", "batch_size", "max_batches", "adam_eps"):
            if getattr(self, name) <= 0:
                problems.append(f"{name}={getattr(self, name)} must be > 0")
        if self.weight_decay < 0:
            problems.append(f"weight_decay={self.weight_decay} must be >= 0")
        if self.adaptive_beta is not None and self.adaptive_beta <= 0:
            problems.append(f"adaptive_beta={self.adaptive_beta} must be > 0")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer={self.optimizer!r}; choose one of {OPTIMIZERS}")
        if self.reference and self.optimizer != "legacy_adamw":
            problems.append("reference=True trains with the official optimizer: set optimizer='legacy_adamw'")
        if self.experts is not None and (not self.experts or self.weight_decay != 0):
            problems.append(
                f"experts={self.experts} needs a non-empty list and weight_decay=0 (decay would move the other experts)"
            )
        if self.master_weights not in MASTER_WEIGHTS:
            problems.append(f"master_weights={self.master_weights!r}; choose one of {MASTER_WEIGHTS}")
        elif self.reference and self.master_weights is not None:
            problems.append("reference=True trains in the model's dtype as the official code does: set master_weights=None")
        if self.checkpoint_every < 0 or self.metrics_every < 1:
            problems.append("checkpoint_every must be >= 0 and metrics_every >= 1")
        for name in ("steering_coeff", "alpha"):
            values = getattr(self, name)
            if any(v <= 0 for v in (values if isinstance(values, list) else [values])):
                problems.append(f"{name}={values} must be positive")
        for name in ("max_length", "retain_max_length"):
            values = getattr(self, name)
            if any(v < MIN_TOKENS for v in (values if isinstance(values, list) else [values])):
                problems.append(
                    f"{name}={values} leaves no token to measure: the first token of each text is left out "
                    f"of the metrics and the adaptive norm; use {MIN_TOKENS} or more (the official code uses 512)"
                )
        if problems:
            raise ValueError("Invalid RMUConfig: " + "; ".join(problems))

    @property
    def read_hook(self) -> str:
        """The hook point the losses read."""
        return self.hook_point or f"blocks.{self.layer}.hook_resid_post"

    def per_topic(self, name: str, n_topics: int) -> list:
        """A per-topic setting expanded to one value per topic."""
        value = getattr(self, name)
        if not isinstance(value, list):
            return [value] * n_topics
        if len(value) != n_topics:
            raise ValueError(f"{name} has {len(value)} values but there are {n_topics} forget topics: give one value or one per topic")
        return list(value)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RMUConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown RMUConfig fields {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> RMUConfig:
        return cls.from_dict(json.loads(text))

    @classmethod
    def profile(cls, name: str, **overrides: Any) -> RMUConfig:
        """A named preset (see ``PROFILES``) with optional overrides.

        Overriding ``layer`` alone moves a preset's ``update_layers`` with it, keeping their offsets from
        the preset's layer (clipped at 0): ``profile("demo", layer=9)`` trains 8-9 as the demo trains 4-5.
        """
        if name not in PROFILES:
            raise ValueError(f"Unknown profile {name!r}; choose one of {sorted(PROFILES)}")
        preset = dict(PROFILES[name])
        if "layer" in overrides and "update_layers" not in overrides and "update_layers" in preset:
            shift = int(overrides["layer"]) - int(preset["layer"])
            preset["update_layers"] = sorted({max(0, i + shift) for i in preset["update_layers"]})
        return cls.from_dict({**preset, **overrides})


PROFILES: dict[str, dict[str, Any]] = {
    # The published Zephyr-7B setting (WMDP paper, official code): the dataclass defaults.
    "zephyr": {},
    # Yi-34B as published: layer 15, update 13-15, c 300, alpha 350, 400 batches of 2.
    "yi-34b": {"layer": 15, "steering_coeff": 300.0, "alpha": 350.0, "batch_size": 2, "max_batches": 400},
    # Mixtral-8x7B as published: layer 7, update 5-7, c 300, alpha 1600. The default tensors are every
    # expert's down projection; the official code's param_ids 7 trained expert 0's w3 only (docs/rmu.md).
    "mixtral-8x7b": {"layer": 7, "steering_coeff": 300.0, "alpha": 1600.0},
    # The embedded default (SmolLM2-135M) on a CPU in a few minutes: the Pareto-front point of a 24-trial
    # sweep on the question sets' dev halves (docs/rmu.md, "The demo profile"). Its token norms are ~40x
    # Zephyr's, so c comes from the adaptive rule (5.35 x the frozen norm at layer 5); a 135M model with
    # large down_proj weights needs a large lr, and alpha ~500 holds the retain activations in place.
    "demo": {
        "layer": 5, "update_layers": [4, 5], "adaptive_beta": 5.35, "alpha": 496.0, "lr": 0.0232, "max_batches": 60,
        "max_length": 128, "retain_max_length": 128, "cycle": True,
    },
}
