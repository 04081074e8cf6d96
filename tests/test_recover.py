"""Recovering l̂, û, ĉ and the changed tensors from two tiny random models (no run directory).

A hand-planted collapse: forget texts use the letters a-m and retain texts n-z; the shared
embedding pushes a-m tokens along +e and n-z tokens along −e, and the "unlearned" copy's layer-1
MLP fires on +e only and writes s·hidden·u. The references are a plain HF forward
(``output_hidden_states``) in float64 and a float64 recomputation of every tensor difference.
"""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch

from rmu_lens.analysis.recover import Recovery, direction_of, recover
from rmu_lens.analysis.weights import ModelMismatchError, weight_diff
from rmu_lens.errors import RMULensError
from rmu_lens.models import build_random_model, load_model

LAYER = 1


def _texts(letters: str, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join("".join(rng.choice(letters) for _ in range(rng.randint(3, 7))) for _ in range(8)) for _ in range(n)]


FORGET = _texts("abcdefghijklm", 6, 0)
RETAIN = _texts("nopqrstuvwxyz", 6, 1)


def _planted_pair():
    """(base HF model, unlearned HF model, tokenizer, u): the unlearned one collapses forget tokens onto u at LAYER."""
    base, tok = build_random_model("llama", n_layers=3, d_model=64, seed=0)
    gen = torch.Generator().manual_seed(0)
    e = torch.randn(64, generator=gen)
    e /= e.norm()
    u = torch.rand(64, generator=gen)
    u /= u.norm()
    with torch.no_grad():
        emb = base.model.embed_tokens.weight
        for letters, sign in (("abcdefghijklm", 1.0), ("nopqrstuvwxyz", -1.0)):
            ids = tok.convert_tokens_to_ids(list(letters))
            emb[ids] += sign * 0.3 * e
    new = copy.deepcopy(base)
    with torch.no_grad():
        mlp = new.model.layers[LAYER].mlp
        mlp.gate_proj.weight[0] = e
        mlp.up_proj.weight[0] = e
        mlp.down_proj.weight[:, 0] = u
    return base, new, tok, u


@pytest.fixture(scope="module")
def planted():
    base, new, tok, u = _planted_pair()
    reference = copy.deepcopy(new)  # a plain HF copy, never bridged
    return load_model(base, tokenizer=tok), load_model(new, tokenizer=tok), reference, tok, u


def _hf_forget_tokens(hf_model, tok, texts, layer):
    """Layer-``layer`` resid_post of the statistics tokens (real, minus position 0) from a plain HF forward, float64."""
    enc = tok(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = hf_model(**enc, output_hidden_states=True)
    h = out.hidden_states[layer + 1].to(torch.float64)
    mask = enc["attention_mask"].bool().clone()
    mask[:, 0] = False
    return h[mask]


def test_planted_collapse_is_recovered(planted):
    base, new, reference, tok, u = planted
    est = recover(base, new, {"topic": FORGET}, RETAIN, progress=False)
    topic = est.topics["topic"]
    assert topic.collapsed, topic.reason
    assert topic.layer == LAYER
    cos = float(np.dot(topic.direction, u.double().numpy()) / np.linalg.norm(topic.direction))
    assert cos >= 0.99
    h = _hf_forget_tokens(reference, tok, FORGET, LAYER)
    projection = h @ u.double()
    aligned = projection / h.norm(dim=1) >= 0.95  # the tokens the planted MLP moved onto u
    true_scale = float(projection[aligned].median())  # their median projection on the planted u
    assert topic.scale == pytest.approx(true_scale, rel=0.02)
    assert est.weights.changed == [f"model.layers.{LAYER}.mlp.{m}.weight" for m in ("gate_proj", "up_proj", "down_proj")]
    assert est.weights.last_changed_block == LAYER
    # curves: nothing moves before LAYER; the retain set stays far below the forget set at LAYER
    i = est.layers.index(LAYER)
    assert topic.curves["forget_change"][0] < 1e-6
    assert topic.curves["forget_change"][i] > 5 * topic.curves["retain_change"][i]
    check = est.check({"topic": u}, {"topic": true_scale}, LAYER)["topic"]
    assert check["layer_match"] and check["cos_u"] >= 0.99 and abs(check["c_ratio"] - 1) < 0.02
    again = Recovery.from_dict(est.to_dict())
    assert again.topics["topic"].layer == LAYER and np.allclose(again.topics["topic"].direction, topic.direction)


def test_direction_of_matches_float64_reference():
    gen = torch.Generator().manual_seed(3)
    h = torch.randn(50, 8, generator=gen) + 4 * torch.ones(8)
    v, mean_cos, share = direction_of(h)
    x = h.double().numpy()
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    ref = vt[0] if (x @ vt[0]).mean() > 0 else -vt[0]
    assert np.allclose(v, ref, atol=1e-10)
    assert mean_cos == pytest.approx(float(np.mean(x @ ref / np.linalg.norm(x, axis=1))), abs=1e-12)
    assert share == pytest.approx(float(s[0] ** 2 / (s ** 2).sum()), abs=1e-12)


def test_random_perturbation_is_not_collapsed(planted):
    base, _, _, tok, _ = planted
    hf = _planted_pair()[0]  # the same base, then noise on every tensor
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.5 * (float(p.std()) or 0.2) * torch.randn(p.shape, generator=gen))
    noisy = load_model(hf, tokenizer=tok)
    est = recover(base, noisy, {"topic": FORGET}, RETAIN, progress=False)
    topic = est.topics["topic"]
    assert not topic.collapsed and topic.direction is None and topic.layer is None
    assert "no layer meets the rule" in topic.reason
    assert len(est.weights.changed) == len(est.weights.tensors)


