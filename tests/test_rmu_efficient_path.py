"""The efficient RMU step computes exactly what a full forward through the bridge reads at the hook point.

rmu_lens trains one model in place: it runs only blocks first..l (``BlockRunner``), shares the frozen
blocks below ``first``, and gets the frozen activations from the same blocks with frozen copies of
the trained tensors swapped in. The independent reference here is the TransformerBridge itself:
``run_with_cache`` / ``run_with_hooks`` at ``blocks.{l}.hook_resid_post`` with ``stop_at_layer=l+1``,
and for frozen activations a second bridge over an identical, untouched model. Default (masked)
mode: right padding, position ids ``cumsum(mask) - 1``, means over real tokens.
"""

from __future__ import annotations

import copy
import random

import pytest
import torch
import torch.nn.functional as F

from rmu_lens.models import build_random_model, hf_model_of, load_model, readable_name
from rmu_lens.rmu import RMUConfig, RMUTrainer, unlearn
from rmu_lens.rmu.runner import BlockRunner
from tests.helpers import single_thread  # noqa: F401  a fixture used by pytestmark

N_LAYERS, D_MODEL, LAYER, FIRST = 5, 32, 3, 1
UPDATE_LAYERS = [1, 2, 3]
HOOK = f"blocks.{LAYER}.hook_resid_post"
STEERING_COEFF, ALPHA = 4.0, 10.0
MAX_LENGTH, RETAIN_MAX_LENGTH = 16, 12
TRAINED_HF_NAME = {"llama": "model.layers.{i}.mlp.down_proj.weight", "gpt2": "transformer.h.{i}.mlp.c_proj.weight"}


def make_texts(seed: int, lengths: list[int]) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice("abcdefghij klmnopqrs.,") for _ in range(n)) for n in lengths]


FORGET_A = make_texts(1, [5, 19, 12, 28, 3, 9, 21, 14])
FORGET_B = make_texts(2, [17, 4, 25, 8, 11, 30, 6, 13])
RETAIN = make_texts(3, [9, 22, 4, 15, 18, 3, 26, 7])


pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_bridge(architecture: str):
    model, tokenizer = build_random_model(architecture, n_layers=N_LAYERS, d_model=D_MODEL, n_heads=4, seed=0)
    return load_model(model, tokenizer=tokenizer), tokenizer


