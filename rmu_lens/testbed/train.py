"""Train the testbed's small Llama from scratch on the world's text, on the CPU, with plain torch.

Documents are tokenized once, grouped by length into padded batches (padding costs little), and
trained with AdamW under a warm-up + cosine schedule. The model sees each document from position 0,
as the evaluator's prompts are.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from rmu_lens.rmu.batches import right_pad


@dataclass(frozen=True)
class ModelSize:
    """Shape of the model and length of its training (a named preset in ``SIZES``)."""

    n_layers: int
    d_model: int
    n_heads: int
    d_mlp: int
    steps: int
    batch_size: int
    lr: float
    n_entities: int
    """Entities per domain of the world this size is trained on."""
    paragraph_copies: int = 4
    qa_per_document: int = 4
    warmup: float = 0.05
    weight_decay: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SIZES: dict[str, ModelSize] = {
    # Seconds: for tests of the cache and the plumbing; it learns little.
    "tiny": ModelSize(n_layers=2, d_model=32, n_heads=2, d_mlp=64, steps=20, batch_size=16, lr=3e-3, n_entities=4,
                      paragraph_copies=1),
    # The testbed proper: >= 97% on held-out questions in every domain (seeds 0 and 1), ~3.5 min on one core.
    "small": ModelSize(n_layers=4, d_model=128, n_heads=4, d_mlp=512, steps=800, batch_size=32, lr=3e-3, n_entities=24),
}


def model_config(size: ModelSize, tokenizer: Any, max_positions: int = 256):
    """The HF Llama config of ``size`` for ``tokenizer``'s vocabulary."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=size.d_model, num_hidden_layers=size.n_layers,
        num_attention_heads=size.n_heads, num_key_value_heads=size.n_heads, intermediate_size=size.d_mlp,
        max_position_embeddings=max_positions, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )


def length_grouped_batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of document indices of similar length (sorted within windows of 50 batches)."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lengths.__getitem__)
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def learning_rate(step: int, size: ModelSize) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    warmup = max(1, int(size.warmup * size.steps))
    if step < warmup:
        return size.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, size.steps - warmup)
    return size.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_model(
    documents: list[str],
    tokenizer: Any,
    size: ModelSize,
    *,
    seed: int = 0,
    progress: bool = True,
    callback: Callable[[int, Any], Any] | None = None,
    callback_every: int = 100,
    threads: int | None = 1,
):
    """Train a fresh Llama of ``size`` on ``documents`` (each followed by EOS); returns (model, stats).

    Deterministic for a seed on one machine and thread count; ``stats`` has the wall time and losses.
    ``callback(step, model)`` runs every ``callback_every`` steps (in eval mode, without grad).
    ``threads``: torch CPU threads while training (restored afterwards; None keeps the current
    setting). One thread is the default: this model's matrices are too small to gain much from a
    second one, and on a busy machine OpenMP's barriers make two threads several times slower.
    """
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _train(documents, tokenizer, size, seed, progress, callback, callback_every)
    finally:
        torch.set_num_threads(previous_threads)


def _train(
    documents: list[str],
    tokenizer: Any,
    size: ModelSize,
    seed: int,
    progress: bool,
    callback: Callable[[int, Any], Any] | None,
    callback_every: int,
) -> tuple[Any, dict[str, Any]]:
    from tqdm.auto import tqdm
    from transformers import LlamaForCausalLM

    started = time.perf_counter()
    encoded = [ids + [tokenizer.eos_token_id] for ids in tokenizer(documents, add_special_tokens=False)["input_ids"]]
    lengths = [len(ids) for ids in encoded]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(model_config(size, tokenizer, max_positions=max(256, max(lengths))))
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": size.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=size.lr, betas=(0.9, 0.98),
    )
    rng = random.Random(f"batches:{seed}")
    batches: list[list[int]] = []
    losses: list[float] = []
    bar = tqdm(total=size.steps, desc="testbed model", unit="step", disable=not progress, dynamic_ncols=True)
    try:
        for step in range(size.steps):
            if not batches:
                batches = length_grouped_batches(lengths, size.batch_size, rng)
            batch = right_pad([encoded[i] for i in batches.pop()], tokenizer.pad_token_id)
            ids, mask = batch.input_ids, batch.attention_mask
            labels = ids.masked_fill(mask == 0, -100)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, size)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
            if callback is not None and (step + 1) % callback_every == 0:
                model.eval()
                with torch.no_grad():
                    callback(step + 1, model)
                model.train()
    finally:
        bar.close()
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    stats = {
        "train_seconds": round(time.perf_counter() - started, 1),
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "n_documents": len(documents),
        "n_tokens": sum(lengths),
        "torch_threads": torch.get_num_threads(),
    }
    return model, stats
