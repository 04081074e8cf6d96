"""The explorers over an analysis of a plain unlearned model (no run record: û, ĉ, l̂ estimated).

The planted pair of tests/test_recover.py (layer 1 collapses forget tokens onto u), analysed with
``analyze_model``: one forget topic that collapsed and one, with a hostile name, that did not. The
widgets are built and redrawn (no browser); what they show is compared with a plain HF forward and
with the result objects.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from rmu_lens.analysis import analyze_model
from rmu_lens.analysis.activations import statistics_batch
from rmu_lens.analysis.recover import recover
from rmu_lens.eval import EvalResult, compare
from rmu_lens.models import load_model
from tests.test_recover import FORGET, LAYER, RETAIN, _planted_pair, _texts

CALM = "<b>calm</b>"


def _record(question_id: str, subject: str, correct: bool) -> dict:
    return {"id": question_id, "task": "t", "subject": subject, "answer": 0, "loglikelihoods": [0.0, -1.0, -2.0, -3.0],
            "prediction": 0 if correct else 1, "correct": correct}


@pytest.fixture(scope="module")
def plain():
    base_hf, new_hf, tok, u = _planted_pair()
    reference = copy.deepcopy(new_hf)
    base, new = load_model(base_hf, tokenizer=tok), load_model(new_hf, tokenizer=tok)
    datasets = {"topic": (FORGET, "forget"), CALM: (_texts("nopqrstuvwxyz", 6, 7), "forget"), "retain": (RETAIN, "retain"),
                "other": (_texts("aeiou nopq", 6, 2), "adjacent")}
    recovery = recover(base, new, {"topic": FORGET, CALM: datasets[CALM][0]}, RETAIN, progress=False)
    subjects = ("topic", "retain", "other")
    before = EvalResult(mode="letter", records=[_record(f"{s}{i}", s, True) for s in subjects for i in range(10)])
    after = EvalResult(mode="letter", records=[_record(f"{s}{i}", s, s != "topic" or i < 2) for s in subjects for i in range(10)])
    comparison = compare(before, after, forget_subjects=["topic"])
    analysis = analyze_model(base, new, datasets, recovery=recovery, comparison=comparison, progress=False, probe_folds=3)
    return analysis, recovery, comparison, reference, tok


def test_layer_explorer_reads_u_hat_and_says_it_is_estimated(plain):
    from rmu_lens.jupyter.explorers import LayerExplorer

    analysis, recovery, _, reference, tok = plain
    explorer = LayerExplorer(analysis, view="cos to u")
    assert explorer.estimated and explorer.layer.value == LAYER
    assert "l̂ = 1" in explorer.title.value and "estimated from the two models" in explorer.title.value
    assert "&lt;b&gt;calm&lt;/b&gt;" in explorer.title.value and "<b>calm" not in explorer.title.value  # not collapsed
    assert "cos(h, û)" in explorer.table.value and "û estimated" in explorer.table.value
    curves = explorer.figure().axes[0]
    (line,) = [line for line in curves.lines if line.get_label() == "topic"]
    assert "estimated" in curves.get_title()
    # cos(h, û) at l̂ from a plain HF forward of the unlearned model, û the estimated direction
    batch = statistics_batch(FORGET, tok, 32, 128, "forget")
    with torch.no_grad():
        hidden = reference(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
    mask = batch.attention_mask.bool().clone()
    mask[:, 0] = False
    h = hidden.hidden_states[LAYER + 1].to(torch.float64)[mask].numpy()
    u_hat = recovery.topics["topic"].direction
    expected = float(np.mean(h @ u_hat / (np.linalg.norm(h, axis=1) * np.linalg.norm(u_hat))))
    assert line.get_ydata()[list(line.get_xdata()).index(LAYER)] == pytest.approx(expected, abs=1e-5)
    explorer.view.value = "PCA"
    labels = {c.get_label() for c in explorer.figure().axes[0].collections}
    assert "ĉ·û (topic)" in labels
    bare = LayerExplorer(analysis.collapse)  # a bare CollapseAnalysis says nothing of where u came from
    assert not bare.estimated and "cos(h, u)" in bare.table.value


def test_probe_and_damage_explorers_work_on_the_plain_model_analysis(plain):
    from rmu_lens.jupyter.explorers import DamageExplorer, ProbeExplorer

    analysis, _, comparison, _, _ = plain
    probes = ProbeExplorer(analysis)
    probes.layer.value = 0
    assert probes.redraws == 2
    domain = analysis.probes["domain"]
    assert [row[1] for row in probes.rows()] == [domain.accuracy[v][0]["acc"] for v in domain.accuracy]
    damage = DamageExplorer(analysis, comparison)
    damage.domain.value = "other"
    assert damage.redraws == 2 and damage.row()["domain"] == "other"
    highlighted = [line for line in damage.figure().axes[0].lines if line.get_label() == "other"][0]
    assert list(highlighted.get_ydata()) == analysis.damage.shift_map["other"]


def test_recovery_explorer_shows_each_topics_curves_verdict_and_numbers(plain, tmp_path):
    from rmu_lens.jupyter.display import PNG_SIGNATURE
    from rmu_lens.jupyter.explorers import RecoveryExplorer

    _, recovery, _, _, _ = plain
    explorer = RecoveryExplorer(recovery)
    assert explorer.topic.value == "topic" and bytes(explorer.image.value).startswith(PNG_SIGNATURE)
    assert f"collapsed at layer {LAYER}" in explorer.title.value
    curves = recovery.topics["topic"].curves
    change = explorer.figure().axes[0]
    (forget,) = [line for line in change.lines if line.get_gid() == "forget_change"]
    assert list(forget.get_ydata()) == curves["forget_change"]
    (star,) = [line for line in change.lines if line.get_gid() == "layer_hat_marker"]
    assert list(star.get_xdata()) == [LAYER]
    rows = explorer.rows()
    assert [row[0] for row in rows] == recovery.layers
    assert [row[2] for row in rows] == curves["forget_change"] and [row[4] for row in rows] == curves["mean_cos"]
    assert rows[recovery.layers.index(LAYER)][1] == "l̂"
    first = bytes(explorer.image.value)
    explorer.topic.value = CALM
    assert explorer.redraws == 2 and bytes(explorer.image.value) != first
    assert "not collapsed" in explorer.title.value and "not collapsed" in explorer.table.value
    assert "<b>calm" not in explorer.title.value + explorer.table.value
    assert "&lt;b&gt;calm&lt;/b&gt;" in explorer.title.value
    assert not [line for line in explorer.figure().axes[0].lines if line.get_gid() == "layer_hat_marker"]
    assert all(row[1] == "" for row in explorer.rows())
    recovery.save(tmp_path)
    assert RecoveryExplorer(tmp_path, topic=CALM).rows() == explorer.rows()
    with pytest.raises(ValueError, match="topic 'nope' was not estimated"):
        RecoveryExplorer(recovery, topic="nope")
