"""Probe audit: how much of the base model's linear decodability of the forget answers survives unlearning.

At each layer's ``hook_resid_post``, at the last context token of each forget question (the position
whose next-token prediction the evaluator scores), cross-validated linear probes
(:func:`rmu_lens.analysis.probes.probe_layers`) pick the answer among the question's own choices:

* ``base``: trained and tested on the base model;
* ``unlearned``: retrained and tested on the unlearned model (is the answer still there, anywhere?);
* ``transfer``: trained on base, tested on unlearned (does the old read-out still work?).

The surviving share at a layer is ``(acc_unlearned - chance) / (acc_base - chance)``: 1 when the
unlearned activations decode the answers as well as the base ones, 0 at chance. It is undefined
(NaN) where the base probe itself is not above chance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MIN_ABOVE_CHANCE = 0.05
"""A layer whose base probe is less than this above chance has no decodability to lose."""


def _share(acc: float, base: float, chance: float) -> float:
    above = base - chance
    return (acc - chance) / above if above >= MIN_ABOVE_CHANCE else float("nan")


@dataclass
class ProbeAuditResult:
    """Per layer: probe accuracy on the forget answers (base, unlearned, transfer) and the surviving share."""

    layers: list[int]
    hook_names: list[str]
    base_acc: list[float]
    unlearned_acc: list[float]
    transfer_acc: list[float]
    chance: float
    n_questions: int
    analysis: dict[str, Any] = field(default_factory=dict)
    """The full :class:`rmu_lens.analysis.probes.ProbeAnalysis` as a dict (intervals, folds)."""

    @property
    def surviving(self) -> list[float]:
        """Surviving share of above-chance decodability per layer (retrained probe)."""
        return [_share(u, b, self.chance) for u, b in zip(self.unlearned_acc, self.base_acc)]

    @property
    def surviving_transfer(self) -> list[float]:
        """The same with the base model's probe read on the unlearned activations."""
        return [_share(t, b, self.chance) for t, b in zip(self.transfer_acc, self.base_acc)]

    def best_layer(self) -> int:
        """The layer where the base probe decodes the answers best."""
        return self.layers[max(range(len(self.layers)), key=lambda i: self.base_acc[i])]

    def headline(self) -> str:
        i = self.layers.index(self.best_layer())
        share = self.surviving[i]
        if not math.isfinite(share):
            return (f"probe audit: the base model's answers are not linearly decodable above chance "
                    f"(best {self.base_acc[i]:.2f} vs chance {self.chance:.2f}): nothing to compare")
        return (f"probes at layer {self.layers[i]}: base {self.base_acc[i]:.2f}, unlearned {self.unlearned_acc[i]:.2f} "
                f"(chance {self.chance:.2f}): {100 * max(0.0, share):.0f}% of the base's above-chance decodability survives "
                f"({100 * max(0.0, self.surviving_transfer[i]):.0f}% with the base's own probe)")

    def to_dict(self) -> dict[str, Any]:
        fields = ("layers", "hook_names", "base_acc", "unlearned_acc", "transfer_acc", "chance", "n_questions", "analysis")
        return {**{k: getattr(self, k) for k in fields}, "surviving": self.surviving,
                "surviving_transfer": self.surviving_transfer, "headline": self.headline()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProbeAuditResult:
        fields = ("layers", "hook_names", "base_acc", "unlearned_acc", "transfer_acc", "chance", "n_questions")
        return cls(**{k: data[k] for k in fields}, analysis=dict(data.get("analysis") or {}))


def probe_audit(
    base: Any,
    unlearned: Any,
    questions: Sequence[Any],
    *,
    layers: Sequence[int] | None = None,
    mode: str = "cloze",
    n_folds: int = 5,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = False,
) -> ProbeAuditResult:
    """Probe the forget answers at each layer (every layer by default) of both models; see the module docstring.

    ``questions`` are the forget questions (rmu_lens.eval Question objects); labels are the answer
    texts and each probe chooses among its question's choices.
    """
    from rmu_lens.analysis.activations import answer_position_activations, resid_post_hooks
    from rmu_lens.analysis.probes import probe_layers

    questions = list(questions)
    if len(questions) < n_folds:
        raise ValueError(f"probe_audit needs at least n_folds={n_folds} forget questions, got {len(questions)}")
    hooks = resid_post_hooks(unlearned, layers)
    options = dict(mode=mode, batch_size=batch_size, progress=progress)
    base_acts = answer_position_activations(base, questions, hooks, **options)
    unlearned_acts = answer_position_activations(unlearned, questions, hooks, **options)
    labels = [q.choices[q.answer] for q in questions]
    analysis = probe_layers(
        base_acts, labels, unlearned=unlearned_acts, hook_names=hooks, candidates=[list(q.choices) for q in questions],
        n_folds=n_folds, seed=seed, name="forget answers",
        description="answer among the question's choices, from the last context token",
    )
    return ProbeAuditResult(
        layers=[int(l) for l in analysis.layers], hook_names=list(analysis.hook_names),
        base_acc=[row["acc"] for row in analysis.accuracy["base"]],
        unlearned_acc=[row["acc"] for row in analysis.accuracy["unlearned"]],
        transfer_acc=[row["acc"] for row in analysis.accuracy["transfer"]],
        chance=analysis.chance, n_questions=len(questions), analysis=analysis.to_dict(),
    )
