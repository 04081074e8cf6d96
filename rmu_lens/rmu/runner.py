"""BlockRunner: compute a hook point's activations by running only the blocks that can change them.

RMU reads layer l and trains a few layers first..l, so a training step needs neither the blocks
after l nor the LM head, and the blocks below ``first`` are frozen (docs/performance.md):

    input_ids ──prefix()──▶ BlockInputs (hidden state entering block `first` + the kwargs the
                            model passes to EACH block first..last: mask, rotary cos/sin, positions)
    BlockInputs ──run(params)──▶ activations at blocks.{last}.hook_resid_post

``prefix`` runs the HF model itself with the blocks from ``first`` on replaced by stand-ins that
record what the model passes them (and pass the residual stream on uncomputed), so each block's mask and position embeddings are the ones the model's own
code builds for that block's layer type (sliding-window and full layers get different masks;
Gemma-3's get different RoPE bases) at no extra compute. ``run`` calls unwrapped copies of the HF
decoder layers with weights passed functionally (``torch.func.functional_call``): the same math as
the bridge's blocks without the bridge's per-module hook overhead, and the frozen path is the
same call with the frozen copies of the trained tensors swapped in — no ``.data`` swapping.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rmu_lens.attention import layer_attention
from rmu_lens.models import hf_model_of, readable_name
from rmu_lens.rmu.prefix import map_tensors

RESID_HOOK = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")


def block_output_index(hook_name: str, n_layers: int) -> int:
    """Index of the block whose output a residual hook point reads (``resid_pre`` of i = output of i-1).

    The trainer's fast path supports residual-stream hook points; other hook points are for analysis.
    """
    match = RESID_HOOK.match(hook_name)
    if not match:
        raise ValueError(
            f"hook_point={hook_name!r}: RMU training reads a residual-stream hook point, "
            f"'blocks.{{i}}.hook_resid_post' or 'blocks.{{i}}.hook_resid_pre'"
        )
    index = int(match.group(1)) - (1 if match.group(2) == "pre" else 0)
    if not 0 <= index < n_layers:
        raise ValueError(f"hook_point={hook_name!r} is out of range for a model with {n_layers} layers")
    return index


ATTENTION_KINDS = ("auto", "sdpa", "eager")


def runner_attention(config: Any, requested: str = "auto") -> str:
    """The attention implementation the runner's plain layers use: ``sdpa`` unless the model needs eager.

    The bridge runs HF attention in eager mode; the runner's layers may use PyTorch's fused
    ``scaled_dot_product_attention`` instead (the same math, faster on GPUs), fed the same 4-D mask the
    model builds. Logit soft-capping (Gemma-2) has no SDPA kernel, so ``auto`` keeps eager there and an
    explicit ``sdpa`` is refused.
    """
    if requested not in ATTENTION_KINDS:
        raise ValueError(f"attention={requested!r}: choose one of {', '.join(ATTENTION_KINDS)}")
    softcap = getattr(config, "attn_logit_softcapping", None)
    if requested == "eager" or (requested == "auto" and softcap is not None):
        return "eager"
    if softcap is not None:
        raise ValueError(
            f"attention='sdpa': this model soft-caps attention logits (attn_logit_softcapping={softcap}), "
            "which scaled_dot_product_attention cannot do; use attention='auto' or 'eager'"
        )
    return "sdpa"


class _Captured(Exception):
    """Raised inside the forward pass once the last block's inputs are captured."""


@dataclass
class BlockInputs:
    """What blocks first..last receive: the residual stream entering ``first`` and, per block index,
    the extra positional and keyword arguments the model itself passes that block."""

    hidden: torch.Tensor
    args: dict[int, tuple]
    kwargs: dict[int, dict[str, Any]]


def _to_device(value: Any, device: torch.device) -> Any:
    return map_tensors(value, lambda t: t.to(device, non_blocking=True) if t.device != device else t)


