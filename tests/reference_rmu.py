"""A plain re-implementation of the official RMU loop (centerforaisafety/wmdp, ``rmu/unlearn.py``).

Independent of rmu_lens's trainer on purpose: two full HF model copies (updated + frozen), full
forward passes through every layer and the LM head, a forward hook on ``model.model.layers[l]`` (or
``model.transformer.h[l]`` for GPT-2), ``torch.nn.functional.mse_loss`` and the transformers 4.x
AdamW formula written out. Only the parts the tests vary are parameters; everything else follows the
official code line by line:

    updated_model.train(); params = layers[i].parameters() at index param_ids, for i in layer_ids
    num_batches = min(max_num_batches, shortest forget list, shortest retain list)
    step idx: topic = idx % n_topics, batch = idx // n_topics (retain list of that topic, same batch)
    loss = mse(h_l(forget), c·u) + alpha · mse(h_l(retain), h_l^frozen(retain))

``mode="official"`` is the official code: left padding with EOS, right truncation, no position
ids (positions 0..T-1 on every row), means over every position including pads.
``mode="masked"`` is the same loop with rmu_lens's default-mode semantics, for comparing that mode:
right padding, position ids ``cumsum(mask) - 1``, means over real tokens only.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F


class TransformersV4AdamW:
    """``transformers.AdamW`` of transformers 4.x (correct_bias=True), as the official code trains with.

    ``p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``, then decoupled weight decay.
    """

    def __init__(self, params: Sequence[torch.nn.Parameter], lr: float, betas=(0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0) -> None:
        self.params = list(params)
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.state = [{"step": 0, "m": torch.zeros_like(p), "v": torch.zeros_like(p)} for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        for p, state in zip(self.params, self.state):
            if p.grad is None:
                continue
            g = p.grad
            state["step"] += 1
            state["m"] = beta1 * state["m"] + (1 - beta1) * g
            state["v"] = beta2 * state["v"] + (1 - beta2) * g * g
            denom = state["v"].sqrt() + self.eps
            step_size = self.lr * math.sqrt(1 - beta2 ** state["step"]) / (1 - beta1 ** state["step"])
            p -= step_size * state["m"] / denom
            if self.weight_decay > 0:
                p -= self.lr * self.weight_decay * p


def decoder_layers(model: Any) -> Any:
    """The HF model's list of decoder layers (``model.model.layers``; GPT-2: ``model.transformer.h``)."""
    return model.transformer.h if hasattr(model, "transformer") else model.model.layers


def use_eager_attention(model: Any) -> Any:
    """Eager attention, as the TransformerBridge runs its model."""
    model.set_attn_implementation("eager")
    return model


