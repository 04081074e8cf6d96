"""Layer study on a tiny random model (the real sweep is a command users run): plumbing, restore, prefix sharing."""

from __future__ import annotations

import math

import pytest
import torch
from matplotlib.figure import Figure

from rmu_lens.audit.layers import LayerStudy, layer_study
from rmu_lens.eval import Question
from rmu_lens.rmu import RMUConfig, RMUTrainer
from rmu_lens.rmu.prefix import PrefixCache
from tests.helpers import snapshot, texts


def tiny_config(**overrides) -> RMUConfig:
    settings = dict(layer=1, steering_coeff=20.0, alpha=10.0, lr=1e-3, batch_size=2, max_batches=4, cycle=True,
                    max_length=32, retain_max_length=32, optimizer="adamw", checkpoint_every=0)
    return RMUConfig(**{**settings, **overrides})


def tiny_questions(n: int = 8) -> list[Question]:
    words = ["river", "mountain", "harbour", "desert", "castle", "voyage", "glacier", "festival"]
    return [Question(f"Where is the {words[i]}?", [words[(i + k) % 8] for k in range(4)], i % 4, "tiny", "tiny", f"t{i}")
            for i in range(n)]


def test_cached_prefixes_give_the_same_run_as_a_fresh_trainer(make_tiny):
    config = tiny_config(layer=2, update_layers=[1, 2])
    forget, retain = texts("bio", 8), texts("retain", 8)
    fresh_model = make_tiny("llama", n_layers=3, d_model=32, seed=0)
    fresh = RMUTrainer(fresh_model, forget, retain, config).train(None, progress=False)
    cache = PrefixCache()
    first_model = make_tiny("llama", n_layers=3, d_model=32, seed=0)
    RMUTrainer(first_model, forget, retain, config, prefix_cache=cache).train(None, progress=False)
    second_model = make_tiny("llama", n_layers=3, d_model=32, seed=0)
    misses = cache.misses
    shared = RMUTrainer(second_model, forget, retain, config, prefix_cache=cache).train(None, progress=False)
    assert cache.misses == misses and cache.hits > 0  # the second run computed no prefix itself
    for a, b in zip(fresh.history, shared.history):
        assert a["forget_loss"] == pytest.approx(b["forget_loss"], rel=1e-6)
        assert a["retain_loss"] == pytest.approx(b["retain_loss"], rel=1e-6, abs=1e-9)
    fresh_state, shared_state = snapshot(fresh_model), snapshot(second_model)
    assert all(torch.allclose(fresh_state[k], shared_state[k], atol=1e-6) for k in fresh_state)