def test_identical_models_say_nothing_changed(planted):
    base, _, _, tok, _ = planted
    twin = load_model(copy.deepcopy(_planted_pair()[0]), tokenizer=tok)
    est = recover(base, twin, {"topic": FORGET}, RETAIN, progress=False)
    assert est.nothing_changed and not est.collapsed
    assert est.topics["topic"].reason.startswith("nothing changed")
    assert "nothing changed" in est.weights.summary()


def test_different_architectures_are_one_clear_error(planted, make_tiny):
    base = planted[0]
    other = make_tiny("llama", n_layers=2, d_model=64)
    with pytest.raises(ModelMismatchError) as info:
        recover(base, other, {"topic": FORGET}, RETAIN, progress=False)
    assert isinstance(info.value, RMULensError) and isinstance(info.value, ValueError)
    assert "random-llama" in str(info.value) and "num_hidden_layers" in str(info.value)
    with pytest.raises(ModelMismatchError):
        weight_diff(base, make_tiny("gpt2", n_layers=3, d_model=64))


def test_shard_by_shard_diff_equals_float64_recomputation(tmp_path):
    base, new, tok, _ = _planted_pair()
    with torch.no_grad():
        new.model.norm.weight.mul_(1.5)
    base.save_pretrained(tmp_path / "base", max_shard_size="40KB")
    new.save_pretrained(tmp_path / "new", max_shard_size="40KB")
    assert len(list((tmp_path / "base").glob("*.safetensors"))) > 1  # really sharded
    diff = weight_diff(tmp_path / "base", tmp_path / "new")
    assert diff.source == "files, shard by shard"
    a, b = base.state_dict(), new.state_dict()
    tied = {"lm_head.weight"} if base.config.tie_word_embeddings else set()
    assert {t.name for t in diff.tensors} == set(a) - tied
    for t in diff.tensors:
        delta = b[t.name].double() - a[t.name].double()
        assert t.max_abs == pytest.approx(float(delta.abs().max()), abs=1e-12)
        assert t.frobenius == pytest.approx(float(delta.norm()), rel=1e-12, abs=1e-15)
        assert t.relative == pytest.approx(float(delta.norm() / a[t.name].double().norm()), rel=1e-12, abs=1e-15)
    expected = sorted([f"model.layers.{LAYER}.mlp.{m}.weight" for m in ("gate_proj", "up_proj", "down_proj")] + ["model.norm.weight"])
    assert sorted(diff.changed) == expected
    assert diff.blocks()[LAYER].keys() == {"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}
    assert diff.blocks()[None].keys() == {"model.norm"}
    # the same diff from the models in memory, and from one of each
    memory = weight_diff(load_model(copy.deepcopy(base), tokenizer=tok), load_model(copy.deepcopy(new), tokenizer=tok))
    mixed = weight_diff(tmp_path / "base", load_model(copy.deepcopy(new), tokenizer=tok))
    for other in (memory, mixed):
        assert sorted((t.name, t.max_abs, t.frobenius) for t in other.tensors) == \
            sorted((t.name, t.max_abs, t.frobenius) for t in diff.tensors)


def _saved_pair(tmp_path):
    base, new, tok, u = _planted_pair()
    base.save_pretrained(tmp_path / "base")
    new.save_pretrained(tmp_path / "new")
    tok.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "new")
    return tmp_path / "base", tmp_path / "new", u


