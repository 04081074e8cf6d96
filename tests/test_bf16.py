"""bf16 training: small updates round away (as in the official code); float32 master weights keep them."""

from __future__ import annotations

import math

import pytest
import torch

from rmu_lens.models import build_random_model, hf_state_dict, load_model
from rmu_lens.rmu.config import RMUConfig
from rmu_lens.rmu.optim import LegacyAdamW
from rmu_lens.rmu.trainer import RMUTrainer, unlearn

TEXTS = [
    "The quick brown fox jumps over the lazy dog near the river bank today.",
    "Viral capsids protect the genome and attach to receptors on host cells.",
    "A buffer overflow writes past the end of an array into nearby memory.",
    "Rivers carry sediment from the mountains down to the wide flat delta.",
]


def bf16_trainer(**overrides) -> RMUTrainer:
    """A tiny Llama in bf16 (weights initialised with std 0.02, as real checkpoints' scale), lr 5e-5."""
    dtype = overrides.pop("dtype", torch.bfloat16)
    model, tokenizer = build_random_model("llama", n_layers=3, dtype=dtype)
    settings = dict(layer=2, steering_coeff=20.0, alpha=10.0, batch_size=2, max_batches=4, max_length=32,
                    retain_max_length=32, checkpoint_every=0)
    return RMUTrainer(load_model(model, tokenizer=tokenizer), {"bio": TEXTS}, TEXTS, RMUConfig(**{**settings, **overrides}))


def legacy_first_step_float64(weight: torch.Tensor, grad: torch.Tensor, lr: float, eps: float = 1e-6) -> torch.Tensor:
    """transformers 4.x AdamW's first step, recomputed in float64 (m = 0.1 g, v = 0.001 g²)."""
    w, g = weight.double(), grad.double()
    m, v = 0.1 * g, 0.001 * g * g
    step_size = lr * math.sqrt(1 - 0.999) / (1 - 0.9)
    return w - step_size * m / (v.sqrt() + eps)


def test_bf16_training_leaves_about_half_the_elements_unmoved_at_lr_5e5():
    trainer = bf16_trainer()
    before = {p.hf_name: p.parameter.detach().clone() for p in trainer.trained}
    trainer.train_step()
    for p in trainer.trained:
        unmoved = (p.parameter == before[p.hf_name]).double().mean().item()
        # Independent prediction: the exact update rounded to bf16 lands back on the old value
        # wherever it is below half the bf16 spacing at that weight.
        exact = legacy_first_step_float64(before[p.hf_name], p.parameter.grad, trainer.config.lr)
        predicted = (exact.to(torch.bfloat16) == before[p.hf_name]).double().mean().item()
        assert unmoved == pytest.approx(predicted, abs=0.02)
        assert 0.3 < unmoved < 0.7, f"{p.hf_name}: {unmoved:.3f} of the elements did not move"


def test_float32_training_moves_every_element_with_a_gradient():
    trainer = bf16_trainer(dtype=torch.float32)
    before = {p.hf_name: p.parameter.detach().clone() for p in trainer.trained}
    trainer.train_step()
    for p in trainer.trained:
        moved = p.parameter != before[p.hf_name]
        assert torch.equal(moved, p.parameter.grad != 0)


@pytest.mark.parametrize("optimizer", ["legacy_adamw", "adamw"])
def test_master_weights_step_is_the_float32_step_and_moves_every_element(optimizer):
    trainer = bf16_trainer(master_weights="float32", optimizer=optimizer)
    before = {p.hf_name: p.parameter.detach().clone() for p in trainer.trained}
    trainer.train_step()
    cfg = trainer.config
    for p, master in zip(trainer.trained, trainer.optimizer.masters):
        # Reference: the same optimizer stepping a float32 copy with the upcast gradient.
        reference = before[p.hf_name].float().clone().requires_grad_(True)
        reference.grad = p.parameter.grad.float()
        make = LegacyAdamW if optimizer == "legacy_adamw" else torch.optim.AdamW
        make([reference], lr=cfg.lr, eps=cfg.adam_eps, weight_decay=cfg.weight_decay).step()
        assert master.dtype == torch.float32
        assert torch.equal(master, reference.detach())
        assert torch.equal(master != before[p.hf_name].float(), p.parameter.grad != 0)
        assert (p.parameter.grad != 0).double().mean().item() > 0.999
        # The model's bf16 tensor is its master rounded.
        assert torch.equal(p.parameter.detach(), master.to(torch.bfloat16))


