"""Device maps for training: only what RMU's loss reads sits on the accelerator.

RMU at layer l reads ``blocks.{l}.hook_resid_post``: the embeddings and decoder layers 0..l are all a
training step computes. :func:`training_device_map` puts exactly those on ``device`` and every later
layer, the final norm and an untied LM head on ``rest`` (``"cpu"``, or ``"disk"`` for accelerate's
offload), as a device map for :func:`rmu_lens.load_model`:

    device_map = training_device_map("HuggingFaceH4/zephyr-7b-beta", layer=7, device="cuda", rest="cpu")
    model = rl.load_model("HuggingFaceH4/zephyr-7b-beta", device_map=device_map, dtype="bfloat16")
    run = rl.unlearn(model, forget, retain, config, out="runs/zephyr")   # saves the whole model

Training on such a model gives bit-identical weights to training the model on one device, and the
saved ``model/`` is complete (offloaded layers are read back when saving; tests/test_placement.py).
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from rmu_lens.errors import RMULensError


class DeviceMapError(RMULensError, ValueError):
    """A training device map cannot be built for this model."""


def decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(dotted name, module list) of a causal LM's decoder layers: its longest ModuleList."""
    lists = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.ModuleList)]
    if not lists:
        raise DeviceMapError(f"{type(model).__name__} has no ModuleList of decoder layers")
    return max(lists, key=lambda item: len(item[1]))


def _skeleton(model: str | os.PathLike | Any) -> nn.Module:
    """The model's module tree without weights (on the meta device) from a source, config or model."""
    if isinstance(model, nn.Module):
        return model
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

    config = model if isinstance(model, PretrainedConfig) else AutoConfig.from_pretrained(os.fspath(model))
    with init_empty_weights():
        return AutoModelForCausalLM.from_config(config)


def training_device_map(model: str | os.PathLike | Any, layer: int, device: str = "cuda", rest: str = "cpu") -> dict[str, str]:
    """A device map with the embeddings and layers 0..``layer`` on ``device``, everything after on ``rest``.

    ``model`` is an HF directory or hub name, a ``PretrainedConfig``, or an HF model. An LM head tied
    to the input embedding stays with it on ``device``.
    """
    skeleton = _skeleton(model)
    layers_name, layers = decoder_layers(skeleton)
    if not 0 <= layer < len(layers):
        raise DeviceMapError(f"layer={layer} is out of range: the model has layers 0..{len(layers) - 1}")
    if rest == device:
        raise DeviceMapError(f"rest={rest!r} equals device: a training map keeps later layers off {device}")
    parent = layers_name.rsplit(".", 1)[0] if "." in layers_name else ""
    device_map: dict[str, str] = {}
    head = skeleton.get_output_embeddings()
    tied = head is not None and head.weight is skeleton.get_input_embeddings().weight
    for name, module in skeleton.named_modules():
        if name == layers_name:
            device_map.update({f"{name}.{i}": device if i <= layer else rest for i in range(len(layers))})
        elif name and name.rsplit(".", 1)[0] == parent and name != parent and not name.startswith(layers_name + "."):
            # Siblings of the layer list under the base model: embeddings and rotary run before the
            # layers (device); the final norm after them (rest) — a normalization module not named *emb*.
            final_norm = "Norm" in type(module).__name__ and "emb" not in name.rsplit(".", 1)[-1]
            device_map[name] = rest if final_norm else device
        elif parent and name and "." not in name and name != parent.split(".")[0]:
            # Top-level modules beside the base model: the LM head.
            device_map[name] = device if (module is head and tied) else rest
    return device_map