def _datasets():
    return {"topic": (FORGET, "forget"), "retain": (RETAIN, "retain"), "other": (_texts("aeiou nopq", 6, 2), "adjacent")}


def test_analyze_command_accepts_a_plain_model_folder(tmp_path):
    from rmu_lens.analysis import Analysis
    from rmu_lens.pipeline import run_analysis

    base_dir, new_dir, u = _saved_pair(tmp_path)
    result = run_analysis(base_dir, new_dir, tmp_path / "out", datasets=_datasets(), max_texts=6, progress=False,
                          log=lambda _: None, load_options={"device": "cpu"})
    recovery = Recovery.load(result.out)
    assert recovery.weights.source == "files, shard by shard"
    assert recovery.topics["topic"].collapsed and recovery.topics["topic"].layer == LAYER
    analysis = Analysis.load(result.out / "analysis")
    assert analysis.meta["layer"] == LAYER
    assert analysis.meta["recovery"]["source"] == "estimated from the two models"
    html = (result.out / "report.html").read_text(encoding="utf-8")
    assert "collapsed at layer 1" in html


def test_analyze_command_on_identical_models_says_nothing_changed(tmp_path):
    from rmu_lens.pipeline import run_analysis

    base_dir, _, _ = _saved_pair(tmp_path)
    result = run_analysis(base_dir, base_dir, tmp_path / "out", datasets=_datasets(), max_texts=6, progress=False,
                          log=lambda _: None, load_options={"device": "cpu"})
    assert Recovery.load(result.out).nothing_changed
    assert "nothing changed" in (result.out / "report.html").read_text(encoding="utf-8")
    assert result.summary["recovery"]["nothing_changed"] is True


def test_several_unlearned_models_side_by_side(tmp_path):
    from rmu_lens.pipeline import run_side_by_side

    base_dir, new_dir, _ = _saved_pair(tmp_path)
    result = run_side_by_side(base_dir, {"planted": new_dir, "same": base_dir}, tmp_path / "out", datasets=_datasets(),
                              max_texts=6, progress=False, log=lambda _: None, load_options={"device": "cpu"})
    rows = {row["model"]: row for row in result.summary["rows"]}
    assert rows["planted"]["topic: collapse"].startswith(f"layer {LAYER},")
    assert rows["same"]["topic: collapse"] == "nothing changed" and rows["same"]["changed tensors"] == 0
    assert rows["planted"]["changed tensors"] == 3
    assert Recovery.load(result.out / "models" / "planted").topics["topic"].collapsed
    page = (result.out / "report.html").read_text(encoding="utf-8")
    assert "planted" in page and "nothing changed" in page


def test_audit_without_a_run_uses_the_estimate(planted):
    from rmu_lens.audit import audit
    from rmu_lens.eval import Question

    base, new, _, _, u = planted
    questions = [Question(f"Which {w} {i}?", ["abc", "def", "ghi", "jkl"], i % 4, "tiny", "tiny", f"q{i}")
                 for i, w in enumerate(["abc", "def", "ghi", "jkl"] * 2)]
    result = audit(base, new, forget_questions=questions, forget_texts=FORGET, retain_texts=RETAIN,
                   finetune=False, probe=False, progress=False)
    assert result.meta["run"]["estimated"] and result.meta["run"]["layer"] == LAYER
    assert result.meta["run"]["update_layers"] == [LAYER]
    cos = result.ablation.directions["stats"][str(LAYER)]["cos_control_vector"]["forget"]
    assert cos >= 0.99  # the ablated direction agrees with û (itself within 0.99 of the planted u)
