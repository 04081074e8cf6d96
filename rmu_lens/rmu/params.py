"""Resolve readable parameter names and patterns to the bridged model's tensors.

Two vocabularies name the same tensor: the bridge's (``blocks.5.mlp.out.weight``, also the keys of
``bridge.state_dict()``) and HF's (``model.layers.5.mlp.down_proj.weight``). Selection is by name,
never by index (the official code's ``param_ids=[6]`` means different tensors in different models).
"""

from __future__ import annotations

import fnmatch
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


@dataclass(frozen=True)
class TrainedParameter:
    """A tensor RMU trains, under both of its names."""

    bridge_name: str
    hf_name: str
    parameter: torch.nn.Parameter


def _expand_alias(pattern: str) -> str:
    for alias, target in TL_ALIASES.items():
        if pattern.endswith(alias):
            return pattern[: -len(alias)] + target
    return pattern


def resolve_parameters(bridge, patterns: list[str], update_layers: list[int]) -> list[TrainedParameter]:
    """Tensors named by ``patterns`` (``{layer}`` expanded per update layer), in model order.

    Raises ValueError for a layer out of range or a pattern that matches nothing.
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
        if not matches:
            examples = [n for n in candidates if ".mlp." in n][:4]
            raise ValueError(
                f"Parameter pattern {pattern!r} matches no tensor of this model. Use bridge names such as "
                f"{examples} or HF names such as {candidates[examples[0]].hf_name if examples else '...'}"
            )
        for match in matches:
            chosen[id(match.parameter)] = match
    order = {id(p): i for i, p in enumerate(hf_model_of(bridge).parameters())}
    return sorted(chosen.values(), key=lambda c: order[id(c.parameter)])


def block_index(hf_name: str) -> int | None:
    """Layer index inside an HF parameter name (``model.layers.5....`` -> 5), if any."""
    parts = hf_name.split(".")
    for previous, part in zip(parts, parts[1:]):
        if part.isdigit() and previous in ("layers", "h", "blocks", "layer"):
            return int(part)
    return None
