"""rmu_lens's trainer against a plain re-implementation of the official RMU loop (tests/reference_rmu.py).

``reference=True`` must reproduce the official code step by step: same per-step forget and retain
losses, same trained weights, on batches with padding and truncation, two forget topics and one
retain set (so each retain batch is used twice, once per topic, and rmu_lens reuses its frozen
activations while the reference recomputes them). The default (masked) mode is compared with the
same loop under masked semantics (right padding, real positions, means over real tokens).
Both modes are also run with one retain set per topic, so that each step must read its own topic's
retain batch (the frozen retain activations may only be reused for the same set and batch).
"""

from __future__ import annotations

import copy
import random

import pytest
import torch

from reference_rmu import TransformersV4AdamW, chunk, decoder_layers, run_reference_rmu, use_eager_attention
from rmu_lens.models import build_random_model, hf_model_of, load_model, readable_name
from rmu_lens.rmu import RMUConfig, unlearn
from rmu_lens.rmu.optim import LegacyAdamW
from tests.helpers import single_thread  # noqa: F401  a fixture used by pytestmark

N_LAYERS, D_MODEL, LAYER, UPDATE_LAYERS = 5, 32, 3, [1, 2, 3]
BATCH_SIZE = 2
FORGET_MAX_LENGTHS, RETAIN_MAX_LENGTH = [24, 30], 20
STEERING_COEFFS, ALPHAS = [4.0, 6.0], [10.0, 20.0]
LR = 1e-3  # large enough that 7 steps move the weights far beyond the comparison tolerance
SEED = 42
TRAINED_HF_PARAM = "mlp.down_proj.weight"
# Relative loss tolerance (the spec) and weight tolerance in units of the initial weights' max |w|.
LOSS_RTOL, WEIGHT_ATOL_REL = 1e-5, 1e-6


pytestmark = pytest.mark.usefixtures("single_thread")


def make_texts(seed: int, lengths: list[int]) -> list[str]:
    """Texts of the given character lengths (the byte tokenizer gives one token per character)."""
    rng = random.Random(seed)
    return ["".join(rng.choice("abcdefghij klmnopqrs.,") for _ in range(n)) for n in lengths]


# Lengths straddle the max lengths (padding within batches, truncation of some texts). Chunked by 2:
# bio 7 batches, cyber 8, retain 9 -> the official step count min(100, 7, 8, 9) = 7.
BIO = make_texts(1, [5, 37, 12, 28, 3, 40, 19, 8, 33, 21, 14, 6, 26, 30])
CYBER = make_texts(2, [31, 9, 4, 36, 22, 17, 39, 11, 7, 25, 35, 2, 16, 29, 38, 10])
RETAIN = make_texts(3, [18, 4, 27, 9, 13, 33, 6, 22, 30, 11, 3, 25, 15, 8, 21, 35, 12, 7])
EXPECTED_STEPS = 7