def right_padded(tokenizer, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.padding_side, tokenizer.truncation_side = "right", "right"
    encoded = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
    return encoded["input_ids"], encoded["attention_mask"]


def real_positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


def masked_mse(h: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    keep = mask.bool()
    return F.mse_loss(h[keep], target.expand_as(h)[keep])


def hf_parameter(bridge, hf_name: str) -> torch.nn.Parameter:
    for name, parameter in hf_model_of(bridge).named_parameters():
        if readable_name(name) == hf_name:
            return parameter
    raise KeyError(hf_name)


def trained_parameters(bridge, architecture: str) -> list[torch.nn.Parameter]:
    return [hf_parameter(bridge, TRAINED_HF_NAME[architecture].format(i=i)) for i in UPDATE_LAYERS]


def bridge_hook_activations(bridge, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``blocks.{LAYER}.hook_resid_post`` from a full bridge forward, with its autograd graph."""
    captured = []
    bridge.run_with_hooks(
        ids, fwd_hooks=[(HOOK, lambda activation, hook: captured.append(activation))],
        stop_at_layer=LAYER + 1, attention_mask=mask,
    )
    return captured[0]


def frozen_hook_activations(bridge, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    _, cache = bridge.run_with_cache(ids, attention_mask=mask, names_filter=[HOOK], stop_at_layer=LAYER + 1)
    return cache[HOOK]


def target_vector() -> torch.Tensor:
    raw = torch.rand(D_MODEL, generator=torch.Generator().manual_seed(5))
    return STEERING_COEFF * raw / raw.norm()


def perturb(parameters: list[torch.nn.Parameter], seed: int = 0) -> None:
    """Move trained tensors away from their initial values, so the retain loss is not zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in parameters:
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))


def assert_close_scaled(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5) -> None:
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * expected.abs().max().item())


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_block_runner_output_equals_bridge_hook_point_on_real_tokens(architecture: str) -> None:
    bridge, tokenizer = tiny_bridge(architecture)
    ids, mask = right_padded(tokenizer, FORGET_A[:4], MAX_LENGTH)
    assert (mask == 0).any()
    runner = BlockRunner(bridge, FIRST, LAYER)
    with torch.no_grad():
        fast = runner.run(runner.prefix(ids, mask, real_positions(mask)))
    full = frozen_hook_activations(bridge, ids, mask)
    keep = mask.bool()
    assert_close_scaled(fast[keep], full[keep])


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_block_runner_overrides_a_tensor_given_by_its_hf_name(architecture: str) -> None:
    # The frozen path passes the frozen copies of the trained tensors by HF name
    # (``model.layers.2.mlp.down_proj.weight``): the override must reach the block.
    bridge, tokenizer = tiny_bridge(architecture)
    ids, mask = right_padded(tokenizer, RETAIN[:4], RETAIN_MAX_LENGTH)
    name = TRAINED_HF_NAME[architecture].format(i=2)
    parameter = hf_parameter(bridge, name)
    replacement = parameter.detach() + 0.05 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1))
    runner = BlockRunner(bridge, FIRST, LAYER)
    with torch.no_grad():
        overridden = runner.run(runner.prefix(ids, mask, real_positions(mask)), {name: replacement})
        original = parameter.detach().clone()
        parameter.copy_(replacement)
        expected = frozen_hook_activations(bridge, ids, mask)
        parameter.copy_(original)
    keep = mask.bool()
    assert_close_scaled(overridden[keep], expected[keep])


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_block_runner_override_leaves_the_models_own_tensors_in_place(architecture: str) -> None:
    # The bridge reaches some submodules by several paths (GPT-2: ``mlp.out`` is ``mlp.c_proj``):
    # swapping a tensor in for one call must not leave it in the model afterwards.
    bridge, tokenizer = tiny_bridge(architecture)
    ids, mask = right_padded(tokenizer, RETAIN[:4], RETAIN_MAX_LENGTH)
    model = hf_model_of(bridge)
    before = {name: tensor for name, tensor in model.named_parameters(remove_duplicate=False)}
    name = TRAINED_HF_NAME[architecture].format(i=2)
    replacement = hf_parameter(bridge, name).detach() * 2.0
    runner = BlockRunner(bridge, FIRST, LAYER)
    with torch.no_grad():
        runner.run(runner.prefix(ids, mask, real_positions(mask)), {name: replacement})
    after = dict(model.named_parameters(remove_duplicate=False))
    assert after.keys() == before.keys()
    swapped = [readable_name(n) for n in before if after[n] is not before[n]]
    assert swapped == []


@pytest.mark.parametrize("loss", ["forget", "retain"])
@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_block_runner_masked_loss_gradients_equal_full_bridge_forward(architecture: str, loss: str) -> None:
    bridge, tokenizer = tiny_bridge(architecture)
    ids, mask = right_padded(tokenizer, (FORGET_A if loss == "forget" else RETAIN)[:4], MAX_LENGTH)
    params = trained_parameters(bridge, architecture)
    target = target_vector() if loss == "forget" else frozen_hook_activations(bridge, ids, mask)
    perturb(params)
    for parameter in params:
        parameter.requires_grad_(True)
    runner = BlockRunner(bridge, FIRST, LAYER)
    fast_loss = masked_mse(runner.run(runner.prefix(ids, mask, real_positions(mask))), target, mask)
    full_loss = masked_mse(bridge_hook_activations(bridge, ids, mask), target, mask)
    assert full_loss.item() > 0
    assert_close_scaled(fast_loss, full_loss)
    for fast_grad, full_grad in zip(torch.autograd.grad(fast_loss, params), torch.autograd.grad(full_loss, params)):
        assert full_grad.abs().max() > 0
        assert_close_scaled(fast_grad, full_grad, rtol=1e-4)


