"""Few-shot fine-tuning on tiny random models: copies only, the loss goes down, the right weights move."""

from __future__ import annotations

import pytest
import torch

from rmu_lens.audit.finetune import FinetuneConfig, finetune_copy, plain_copy
from rmu_lens.models import hf_model_of
from tests.helpers import snapshot, texts


def test_plain_copy_computes_the_same_logits_as_the_bridge(make_tiny):
    model = make_tiny("llama", n_layers=2, d_model=32, seed=0)
    ids = torch.tensor([[5, 9, 11, 40, 7, 3]])
    copy = plain_copy(model)
    with torch.no_grad():
        expected = hf_model_of(model)(input_ids=ids).logits
        got = copy(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-5)
    assert not any(name.count("_original_component") for name, _ in copy.named_parameters())


def test_lora_finetune_learns_and_leaves_the_callers_model_untouched(make_tiny):
    model = make_tiny("llama", n_layers=2, d_model=32, seed=0)
    before = snapshot(model)
    tuned, losses = finetune_copy(model, texts("bio", 5), FinetuneConfig(steps=25, lr=1e-2, batch_size=5, max_length=64))
    after = snapshot(model)
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert losses[-1] < losses[0] - 0.1
    assert not any("lora" in name for name, _ in tuned.named_parameters())  # merged into plain weights
    ids = torch.tensor([[5, 9, 11, 40]])
    with torch.no_grad():
        assert not torch.allclose(tuned(input_ids=ids).logits, hf_model_of(model)(input_ids=ids).logits, atol=1e-4)


def test_layers_method_trains_only_the_named_layers(make_tiny):
    model = make_tiny("llama", n_layers=3, d_model=32, seed=0)
    reference = dict(plain_copy(model).named_parameters())
    tuned, _ = finetune_copy(model, texts("cyber", 4), FinetuneConfig(method="layers", layers=[1], steps=3, lr=1e-2, max_length=32))
    moved = {name for name, p in tuned.named_parameters() if not torch.equal(p, reference[name])}
    assert moved and all(".layers.1." in name for name in moved)


@pytest.mark.parametrize(
    "overrides, message",
    [({"n_examples": [0, 5]}, "n_examples"), ({"method": "full"}, "method"), ({"steps": 0}, "steps"), ({"lr": -1.0}, "lr")],
)
def test_bad_finetune_settings_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        FinetuneConfig(**overrides)


def test_layers_outside_the_model_are_refused(make_tiny):
    model = make_tiny("llama", n_layers=2, d_model=32, seed=0)
    with pytest.raises(ValueError, match="outside 0..1"):
        finetune_copy(model, texts("bio", 2), FinetuneConfig(method="layers", layers=[5], steps=1))