def unit_vectors(seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    vectors = [torch.rand(D_MODEL, generator=generator) for _ in STEERING_COEFFS]
    return [v / v.norm() for v in vectors]


def official_seeded_vectors(seed: int) -> list[torch.Tensor]:
    """The official draw: ``torch.manual_seed(seed)`` then ``torch.rand(1, 1, d_model)`` per topic (CPU)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return [torch.rand(1, 1, D_MODEL).reshape(-1) for _ in STEERING_COEFFS]


def trained_param_index(model) -> int:
    """Index of the trained tensor in a decoder layer's ``parameters()`` (the official ``param_ids``)."""
    names = [name for name, _ in decoder_layers(model)[UPDATE_LAYERS[0]].named_parameters()]
    return names.index(TRAINED_HF_PARAM)


def trained_names() -> list[str]:
    return [f"model.layers.{i}.{TRAINED_HF_PARAM}" for i in UPDATE_LAYERS]


def config_for(*, reference: bool) -> RMUConfig:
    return RMUConfig(
        layer=LAYER, update_layers=UPDATE_LAYERS, param_names=["blocks.{layer}.mlp.out.weight"],
        steering_coeff=STEERING_COEFFS, alpha=ALPHAS, lr=LR, batch_size=BATCH_SIZE, max_batches=100,
        max_length=FORGET_MAX_LENGTHS, retain_max_length=RETAIN_MAX_LENGTH, seed=SEED, reference=reference,
        checkpoint_every=0,
    )


def run_reference(model, tokenizer, vectors: list[torch.Tensor], *, mode: str, optimizer: str = "transformers_v4",
                  retain_sets: list[list[str]] | None = None):
    """The official loop on two eager copies of ``model``; returns (history, trained weights).

    ``retain_sets``: one retain set per topic (the official ``retain_data_list``); RETAIN for both if None.
    """
    updated = use_eager_attention(copy.deepcopy(model))
    frozen = use_eager_attention(copy.deepcopy(model))
    retain_sets = retain_sets or [RETAIN, RETAIN]
    history = run_reference_rmu(
        updated, frozen, tokenizer,
        [chunk(BIO, BATCH_SIZE), chunk(CYBER, BATCH_SIZE)], [chunk(r, BATCH_SIZE) for r in retain_sets],
        layer_id=LAYER, layer_ids=UPDATE_LAYERS, param_ids=[trained_param_index(updated)],
        control_unit_vectors=vectors, steering_coeffs=STEERING_COEFFS, alphas=ALPHAS, lr=LR,
        max_num_batches=100, forget_max_lengths=FORGET_MAX_LENGTHS, retain_max_length=RETAIN_MAX_LENGTH,
        mode=mode, optimizer=optimizer,
    )
    return history, {n: updated.get_parameter(n).detach().clone() for n in trained_names()}


def run_both(architecture: str, *, reference: bool, seeded: bool, pad_token: str | None = None,
             retain_sets: list[list[str]] | None = None) -> dict:
    """Train the same tiny model with rmu_lens and with the reference; return histories and weights.

    ``retain_sets``: one retain set per topic; one shared RETAIN set if None.
    """
    model, tokenizer = build_random_model(architecture, n_layers=N_LAYERS, d_model=D_MODEL, n_heads=4, seed=0)
    if pad_token is not None:
        tokenizer.pad_token = pad_token
    initial = {n: model.get_parameter(n).detach().clone() for n in trained_names()}
    vectors = official_seeded_vectors(SEED) if seeded else unit_vectors(7)
    # The reference copies the model first: the bridge rewrites the HF model in place.
    history, reference_weights = run_reference(
        model, tokenizer, vectors, mode="official" if reference else "masked", retain_sets=retain_sets
    )
    bridge = load_model(model, tokenizer=copy.deepcopy(tokenizer))
    run = unlearn(
        bridge, {"bio": BIO, "cyber": CYBER}, retain_sets or RETAIN, config_for(reference=reference),
        control_vectors=None if seeded else vectors, progress=False,
    )
    lens_weights = {readable_name(n): p.detach().clone() for n, p in hf_model_of(bridge).named_parameters()}
    return {
        "lens_history": run.history,
        "reference_history": history,
        "lens_weights": {n: lens_weights[n] for n in trained_names()},
        "reference_weights": reference_weights,
        "initial_weights": initial,
    }


def assert_losses_match(result: dict) -> None:
    lens, ref = result["lens_history"], result["reference_history"]
    assert len(lens) == len(ref) == EXPECTED_STEPS
    for key in ("forget_loss", "retain_loss"):
        torch.testing.assert_close(
            torch.tensor([r[key] for r in lens], dtype=torch.float64),
            torch.tensor([r[key] for r in ref], dtype=torch.float64),
            rtol=LOSS_RTOL, atol=1e-12, msg=lambda m, key=key: f"per-step {key} differs from the official loop: {m}",
        )


def assert_weights_match(result: dict) -> None:
    for name in trained_names():
        initial = result["initial_weights"][name]
        atol = WEIGHT_ATOL_REL * initial.abs().max().item()
        moved = (result["reference_weights"][name] - initial).abs().max().item()
        assert moved > 1000 * atol, f"{name} barely moved ({moved}); the comparison would be vacuous"
        torch.testing.assert_close(result["lens_weights"][name], result["reference_weights"][name], rtol=0, atol=atol)


@pytest.fixture(scope="module", params=["llama", "mistral", "qwen2"])
def reference_parity(request) -> dict:
    # Qwen2 takes the seeded path: rmu_lens draws u itself and must match the official draw.
    return run_both(request.param, reference=True, seeded=request.param == "qwen2")


def test_parity_data_has_padding_and_truncation() -> None:
    for texts, limit in ((BIO, FORGET_MAX_LENGTHS[0]), (CYBER, FORGET_MAX_LENGTHS[1]), (RETAIN, RETAIN_MAX_LENGTH)):
        lengths = [len(t) for t in texts]
        assert max(lengths) > limit, "some text must be truncated"
        assert any(len({len(t) for t in batch}) > 1 for batch in chunk(texts, BATCH_SIZE)), "batches must pad"


def test_official_param_index_six_is_down_proj_for_llama_and_mistral() -> None:
    for architecture in ("llama", "mistral"):
        model, _ = build_random_model(architecture, n_layers=2, d_model=16, n_heads=2)
        assert trained_param_index(model) == 6


def test_reference_mode_runs_the_official_number_of_steps(reference_parity) -> None:
    assert len(reference_parity["lens_history"]) == len(reference_parity["reference_history"]) == EXPECTED_STEPS
    assert [r["topic"] for r in reference_parity["lens_history"]] == ["bio", "cyber"] * 3 + ["bio"]


def test_reference_mode_per_step_losses_match_official(reference_parity) -> None:
    assert_losses_match(reference_parity)


def test_reference_mode_trained_weights_match_official(reference_parity) -> None:
    assert_weights_match(reference_parity)


def test_seeded_control_vectors_are_the_official_cpu_draw() -> None:
    official_vectors = official_seeded_vectors(SEED)
    model, tokenizer = build_random_model("llama", n_layers=N_LAYERS, d_model=D_MODEL, n_heads=4)
    config = RMUConfig(layer=LAYER, batch_size=BATCH_SIZE, max_batches=1, seed=SEED, checkpoint_every=0)
    run = unlearn(load_model(model, tokenizer=tokenizer), {"bio": BIO, "cyber": CYBER}, RETAIN, config, progress=False)
    for topic, official in zip(("bio", "cyber"), official_vectors):
        torch.testing.assert_close(run.control_vectors[topic], official / official.norm(), rtol=0, atol=1e-7)


def test_default_mode_with_retain_reuse_matches_reference_that_recomputes() -> None:
    # Two topics, one retain set: steps 2k and 2k+1 share retain batch k. rmu_lens reuses the frozen
    # retain activations of step 2k at step 2k+1; the reference recomputes them with a frozen model.
    result = run_both("llama", reference=False, seeded=False)
    assert_losses_match(result)
    assert_weights_match(result)


# A second retain set for the cyber topic, as long as RETAIN (9 batches) so the step count stays 7.
# Step 2k (bio) and step 2k+1 (cyber) then read batch k of DIFFERENT retain sets: a frozen-retain
# cache keyed by the batch index alone would hand cyber the bio retain batch.
RETAIN_CYBER = make_texts(4, [24, 7, 3, 31, 16, 10, 28, 5, 19, 36, 12, 9, 22, 14, 6, 33, 17, 26])


@pytest.mark.parametrize("reference", [True, False], ids=["reference", "default"])
def test_per_topic_retain_sets_match_the_official_loop(reference: bool) -> None:
    assert len(chunk(RETAIN_CYBER, BATCH_SIZE)) == len(chunk(RETAIN, BATCH_SIZE))
    assert all(a != b for a, b in zip(chunk(RETAIN, BATCH_SIZE), chunk(RETAIN_CYBER, BATCH_SIZE)))
    result = run_both("llama", reference=reference, seeded=False, retain_sets=[RETAIN, RETAIN_CYBER])
    assert_losses_match(result)
    assert_weights_match(result)


def test_reference_mode_pads_with_eos_whatever_the_tokenizers_pad_token() -> None:
    # The official code sets pad_token_id = eos_token_id; with left padding and means over all
    # positions, the pad token's embedding enters the losses. Tokenizers such as Qwen2's have a pad
    # token that is not EOS.
    result = run_both("llama", reference=True, seeded=False, pad_token="<|bos|>")
    assert_losses_match(result)


def test_weight_tolerance_would_catch_torch_adamw() -> None:
    # The official loop trained with torch.optim.AdamW(eps=1e-6) ends far outside the tolerance the
    # parity tests use, so a trainer that swapped optimizers could not pass them.
    model, tokenizer = build_random_model("llama", n_layers=N_LAYERS, d_model=D_MODEL, n_heads=4, seed=0)
    vectors = unit_vectors(7)
    _, legacy = run_reference(model, tokenizer, vectors, mode="official")
    _, swapped = run_reference(model, tokenizer, vectors, mode="official", optimizer="torch")
    for name in trained_names():
        atol = WEIGHT_ATOL_REL * model.get_parameter(name).abs().max().item()
        assert (legacy[name] - swapped[name]).abs().max().item() > 100 * atol


def _optimizer_trajectories(make_optimizer, gradients: list[torch.Tensor], start: torch.Tensor) -> list[torch.Tensor]:
    parameter = torch.nn.Parameter(start.clone())
    optimizer = make_optimizer([parameter])
    values = []
    for gradient in gradients:
        parameter.grad = gradient.clone()
        optimizer.step()
        values.append(parameter.detach().clone())
    return values


def _small_gradients(steps: int = 6) -> list[torch.Tensor]:
    # Gradients near eps, as for weights whose activations barely move: where the two AdamWs part.
    generator = torch.Generator().manual_seed(0)
    return [1e-5 * torch.randn(64, generator=generator, dtype=torch.float64) for _ in range(steps)]


def test_legacy_adamw_follows_the_transformers_v4_formula() -> None:
    gradients, start = _small_gradients(), torch.zeros(64, dtype=torch.float64)
    lens = _optimizer_trajectories(lambda p: LegacyAdamW(p, lr=5e-5, eps=1e-6), gradients, start)
    ref = _optimizer_trajectories(lambda p: TransformersV4AdamW(p, lr=5e-5, eps=1e-6), gradients, start)
    for a, b in zip(lens, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


def test_legacy_adamw_first_step_is_torch_adamw_with_eps_scaled_by_bias_correction() -> None:
    # eps is added to sqrt(v) before the bias correction: at step t it acts as eps / sqrt(1 - b2^t)
    # in torch's parameterisation, ~31.6x larger at t = 1.
    gradients, start = _small_gradients(1), torch.zeros(64, dtype=torch.float64)
    legacy = _optimizer_trajectories(lambda p: LegacyAdamW(p, lr=5e-5, eps=1e-6), gradients, start)[0]
    scaled = _optimizer_trajectories(
        lambda p: torch.optim.AdamW(p, lr=5e-5, eps=1e-6 / (1 - 0.999) ** 0.5, weight_decay=0.0), gradients, start
    )[0]
    plain = _optimizer_trajectories(lambda p: torch.optim.AdamW(p, lr=5e-5, eps=1e-6, weight_decay=0.0), gradients, start)[0]
    torch.testing.assert_close(legacy, scaled, rtol=1e-12, atol=0)
    assert (legacy - plain).abs().max() > 0.1 * plain.abs().max()
