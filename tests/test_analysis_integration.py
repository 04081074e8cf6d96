"""analyze() end to end: tiny random models (fast), then the trained testbed and SmolLM2 (integration)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import rmu_lens as rl
from rmu_lens.analysis import Analysis, analyze, analyze_run
from rmu_lens.eval import Question
from rmu_lens.eval.compare import Comparison, SubjectChange
from tests.helpers import texts

LAYER = 1


def tiny_questions() -> list[Question]:
    choices = ["red", "blue", "green", "black"]
    return [Question(f"What colour is thing {i}?", choices, i % 4, "bio" if i % 2 else "cyber", "t", f"q{i}")
            for i in range(20)]


def tiny_inputs(make_tiny):
    base = make_tiny("llama", n_layers=3, d_model=32, seed=0)
    unlearned = make_tiny("llama", n_layers=3, d_model=32, seed=0)
    with torch.no_grad():  # a visible edit at layer 1, nothing before it
        unlearned.blocks[LAYER].mlp.out.weight.mul_(3.0)
    datasets = {"bio": (texts("bio", 10), "forget"), "retain": (texts("retain", 10), "retain"),
                "cyber": (texts("cyber", 10), "adjacent")}
    u = torch.rand(32, generator=torch.Generator().manual_seed(0))
    return base, unlearned, datasets, {"bio": u / u.norm()}, {"bio": 20.0}


def test_analyze_on_tiny_models_fills_every_part(make_tiny, tmp_path):
    base, unlearned, datasets, vectors, coeffs = tiny_inputs(make_tiny)
    comparison = Comparison("acc", [SubjectChange("bio", "forget", 40, 0.9, 0.3, -0.6, -0.7, -0.5),
                                    SubjectChange("cyber", "collateral", 40, 0.9, 0.8, -0.1, -0.2, 0.0)], [])
    analysis = analyze(base, unlearned, datasets, control_vectors=vectors, steering_coeffs=coeffs, layer=LAYER,
                       questions=tiny_questions(), comparison=comparison, probe_folds=2, progress=False)
    collapse = analysis.collapse
    assert collapse.layers == [0, 1, 2]
    # Nothing changed before the edited block: base and unlearned agree exactly at layer 0.
    assert collapse.value("bio", "cos_unlearned_base", layer=0) == pytest.approx(1.0, abs=1e-6)
    assert collapse.value("bio", "cos_unlearned_base", layer=1) < 0.999
    assert set(analysis.probes) == {"domain", "knowledge"}
    assert analysis.probes["knowledge"].chance == 0.25
    assert [r["domain"] for r in analysis.damage.rows] == ["bio", "cyber"]
    summary = analysis.summary()
    assert summary["datasets"]["bio"]["steering_coeff"] == 20.0
    assert set(collapse.pca["points"]) == set(datasets)
    analysis.save(tmp_path / "out")
    loaded = Analysis.load(tmp_path / "out")
    assert loaded.to_dict() == json.loads(json.dumps(analysis.to_dict()))
    assert (tmp_path / "out" / "analysis.json").stat().st_size < 2_000_000


def test_analyze_refuses_one_model_as_both(make_tiny):
    base, _, datasets, vectors, coeffs = tiny_inputs(make_tiny)
    with pytest.raises(ValueError, match="same object"):
        analyze(base, base, datasets, control_vectors=vectors, steering_coeffs=coeffs, layer=LAYER, progress=False)


def test_analyze_names_a_bad_role(make_tiny):
    base, unlearned, _, vectors, coeffs = tiny_inputs(make_tiny)
    with pytest.raises(ValueError, match="'bio'.*role"):
        analyze(base, unlearned, {"bio": (texts("bio", 4), "forgotten")}, control_vectors=vectors,
                steering_coeffs=coeffs, layer=LAYER, progress=False)


def test_analyze_run_reads_u_c_and_layer_from_a_run_directory(make_tiny, tmp_path):
    base = make_tiny("llama", n_layers=3, d_model=32, seed=0)
    config = rl.RMUConfig(layer=LAYER, update_layers=[0, 1], steering_coeff=15.0, alpha=5.0, lr=1e-3, batch_size=2,
                          max_batches=2, max_length=24, retain_max_length=24, checkpoint_every=0)
    run = rl.unlearn(make_tiny("llama", n_layers=3, d_model=32, seed=0), {"bio": texts("bio", 6)},
                     texts("retain", 6), config, out=tmp_path / "run", progress=False)
    datasets = {"bio": (texts("bio", 6), "forget"), "retain": (texts("retain", 6), "retain")}
    analysis = analyze_run(base, tmp_path / "run", datasets, probes=False, progress=False)
    assert analysis.collapse.layer == LAYER
    assert analysis.collapse.steering_coeffs == {"bio": 15.0}
    saved_u = run.control_vectors["bio"].double()
    assert analysis.collapse.directions["bio"]["cos_u_ones"] == pytest.approx(float(saved_u.sum() / saved_u.norm()) / 32**0.5)
    from_object = analyze_run(base, run, datasets, probes=False, progress=False)
    assert from_object.collapse.metrics == analysis.collapse.metrics


# --- integration: the trained testbed and the embedded SmolLM2 --------------------------------


@pytest.fixture(scope="module")
def testbed_analysis(testbed, testbed_run_dir):
    from rmu_lens.eval import compare, evaluate

    base = testbed.bridge()
    unlearned = rl.load_model(testbed_run_dir / "model")
    questions = testbed.questions()
    comparison = compare(evaluate(base, questions, mode="cloze", progress=False),
                         evaluate(unlearned, questions, mode="cloze", progress=False),
                         forget_subjects=[testbed.forget_domain])
    datasets = {testbed.forget_domain: (testbed.corpus(testbed.forget_domain, qa=False), "forget"),
                "retain": (testbed.retain_corpus(), "retain"),
                testbed.adjacent_domain: (testbed.corpus(testbed.adjacent_domain, qa=False), "adjacent")}
    for name in testbed.distant_domains:
        datasets[name] = (testbed.corpus(name, qa=False), "distant")
    analysis = analyze_run(base, testbed_run_dir, datasets, unlearned_model=unlearned, questions=questions,
                           comparison=comparison, max_texts=24, probe_folds=3, progress=False)
    return testbed, analysis


@pytest.mark.integration
def test_testbed_forget_norm_reaches_c_at_layer_l(testbed_analysis):
    testbed, analysis = testbed_analysis
    c = analysis.collapse
    forget = testbed.forget_domain
    coefficient = c.steering_coeffs[forget]
    # Measured 124.97 against c = 124.74 (ratio 1.002): RMU's forget MSE drives the norm to c; 5% leaves
    # room for other seeds and thread counts while a failed run (norm ~27, the base level) is far outside.
    assert c.value(forget, "mean_norm", "unlearned") == pytest.approx(coefficient, rel=0.05)
    assert c.value(forget, "mean_norm", "base") < 0.3 * coefficient
    assert c.value(forget, "dist_to_cu", "unlearned") < 0.15 * coefficient


@pytest.mark.integration
def test_testbed_retain_representations_stay_put_at_layer_l(testbed_analysis):
    _, analysis = testbed_analysis
    assert analysis.collapse.value("retain", "cos_unlearned_base") >= 0.99
    assert analysis.collapse.value("retain", "norm_ratio") == pytest.approx(1.0, abs=0.05)


@pytest.mark.integration
def test_testbed_forget_set_collapses(testbed_analysis):
    testbed, analysis = testbed_analysis
    c, forget = analysis.collapse, testbed.forget_domain
    assert c.value(forget, "mean_pairwise_cos", "base") < 0.3
    assert c.value(forget, "mean_pairwise_cos", "unlearned") > 0.95
    assert c.value(forget, "relative_dispersion", "unlearned") < 0.1 * c.value(forget, "relative_dispersion", "base")


@pytest.mark.integration
def test_testbed_knowledge_probe_is_above_chance_at_base(testbed_analysis):
    testbed, analysis = testbed_analysis
    probe = analysis.probes["knowledge"]
    last = probe.accuracy["base"][-1]
    assert last["ci_low"] > probe.chance
    forget = testbed.forget_domain
    assert probe.by_group["base"][forget][-1] > 0.4
    # After RMU the forget domain's answers are no longer decodable at layers >= l.
    assert probe.by_group["unlearned"][forget][-1] < 0.35


@pytest.mark.integration
def test_testbed_damage_ranks_the_adjacent_domain_first_among_neighbours(testbed_analysis):
    testbed, analysis = testbed_analysis
    rows = [r for r in analysis.damage.rows if r["role"] != "forget"]
    assert rows[0]["domain"] == testbed.adjacent_domain
    by_domain = {r["domain"]: r for r in analysis.damage.rows}
    assert by_domain[testbed.adjacent_domain]["shift_at_layer"] > 5 * max(
        by_domain[d]["shift_at_layer"] for d in testbed.distant_domains)


def plain_hf_layer_output_norms(model_dir, texts: list[str], layer: int, max_length: int) -> torch.Tensor:
    """Token norms of HF decoder layer ``layer``'s output (a forward hook, eager attention), float64,
    right padding; pads and position 0 (each row's first real token) left out."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    encoded = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
    captured = []
    handle = model.model.layers[layer].register_forward_hook(
        lambda module, inputs, output: captured.append(output[0] if isinstance(output, tuple) else output))
    try:
        with torch.no_grad():
            model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"])
    finally:
        handle.remove()
    keep = encoded["attention_mask"].bool().clone()
    keep[:, 0] = False
    return captured[0].double().norm(dim=-1)[keep]


@pytest.mark.integration
def test_smollm2_layer7_norms_without_position_zero(smollm2, smollm2_dir):
    from rmu_lens.analysis import collect_activations

    corpus = rl.load_corpus("bundled:retain").texts[:8]
    acts = collect_activations(smollm2, corpus, ["blocks.7.hook_resid_post"], max_length=64, progress=False)
    norms = acts.tokens("blocks.7.hook_resid_post").norm(dim=-1)
    # Reference: a plain HF forward of the same texts, the same tokens kept.
    reference = plain_hf_layer_output_norms(smollm2_dir, corpus, layer=7, max_length=64)
    assert norms.shape == reference.shape
    torch.testing.assert_close(norms.double(), reference, rtol=1e-4, atol=1e-3)
    first = acts["blocks.7.hook_resid_post"][:, 0].norm(dim=-1)
    assert float(first.mean()) > 3 * float(norms.mean())  # the position-0 outlier the mask leaves out
    assert np.isfinite(norms.numpy()).all()
