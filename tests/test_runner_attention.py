"""The runner's attention kernel: SDPA where the model allows it, eager where it must be, same activations."""

from __future__ import annotations

import pytest
import torch

from rmu_lens.models import build_random_model, load_model, tokenizer_of
from rmu_lens.rmu.config import RMUConfig
from rmu_lens.rmu.runner import BlockRunner, runner_attention
from rmu_lens.rmu.trainer import RMUTrainer

TEXTS = ["The quick brown fox jumps over the lazy dog again and again.", "A short one."]


def bridge(family: str):
    model, tokenizer = build_random_model(family, n_layers=3, d_model=32, n_heads=4, seed=0)
    return load_model(model, tokenizer=tokenizer)


def padded(tokenizer):
    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    mask = batch["attention_mask"]
    return batch["input_ids"], mask, (mask.cumsum(-1) - 1).clamp(min=0)


def test_sdpa_runner_equals_eager_runner_and_calls_the_fused_kernel(monkeypatch):
    model = bridge("llama")
    ids, mask, positions = padded(tokenizer_of(model))
    eager = BlockRunner(model, 0, 2, attention="eager")
    expected = eager.run(eager.prefix(ids, mask, positions))
    calls = []
    fused = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or fused(*a, **k))
    sdpa = BlockRunner(model, 0, 2)
    assert sdpa.attention_implementation == "sdpa"
    actual = sdpa.run(sdpa.prefix(ids, mask, positions))
    assert len(calls) == 3  # one fused call per block
    keep = mask.bool()
    torch.testing.assert_close(actual[keep], expected[keep], rtol=1e-5, atol=1e-6)


def test_softcapped_attention_stays_eager_and_explicit_sdpa_is_refused():
    model = bridge("gemma2")
    assert BlockRunner(model, 0, 2).attention_implementation == "eager"
    with pytest.raises(ValueError, match="attn_logit_softcapping"):
        BlockRunner(model, 0, 2, attention="sdpa")
    with pytest.raises(ValueError, match="choose one of auto, sdpa, eager"):
        runner_attention(model.cfg, "flash")


def test_reference_mode_runs_eager_attention_like_the_official_loop():
    model = bridge("llama")
    forget, retain = {"a": TEXTS * 2}, TEXTS * 2
    common = dict(layer=2, update_layers=[1, 2], batch_size=2, max_batches=1, steering_coeff=5.0)
    assert RMUTrainer(model, forget, retain, RMUConfig(**common)).runner.attention_implementation == "sdpa"
    reference = RMUConfig(**common, reference=True, optimizer="legacy_adamw", master_weights=None)
    assert RMUTrainer(model, forget, retain, reference).runner.attention_implementation == "eager"