def _module_device(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    return torch.device("cpu")


class BlockRunner:
    """Runs blocks ``first..last`` of a bridged model as plain HF decoder layers.

    ``params`` passed to :meth:`run` override tensors by their plain HF name
    (``model.layers.5.mlp.down_proj.weight``); everything else is the model's live weights.
    ``attention`` picks the plain layers' attention kernel (:func:`runner_attention`).
    """

    def __init__(self, bridge: Any, first: int, last: int, attention: str = "auto") -> None:
        n_layers = bridge.cfg.n_layers
        if not 0 <= first <= last < n_layers:
            raise ValueError(f"Blocks {first}..{last} are out of range for a model with {n_layers} layers")
        self.bridge = bridge
        self.first, self.last = first, last
        self.hf_model = hf_model_of(bridge)
        # A tensor's HF name is its first name, as params.resolve_parameters names it: the bridge also
        # exposes aliases (``model.layers.5.mlp.out.weight``) that must not win.
        hf_names: dict[int, str] = {}
        for name, tensor in list(self.hf_model.named_parameters()) + list(self.hf_model.named_buffers()):
            hf_names.setdefault(id(tensor), readable_name(name))
        self.hf_names = set(hf_names.values())
        self.attention_implementation = runner_attention(self.hf_model.config, attention)
        self._layer_config = copy.copy(self.hf_model.config)
        self._layer_config._attn_implementation = self.attention_implementation
        # Per block: the module to call and its tensors as (name inside the module, HF name, tensor).
        self._layers: list[tuple[nn.Module, list[tuple[str, str, torch.Tensor]], torch.device]] = []
        self.plain_blocks: list[int] = []
        # Refuses, by layer and kind, attention kinds whose inputs are not known to be exact.
        self.attention = layer_attention(self.hf_model.config)[first : last + 1]
        for index in range(first, last + 1):
            block = bridge.blocks[index]
            original = block.original_component
            tensors = {
                readable_name(name): tensor
                for name, tensor in list(original.named_parameters()) + list(original.named_buffers())
            }
            plain = self._plain_layer(type(original), index)
            expected = [name for name, _ in list(plain.named_parameters()) + list(plain.named_buffers())]
            if all(name in tensors for name in expected):
                module, local = plain, {name: tensors[name] for name in expected}
                self.plain_blocks.append(index)
            else:
                # The bridge restructured this block (e.g. GPT-2's fused qkv split into q, k, v):
                # call the bridge's block itself, still with functional weights.
                # One path per tensor: the bridge reaches submodules by several paths (GPT-2's mlp.out
                # is mlp.c_proj), and functional_call swapping one attribute twice restores the override.
                module = block
                local = dict(block.named_parameters())
                local.update(dict(block.named_buffers()))
            entries = [(name, hf_names.get(id(tensor), name), tensor) for name, tensor in local.items()]
            self._layers.append((module, entries, _module_device(original)))

    def _plain_layer(self, layer_class: type, index: int) -> nn.Module:
        config = self._layer_config
        with torch.device("meta"):
            try:
                layer = layer_class(config, layer_idx=index)
            except TypeError:
                layer = layer_class(config, index)
        return layer.eval()

    def prefix(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None = None,
    ) -> BlockInputs:
        """Run the frozen blocks below ``first`` (no grad) and return what blocks first..last receive."""
        captured: dict[int, tuple[tuple, dict]] = {}
        # Every block from `first` on is recorded, so the inputs also serve runners with another
        # `last` (a prefix cache is keyed by `first`); stand-ins cost nothing.
        final = self.bridge.cfg.n_layers - 1
        blocks = [self.bridge.blocks[i] for i in range(self.first, final + 1)]

        def stand_in(index: int):
            def record(*args: Any, **kwargs: Any) -> torch.Tensor:
                captured[index] = (args, kwargs)
                if index == final:
                    raise _Captured
                # Blocks first..last-1 are not computed here; pass the residual stream on unchanged.
                return args[0] if args else kwargs["hidden_states"]

            return record

        # An instance attribute shadows the class's forward for this call only (set in __dict__
        # directly: the bridge's components forward attribute writes to the wrapped module).
        for index, block in zip(range(self.first, final + 1), blocks):
            vars(block)["forward"] = stand_in(index)
        device = self.hf_model.get_input_embeddings().weight.device
        inputs = {"input_ids": input_ids.to(device), "use_cache": False}
        if attention_mask is not None:
            inputs["attention_mask"] = attention_mask.to(device)
        if position_ids is not None:
            inputs["position_ids"] = position_ids.to(device)
        try:
            with torch.no_grad():
                self.hf_model.base_model(**inputs)
        except _Captured:
            pass
        finally:
            for block in blocks:
                vars(block).pop("forward", None)
        missing = [i for i in range(self.first, final + 1) if i not in captured]
        if missing:
            raise RuntimeError(f"The model never called blocks {missing}; cannot capture their inputs")
        hidden, args, kwargs = None, {}, {}
        for index, (block_args, block_kwargs) in captured.items():
            block_kwargs = dict(block_kwargs)
            if block_args:
                value, args[index] = block_args[0], tuple(block_args[1:])
            else:
                value, args[index] = block_kwargs.pop("hidden_states"), ()
            kwargs[index] = block_kwargs
            if index == self.first:
                hidden = value
        return BlockInputs(hidden=hidden.detach(), args=args, kwargs=kwargs)

    def run(self, inputs: BlockInputs, params: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Residual stream after block ``last`` (= ``blocks.{last}.hook_resid_post``), from ``inputs``."""
        params = params or {}
        unknown = set(params) - self.hf_names
        if unknown:
            raise KeyError(f"BlockRunner.run got overrides for unknown tensors {sorted(unknown)}; use plain HF names")
        hidden = inputs.hidden
        for index, (module, entries, device) in zip(range(self.first, self.last + 1), self._layers):
            if index not in inputs.kwargs:
                raise ValueError(f"These BlockInputs hold no inputs for block {index}: build them with this runner's prefix()")
            hidden = _to_device(hidden, device)
            weights = {name: params.get(hf_name, tensor) for name, hf_name, tensor in entries}
            args = (hidden, *_to_device(inputs.args[index], device))
            output = torch.func.functional_call(
                module, weights, args, _to_device(inputs.kwargs[index], device), tie_weights=False
            )
            hidden = output[0] if isinstance(output, tuple) else output
        return hidden
