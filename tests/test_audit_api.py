"""audit() end to end on a tiny random model: it runs, modifies nothing, and says when recovery is undefined."""

from __future__ import annotations

import math

import pytest
import torch

from rmu_lens.audit import AuditResult, FinetuneConfig, audit
from rmu_lens.eval import Question
from rmu_lens.rmu import RMUConfig, unlearn
from tests.helpers import snapshot, texts


def tiny_questions(n: int = 10) -> list[Question]:
    words = ["river", "mountain", "harbour", "desert", "castle", "voyage", "glacier", "festival"]
    return [Question(f"Where is the {words[i % 8]} {i}?", [words[(i + k) % 8] for k in range(4)], i % 4, "tiny", "tiny", f"t{i}")
            for i in range(n)]


@pytest.fixture
def tiny_run(make_tiny):
    base = make_tiny("llama", n_layers=3, d_model=32, seed=0)
    model = make_tiny("llama", n_layers=3, d_model=32, seed=0)
    config = RMUConfig(layer=1, steering_coeff=20.0, alpha=10.0, lr=1e-3, batch_size=2, max_batches=3, cycle=True,
                       max_length=32, retain_max_length=32, optimizer="adamw", checkpoint_every=0)
    run = unlearn(model, texts("bio", 6), texts("retain", 6), config, progress=False)
    return base, run


def test_audit_runs_every_audit_and_leaves_both_models_unchanged(tiny_run, tmp_path):
    base, run = tiny_run
    before = {"base": snapshot(base), "unlearned": snapshot(run.model)}
    result = audit(base, run, forget_questions=tiny_questions(), retain_questions=tiny_questions(4),
                   forget_texts=texts("bio", 8), retain_texts=texts("retain", 8),
                   finetune=FinetuneConfig(n_examples=[2], steps=2, max_length=32), progress=False, out=tmp_path)
    for name, model in (("base", base), ("unlearned", run.model)):
        after = snapshot(model)
        assert all(torch.equal(before[name][k], after[k]) for k in after), name
    assert result.meta["run"]["layer"] == 1 and result.ablation.meta["layer_sets"] == [[1], [0, 1], [0, 1, 2]]
    assert "pathogens" not in result.ablation.directions["stats"]["1"]["cos_control_vector"]
    assert set(result.ablation.directions["stats"]["1"]["cos_control_vector"]) == set(run.topics)
    assert {c.source for c in result.finetune.conditions} == {"retain", "forget"}
    assert result.probe.layers == [0, 1, 2]
    assert AuditResult.load(tmp_path / "audit.json").headline() == result.headline()


def test_recovery_is_undefined_with_a_reason_when_nothing_was_removed(make_tiny):
    base = make_tiny("llama", n_layers=2, d_model=32, seed=0)
    same = make_tiny("llama", n_layers=2, d_model=32, seed=0)
    same.add_hook("blocks.1.hook_resid_post", lambda x, hook: x + 1.0)  # a shift to estimate, no accuracy removed
    try:
        result = audit(base, same, layer=1, forget_questions=tiny_questions(), forget_texts=texts("bio", 4),
                       finetune=False, probe=False, progress=False)
    finally:
        same.reset_hooks()
    assert result.removed < 0.05
    assert all(math.isnan(c.recovery.recovery) for c in result.ablation.conditions)
    assert "nothing to recover" in result.headline()[1]


def test_audit_without_a_layer_says_how_to_give_one(make_tiny):
    model = make_tiny("llama", n_layers=2, d_model=32, seed=0)
    with pytest.raises(ValueError, match="run=.*layer="):
        audit(model, model, forget_questions=tiny_questions(), forget_texts=texts("bio", 4), finetune=False, probe=False)


def test_top_level_audit_is_callable_before_and_after_the_package_is_imported(tiny_run):
    import importlib

    import rmu_lens

    base, run = tiny_run
    importlib.import_module("rmu_lens.audit")  # binds the package as rmu_lens.audit
    result = rmu_lens.audit(base, run, forget_questions=tiny_questions(4), retain_questions=tiny_questions(4),
                            forget_texts=texts("bio", 4), retain_texts=texts("retain", 4),
                            finetune=False, probe=False, progress=False)
    assert isinstance(result, AuditResult)
