"""Resolve readable parameter names and patterns to the bridged model's tensors.

Two vocabularies name the same tensor: the bridge's (``blocks.5.mlp.out.weight``, also the keys of
``bridge.state_dict()``) and HF's (``model.layers.5.mlp.down_proj.weight``). Selection is by name,
never by index (the official code's ``param_ids=[6]`` means different tensors in different models).

Candidates are every parameter of the HF module tree, not only the bridge's state_dict: transformers 5
fuses a mixture-of-experts layer's experts into one ``[E, ...]`` tensor (``mlp.experts.down_proj``)
that the bridge does not list; such tensors get a bridge-style name (``blocks.5.mlp.experts.down_proj``).
For MoE layers the alias ``blocks.{i}.mlp.out.weight`` means every expert's down projection (a
shared expert's included).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

import torch

from rmu_lens.models import hf_model_of, readable_name

# TransformerLens weight names mapped to the bridge's component names (shapes differ: TL's W_out
# is the transpose of HF's down_proj.weight; the trained tensor is the HF one).
TL_ALIASES = {
    "mlp.W_out": "mlp.out.weight",
    "mlp.W_in": "mlp.in.weight",
    "mlp.W_gate": "mlp.gate.weight",
    "attn.W_O": "attn.o.weight",
    "attn.W_Q": "attn.q.weight",
    "attn.W_K": "attn.k.weight",
    "attn.W_V": "attn.v.weight",
}


MLP_OUT = re.compile(r"^blocks\.(\d+)\.mlp\.out\.weight$")
# Expert down projections: fused (``mlp.experts.down_proj``, transformers 5), one per expert
# (``mlp.experts.3.down_proj.weight``; ``w2`` in Mixtral's original naming), and an always-active
# shared expert's (Qwen-MoE: ``mlp.shared_expert.down_proj.weight``).
EXPERT_DOWN = re.compile(r"\.mlp\.(?:experts\.(?:\d+\.)?|shared_experts?\.)(?:down_proj|w2)(?:\.weight)?$")


@dataclass(frozen=True)
class TrainedParameter:
    """A tensor RMU trains, under both of its names.

    ``experts``: for a fused expert tensor, the experts (rows of dim 0) that train; the others'
    gradients are zeroed (:func:`mask_untrained_experts`). None: the whole tensor trains.
    """

    bridge_name: str
    hf_name: str
    parameter: torch.nn.Parameter
    experts: tuple[int, ...] | None = None


def _expand_alias(pattern: str) -> str:
    for alias, target in TL_ALIASES.items():
        if pattern.endswith(alias):
            return pattern[: -len(alias)] + target
    return pattern


def _bridge_style_name(hf_name: str) -> str:
    """``model.layers.5.mlp.experts.down_proj`` -> ``blocks.5.mlp.experts.down_proj`` (unlisted tensors)."""
    match = re.search(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.(.+)$", hf_name)
    return f"blocks.{match.group(1)}.{match.group(2)}" if match else hf_name


def resolve_parameters(
    bridge, patterns: list[str], update_layers: list[int], experts: list[int] | None = None
) -> list[TrainedParameter]:
    """Tensors named by ``patterns`` (``{layer}`` expanded per update layer), in model order.

    ``experts`` restricts mixture-of-experts tensors to those experts (per-expert tensors of other
    experts are dropped; fused tensors keep only those rows trainable). Raises ValueError for a layer
    out of range, a pattern that matches nothing, or ``experts`` that name no selected expert tensor.
    """
    n_layers = bridge.cfg.n_layers
    bad = [i for i in update_layers if not 0 <= i < n_layers]
    if bad:
        raise ValueError(f"update_layers {bad} are out of range: the model has layers 0..{n_layers - 1}")
    hf_names = {id(p): readable_name(n) for n, p in hf_model_of(bridge).named_parameters()}
    candidates: dict[str, TrainedParameter] = {}
    for name, tensor in bridge.state_dict(keep_vars=True).items():
        if isinstance(tensor, torch.nn.Parameter) and id(tensor) in hf_names:
            candidates[name] = TrainedParameter(name, hf_names[id(tensor)], tensor)
    listed = {id(c.parameter) for c in candidates.values()}
    for name, tensor in hf_model_of(bridge).named_parameters():
        if id(tensor) not in listed:
            listed.add(id(tensor))
            hf_name = readable_name(name)
            bridge_name = _bridge_style_name(hf_name)
            candidates.setdefault(bridge_name, TrainedParameter(bridge_name, hf_name, tensor))
    expanded = []
    for pattern in patterns:
        if "{layer}" in pattern:
            expanded += [_expand_alias(pattern.format(layer=i)) for i in update_layers]
        else:
            expanded.append(_expand_alias(pattern))
    chosen: dict[int, TrainedParameter] = {}
    for pattern in expanded:
        matches = [
            c for c in candidates.values() if fnmatch.fnmatchcase(c.bridge_name, pattern) or fnmatch.fnmatchcase(c.hf_name, pattern)
        ]
        if not matches and MLP_OUT.match(pattern):
            # An MoE layer has no single MLP output weight: the alias means its experts' down projections.
            layer = int(MLP_OUT.match(pattern).group(1))
            matches = [c for c in candidates.values() if EXPERT_DOWN.search(c.hf_name) and block_index(c.hf_name) == layer]
        if not matches:
            examples = [n for n in candidates if ".mlp." in n][:4]
            raise ValueError(
                f"Parameter pattern {pattern!r} matches no tensor of this model. Use bridge names such as "
                f"{examples} or HF names such as {candidates[examples[0]].hf_name if examples else '...'}"
            )
        for match in matches:
            chosen[id(match.parameter)] = match
    order = {id(p): i for i, p in enumerate(hf_model_of(bridge).parameters())}
    selected = sorted(chosen.values(), key=lambda c: order[id(c.parameter)])
    return selected if experts is None else _restrict_to_experts(selected, experts, hf_model_of(bridge).config)


def _restrict_to_experts(selected: list[TrainedParameter], experts: list[int], config) -> list[TrainedParameter]:
    n_experts = getattr(config, "num_local_experts", None) or getattr(config, "num_experts", None)
    if not n_experts:
        raise ValueError(f"experts={experts} was given but this model ({type(config).__name__}) has no experts")
    bad = [e for e in experts if not 0 <= e < n_experts]
    if bad:
        raise ValueError(f"experts={experts}: {bad} out of range, the model's MoE layers have experts 0..{n_experts - 1}")
    keep = tuple(sorted(set(experts)))
    restricted, touched = [], False
    for p in selected:
        match = re.search(r"\.experts\.(\d+)\.", p.hf_name)
        if match:  # one tensor per expert
            touched = True
            if int(match.group(1)) in keep:
                restricted.append(p)
        elif ".experts." in p.hf_name and p.parameter.shape[0] == n_experts:  # fused [E, ...]
            touched = True
            restricted.append(TrainedParameter(p.bridge_name, p.hf_name, p.parameter, keep))
        else:
            restricted.append(p)
    if not touched:
        raise ValueError(
            f"experts={experts} applies to mixture-of-experts tensors, but none of the selected tensors "
            f"{[p.hf_name for p in selected]} is one: name expert tensors in param_names or drop experts"
        )
    return restricted


def mask_untrained_experts(trained: list[TrainedParameter]) -> None:
    """Zero the gradient rows of fused expert tensors that belong to experts not being trained.

    With weight decay 0 (required with ``experts``), Adam-type optimizers then leave those rows
    bit-identical: their moments stay zero and so does their update.
    """
    for p in trained:
        if p.experts is not None and p.parameter.grad is not None:
            keep = torch.zeros(p.parameter.shape[0], dtype=torch.bool, device=p.parameter.grad.device)
            keep[list(p.experts)] = True
            p.parameter.grad[~keep] = 0


def block_index(hf_name: str) -> int | None:
    """Layer index inside an HF parameter name (``model.layers.5....`` -> 5), if any."""
    parts = hf_name.split(".")
    for previous, part in zip(parts, parts[1:]):
        if part.isdigit() and previous in ("layers", "h", "blocks", "layer"):
            return int(part)
    return None