def trainer_config(**overrides) -> RMUConfig:
    settings = dict(
        layer=LAYER, update_layers=UPDATE_LAYERS, steering_coeff=STEERING_COEFF, alpha=ALPHA, lr=1e-3,
        batch_size=2, max_batches=100, max_length=MAX_LENGTH, retain_max_length=RETAIN_MAX_LENGTH,
        checkpoint_every=0,
    )
    settings.update(overrides)
    return RMUConfig(**settings)


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_trainer_step_losses_and_gradients_equal_full_bridge_forward(architecture: str) -> None:
    # Step 2 of two topics uses topic A's batch 1 and retain batch 1, first seen at this step (no
    # reuse), after two updates: forget and retain losses and their gradients are both non-trivial.
    bridge, tokenizer = tiny_bridge(architecture)
    frozen_bridge, _ = tiny_bridge(architecture)  # same seed: the untouched original weights
    target = target_vector()
    trainer = RMUTrainer(
        bridge, {"a": FORGET_A, "b": FORGET_B}, RETAIN, trainer_config(), control_vectors=[target, target]
    )
    trainer.train_step()
    trainer.train_step()

    forget_ids, forget_mask = right_padded(tokenizer, FORGET_A[2:4], MAX_LENGTH)
    retain_ids, retain_mask = right_padded(tokenizer, RETAIN[2:4], RETAIN_MAX_LENGTH)
    params = trained_parameters(bridge, architecture)
    forget_loss = masked_mse(bridge_hook_activations(bridge, forget_ids, forget_mask), target, forget_mask)
    frozen_retain = frozen_hook_activations(frozen_bridge, retain_ids, retain_mask)
    retain_loss = ALPHA * masked_mse(bridge_hook_activations(bridge, retain_ids, retain_mask), frozen_retain, retain_mask)
    expected_grads = torch.autograd.grad(forget_loss + retain_loss, params)

    record = trainer.train_step()
    assert record["step"] == 2 and record["topic"] == "a"
    assert retain_loss.item() > 0
    torch.testing.assert_close(record["forget_loss"], forget_loss.item(), rtol=1e-5, atol=0)
    torch.testing.assert_close(record["retain_loss"], retain_loss.item(), rtol=1e-4, atol=0)
    for parameter, expected in zip(params, expected_grads):
        assert_close_scaled(parameter.grad, expected, rtol=1e-4)


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_unlearn_changes_only_the_chosen_tensors(architecture: str) -> None:
    bridge, _ = tiny_bridge(architecture)
    model = hf_model_of(bridge)
    named = list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers(remove_duplicate=False))
    before = {name: tensor.detach().clone() for name, tensor in named}
    run = unlearn(bridge, {"a": FORGET_A, "b": FORGET_B}, RETAIN, trainer_config(max_batches=4), progress=False)
    state = bridge.state_dict(keep_vars=True)
    chosen = {id(state[name]) for name in run.trained_parameters}
    assert len(chosen) == len(UPDATE_LAYERS)
    seen_chosen = set()
    for name, tensor in named:
        if id(tensor) in chosen:
            seen_chosen.add(id(tensor))
            assert not torch.equal(tensor, before[name]), f"{readable_name(name)} was chosen but did not change"
        else:
            assert torch.equal(tensor, before[name]), f"{readable_name(name)} was not chosen but changed"
    assert seen_chosen == chosen


@pytest.mark.parametrize("reference", [False, True], ids=["default", "reference"])
def test_first_step_retain_loss_is_exactly_zero(reference: bool) -> None:
    bridge, _ = tiny_bridge("llama")
    run = unlearn(bridge, {"a": FORGET_A, "b": FORGET_B}, RETAIN, trainer_config(max_batches=1, reference=reference), progress=False)
    assert run.history[0]["retain_loss"] == 0.0
    assert run.history[0]["forget_loss"] > 0.0