def chunk(texts: Sequence[str], batch_size: int) -> list[list[str]]:
    """Texts in consecutive batches, file order, last batch possibly short (official ``get_data``)."""
    return [list(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]


def forward_with_cache(model: Any, inputs: dict[str, torch.Tensor], module: Any, no_grad: bool = True) -> torch.Tensor:
    """Output of ``module`` during a full forward pass of ``model`` (official ``forward_with_cache``)."""
    cache = []

    def hook(module, input, output):
        cache.append(output[0] if isinstance(output, tuple) else output)

    handle = module.register_forward_hook(hook)
    try:
        if no_grad:
            with torch.no_grad():
                model(**inputs)
        else:
            model(**inputs)
    finally:
        handle.remove()
    return cache[0]


def _mse(x: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    target = target.expand_as(x)
    if mask is None:
        return F.mse_loss(x, target)
    keep = mask.bool()
    return F.mse_loss(x[keep], target[keep])


def run_reference_rmu(
    updated_model: Any,
    frozen_model: Any,
    tokenizer: Any,
    forget_data_list: Sequence[Sequence[Sequence[str]]],
    retain_data_list: Sequence[Sequence[Sequence[str]]],
    *,
    layer_id: int,
    layer_ids: Sequence[int],
    param_ids: Sequence[int],
    control_unit_vectors: Sequence[torch.Tensor],
    steering_coeffs: Sequence[float],
    alphas: Sequence[float],
    lr: float,
    max_num_batches: int,
    forget_max_lengths: Sequence[int] = (512, 768),
    retain_max_length: int = 512,
    mode: str = "official",
    optimizer: str = "transformers_v4",
) -> list[dict[str, float]]:
    """Train ``updated_model`` in place with the official RMU loop; returns per-step losses.

    ``forget_data_list[t]`` / ``retain_data_list[t]``: topic t's batches of texts (see :func:`chunk`);
    each topic may have its own retain set, as in the official code (step idx reads batch idx // n_topics
    of its topic's retain list).
    ``control_unit_vectors[t]``: topic t's u (unit norm); the target is ``steering_coeffs[t] * u``.
    ``optimizer="torch"`` swaps in torch.optim.AdamW (same eps), to show what the legacy formula changes.
    """
    if mode not in ("official", "masked"):
        raise ValueError(f"mode={mode!r}; choose 'official' or 'masked'")
    tokenizer = copy.deepcopy(tokenizer)
    if mode == "official":
        tokenizer.pad_token_id = tokenizer.eos_token_id
        tokenizer.padding_side = "left"
    else:
        tokenizer.padding_side = "right"
    tokenizer.truncation_side = "right"

    updated_model.train()
    frozen_model.eval()
    params = [
        p
        for layer in layer_ids
        for i, p in enumerate(decoder_layers(updated_model)[layer].parameters())
        if i in param_ids
    ]
    if optimizer == "transformers_v4":
        opt = TransformersV4AdamW(params, lr=lr)
    elif optimizer == "torch":
        opt = torch.optim.AdamW(params, lr=lr, eps=1e-6, weight_decay=0.0)
    else:
        raise ValueError(f"optimizer={optimizer!r}; choose 'transformers_v4' or 'torch'")
    frozen_module = decoder_layers(frozen_model)[layer_id]
    updated_module = decoder_layers(updated_model)[layer_id]
    dtype = next(updated_model.parameters()).dtype
    control_vectors_list = [
        (u.to(dtype).reshape(1, 1, -1) / u.norm() * c) for u, c in zip(control_unit_vectors, steering_coeffs)
    ]

    def encode(texts: Sequence[str], max_length: int) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        encoded = tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True, max_length=max_length)
        inputs = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        if mode == "official":
            return inputs, None
        inputs["position_ids"] = (encoded["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        return inputs, encoded["attention_mask"]

    n_topics = len(forget_data_list)
    num_batches = min(
        max_num_batches,
        min(len(f) for f in forget_data_list),
        min(len(r) for r in retain_data_list),
    )
    history = []
    for idx in range(num_batches):
        topic_idx = idx % n_topics
        batch_idx = idx // n_topics
        control_vec = control_vectors_list[topic_idx]
        unlearn_batch = forget_data_list[topic_idx][batch_idx]
        retain_batch = retain_data_list[topic_idx][batch_idx]

        unlearn_inputs, unlearn_mask = encode(unlearn_batch, forget_max_lengths[topic_idx])
        updated_forget_activations = forward_with_cache(updated_model, unlearn_inputs, module=updated_module, no_grad=False)
        unlearn_loss = _mse(updated_forget_activations, control_vec, unlearn_mask)

        retain_inputs, retain_mask = encode(retain_batch, retain_max_length)
        updated_retain_activations = forward_with_cache(updated_model, retain_inputs, module=updated_module, no_grad=False)
        frozen_retain_activations = forward_with_cache(frozen_model, retain_inputs, module=frozen_module, no_grad=True)
        retain_loss = _mse(updated_retain_activations, frozen_retain_activations, retain_mask) * alphas[topic_idx]

        loss = unlearn_loss + retain_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({"step": idx, "topic": topic_idx, "forget_loss": unlearn_loss.item(), "retain_loss": retain_loss.item()})
    return history