def test_master_weights_accumulate_updates_that_bf16_alone_loses():
    plain, master = bf16_trainer(max_batches=8, cycle=True), bf16_trainer(max_batches=8, cycle=True, master_weights="float32")
    start = {p.hf_name: p.parameter.detach().clone() for p in plain.trained}
    for _ in range(8):
        plain.train_step()
        master.train_step()
    for p, q in zip(plain.trained, master.trained):
        plain_moved = (p.parameter != start[p.hf_name]).double().mean().item()
        master_moved = (q.parameter != start[q.hf_name]).double().mean().item()
        assert master_moved > plain_moved


def test_master_weights_resume_exactly_from_a_checkpoint(tmp_path):
    def run(out, stop_after=None, resume=False):
        model, tokenizer = build_random_model("llama", n_layers=3, dtype=torch.bfloat16)
        config = RMUConfig(layer=2, steering_coeff=20.0, alpha=10.0, batch_size=2, max_batches=4, max_length=32,
                           retain_max_length=32, checkpoint_every=0, cycle=True, master_weights="float32")
        trainer_box = {}

        def on_step(record):
            if stop_after is not None and record["step"] + 1 == stop_after:
                trainer_box["trainer"].request_stop()

        trainer = RMUTrainer(load_model(model, tokenizer=tokenizer), {"bio": TEXTS}, TEXTS, config, callbacks=[on_step])
        trainer_box["trainer"] = trainer
        from rmu_lens.rmu.trainer import open_run_directory

        result = trainer.train(open_run_directory(trainer, out, resume=resume, overwrite=False), progress=False)
        return result, trainer

    straight, straight_trainer = run(tmp_path / "straight")
    stopped, _ = run(tmp_path / "resumed", stop_after=2)
    assert stopped.status == "stopped"
    resumed, resumed_trainer = run(tmp_path / "resumed", resume=True)
    assert resumed.status == straight.status == "finished"
    for a, b in zip(straight_trainer.trained, resumed_trainer.trained):
        assert torch.equal(a.parameter, b.parameter)
    for a, b in zip(straight_trainer.optimizer.masters, resumed_trainer.optimizer.masters):
        assert torch.equal(a, b)


def test_master_weights_are_refused_in_reference_mode():
    with pytest.raises(ValueError, match="reference=True.*master_weights=None"):
        RMUConfig(reference=True, master_weights="float32")
    with pytest.raises(ValueError, match="master_weights='float16'"):
        RMUConfig(master_weights="float16")


def test_master_weights_do_nothing_for_float32_tensors():
    trainer = bf16_trainer(dtype=torch.float32, master_weights="float32")
    assert isinstance(trainer.optimizer, LegacyAdamW)


def test_unlearn_with_master_weights_saves_the_rounded_masters(tmp_path):
    from safetensors.torch import load_file

    model, tokenizer = build_random_model("llama", n_layers=3, dtype=torch.bfloat16)
    config = RMUConfig(layer=2, steering_coeff=20.0, alpha=10.0, batch_size=2, max_batches=2, max_length=32,
                       retain_max_length=32, checkpoint_every=0, master_weights="float32")
    bridge = load_model(model, tokenizer=tokenizer)
    run = unlearn(bridge, {"bio": TEXTS}, TEXTS, config, out=tmp_path / "run", progress=False)
    saved = load_file(tmp_path / "run" / "model" / "model.safetensors")
    assert run.status == "finished"
    trained = hf_state_dict(bridge)
    for name in run.trained_parameters:
        hf_name = name.replace("blocks.", "model.layers.").replace(".mlp.out.", ".mlp.down_proj.")
        assert saved[hf_name].dtype == torch.bfloat16
        assert torch.equal(saved[hf_name], trained[hf_name])
