"""Direction ablation on tiny random models: the projection, the hooks inside evaluate(), planted directions."""

from __future__ import annotations

import pytest
import torch

from rmu_lens.audit.ablation import (
    HOOK_TEMPLATE,
    ablated,
    default_layer_sets,
    estimate_directions,
    projection_hook,
)
from rmu_lens.eval import Question, evaluate
from tests.helpers import texts


def tiny_questions(n: int = 6) -> list[Question]:
    words = ["river", "mountain", "harbour", "desert", "castle", "voyage", "glacier", "festival"]
    return [
        Question(f"Where is the {words[i % 8]}?", [words[(i + k) % 8] for k in range(4)], i % 4, "tiny", "tiny", f"t{i}")
        for i in range(n)
    ]


def test_projection_removes_exactly_the_component_along_the_direction():
    generator = torch.Generator().manual_seed(0)
    h = torch.randn(3, 5, 16, generator=generator)
    direction = torch.randn(16, generator=generator) * 7.0
    out = projection_hook(direction)(h.clone())
    unit = direction.double() / direction.double().norm()
    expected = h.double() - (h.double() @ unit).unsqueeze(-1) * unit  # float64 reference
    assert torch.allclose(out.double(), expected, atol=1e-5)
    assert (out.double() @ unit).abs().max() < 1e-5


def test_projection_refuses_a_zero_direction():
    with pytest.raises(ValueError, match="zero direction"):
        projection_hook(torch.zeros(8))


def test_ablation_hooks_change_evaluate_loglikelihoods_and_are_removed_afterwards(make_tiny):
    model = make_tiny("llama", n_layers=3, d_model=32, seed=0)
    questions = tiny_questions()
    before = evaluate(model, questions, progress=False)
    direction = torch.randn(32, generator=torch.Generator().manual_seed(1))
    with ablated(model, {1: direction}):
        during = evaluate(model, questions, progress=False)
    after = evaluate(model, questions, progress=False)
    changed = [abs(a - b) for r0, r1 in zip(before.records, during.records) for a, b in zip(r0["loglikelihoods"], r1["loglikelihoods"])]
    assert max(changed) > 1e-3
    assert [r["loglikelihoods"] for r in after.records] == [r["loglikelihoods"] for r in before.records]


def test_ablation_hook_sits_on_the_residual_stream_the_hook_point_reports(make_tiny):
    model = make_tiny("llama", n_layers=3, d_model=32, seed=0)
    ids = torch.tensor([[5, 9, 11, 40, 7]])
    direction = torch.randn(32, generator=torch.Generator().manual_seed(2))
    seen = {}

    def record(x, hook):
        seen["h"] = x.detach().clone()
        return x

    with ablated(model, {1: direction}):
        model.run_with_hooks(ids, fwd_hooks=[(HOOK_TEMPLATE.format(layer=1), record)], stop_at_layer=2)
    unit = direction / direction.norm()
    assert (seen["h"] @ unit).abs().max() < 1e-4  # what later layers read has no component along d


def test_estimate_recovers_a_planted_shift_at_the_planted_layer(make_tiny):
    base = make_tiny("llama", n_layers=3, d_model=32, seed=0)
    unlearned = make_tiny("llama", n_layers=3, d_model=32, seed=0)
    planted = torch.randn(32, generator=torch.Generator().manual_seed(3)) * 5.0
    unlearned.add_hook(HOOK_TEMPLATE.format(layer=1), lambda x, hook: x + planted)
    try:
        directions = estimate_directions(base, unlearned, texts("bio", 12), [0, 1], batch_size=4, max_length=64,
                                         control_vectors={"bio": planted})
    finally:
        unlearned.reset_hooks()
    assert torch.allclose(directions.vectors["mean_diff"][1].double(), planted.double(), atol=1e-3)
    assert directions.vectors["mean_diff"][0].norm() < 1e-5  # layer 0 is untouched
    unit = planted / planted.norm()
    assert float(directions.vectors["pca"][1] @ unit) > 0.99
    assert directions.stats[1]["cos_control_vector"]["bio"] == pytest.approx(1.0, abs=1e-4)
    assert "first 1 token" in directions.exclusions


def test_random_control_directions_have_the_mean_difference_norms(make_tiny):
    base = make_tiny("llama", n_layers=2, d_model=32, seed=0)
    unlearned = make_tiny("llama", n_layers=2, d_model=32, seed=1)
    directions = estimate_directions(base, unlearned, texts("bio", 6), [0, 1], batch_size=3, max_length=32)
    random = directions.random_like(seed=0)
    for layer in (0, 1):
        assert random[layer].norm() == pytest.approx(float(directions.vectors["mean_diff"][layer].norm()), rel=1e-5)
        cos = float(random[layer] @ directions.vectors["mean_diff"][layer]) / float(random[layer].norm() * directions.vectors["mean_diff"][layer].norm())
        assert abs(cos) < 0.9


def test_estimate_rejects_models_of_different_shapes(make_tiny):
    with pytest.raises(ValueError, match="differ in shape"):
        estimate_directions(make_tiny(n_layers=2, d_model=32), make_tiny(n_layers=3, d_model=32), texts("bio", 3), [0])


def test_default_layer_sets_are_read_layer_trained_layers_and_everything_after():
    assert default_layer_sets(7, [5, 6, 7], 10) == [[7], [5, 6, 7], [5, 6, 7, 8, 9]]
    assert default_layer_sets(3, [3], 4) == [[3]]