def test_layer_study_sweeps_layers_and_modes_and_restores_the_model(make_tiny, tmp_path):
    model = make_tiny("llama", n_layers=3, d_model=32, seed=0)
    before = snapshot(model)
    study = layer_study(model, texts("bio", 8), texts("retain", 8), tiny_questions(), tiny_questions()[:4],
                        layers=[1, 2], config=tiny_config(), adaptive_beta=3.0, progress=False, out=tmp_path)
    after = snapshot(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [(p.layer, p.mode) for p in study.results] == [(1, "plain"), (1, "adaptive"), (2, "plain"), (2, "adaptive")]
    assert [p.update_layers for p in study.points("adaptive")] == [[0, 1], [0, 1, 2]]
    plain = study.points("plain")
    assert plain[0].steering_coeff == pytest.approx(plain[1].steering_coeff)  # one fixed c for every layer
    assert study.meta["prefix_cache"]["hits"] > 0  # plain and adaptive at one layer share the prefix
    for p in study.results:  # each recovery is measured between the base and THIS run's forget accuracy
        assert p.ablation_recovery.base_acc == pytest.approx(study.base["forget_acc"], abs=1e-12)
        assert p.ablation_recovery.unlearned_acc == pytest.approx(p.forget_acc, abs=1e-12)
        assert p.ablation_recovery.n == len(tiny_questions())
    assert isinstance(study.figure(), Figure)
    assert (tmp_path / "figures" / "layer_study.png").stat().st_size > 0
    loaded = LayerStudy.load(tmp_path / "layer_study.json")
    assert [p.forget_acc for p in loaded.results] == [p.forget_acc for p in study.results]
    for a, b in zip(loaded.results, study.results):
        ra, rb = a.ablation_recovery.recovery, b.ablation_recovery.recovery
        assert (math.isnan(ra) and math.isnan(rb)) or ra == pytest.approx(rb)
    assert "plain effective at layers" in study.table()


def test_layer_study_names_a_bad_layer_or_mode(make_tiny):
    model = make_tiny("llama", n_layers=3, d_model=32, seed=0)
    with pytest.raises(ValueError, match="within 0..2"):
        layer_study(model, texts("bio", 4), texts("retain", 4), tiny_questions(), layers=[5], config=tiny_config())
    with pytest.raises(ValueError, match="unknown"):
        layer_study(model, texts("bio", 4), texts("retain", 4), tiny_questions(), layers=[1], config=tiny_config(), modes=["fancy"])


def test_effective_layers_need_both_removal_and_retention():
    from rmu_lens.audit.layers import LayerPoint

    def point(layer, mode, forget, retain):
        return LayerPoint(layer, mode, [layer], 1.0, forget, retain, None, 0.0, 1.0, 0.0)

    study = LayerStudy(
        layers=[1, 2, 3], modes=["plain", "adaptive"], base={"forget_acc": 0.95, "retain_acc": 0.9},
        results=[point(1, "plain", 0.3, 0.9), point(2, "plain", 0.9, 0.9), point(3, "plain", 0.3, 0.5),
                 point(1, "adaptive", 0.3, 0.88), point(2, "adaptive", 0.35, 0.85), point(3, "adaptive", 0.65, 0.9)],
        config={}, chance=0.25,
    )
    assert study.effective_layers("plain") == [1]  # layer 2 removed too little, layer 3 broke retain
    assert study.effective_layers("adaptive") == [1, 2]  # layer 3 removed 0.30 of the 0.70 above chance
    assert "supports the claim" in study.verdict()


def test_each_layer_study_point_is_the_run_its_settings_describe(make_tiny):
    # Reference: a fresh model trained with the settings the study documents for a point
    # (layer l, update layers l-2..l clipped at 0, plain c fixed / adaptive beta), then evaluated.
    from rmu_lens.eval import evaluate
    from rmu_lens.rmu import unlearn

    forget, retain, questions = texts("bio", 8), texts("retain", 8), tiny_questions()
    study = layer_study(make_tiny("llama", n_layers=3, d_model=32, seed=0), forget, retain, questions, questions[:4],
                        layers=[2], config=tiny_config(), steering_coeff=15.0, adaptive_beta=3.0, ablation=False,
                        share_prefix=False, progress=False)
    base_model = make_tiny("llama", n_layers=3, d_model=32, seed=0)
    assert study.base["forget_acc"] == evaluate(base_model, questions, progress=False).accuracy
    for point in study.results:
        settings = dict(layer=point.layer, update_layers=list(range(max(0, point.layer - 2), point.layer + 1)))
        settings |= {"steering_coeff": 15.0} if point.mode == "plain" else {"adaptive_beta": 3.0}
        model = make_tiny("llama", n_layers=3, d_model=32, seed=0)
        run = unlearn(model, forget, retain, tiny_config(**settings), progress=False)
        assert point.update_layers == settings["update_layers"]
        assert point.steering_coeff == pytest.approx(run.steering_coeffs["forget"], rel=1e-6)
        assert point.forget_acc == evaluate(model, questions, progress=False).accuracy
        assert point.retain_acc == evaluate(model, questions[:4], progress=False).accuracy
        assert point.final_forget_norm == pytest.approx(run.history[-1]["forget_norm"], rel=1e-5)
        assert point.final_retain_cos == pytest.approx(run.history[-1]["retain_cos"], rel=1e-5)
