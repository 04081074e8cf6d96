"""AuditResult: headline, JSON round trip (NaN included), figures, bad files — from constructed results."""

from __future__ import annotations

import json
import math

import pytest
from matplotlib.figure import Figure

from rmu_lens.audit.ablation import AblationCondition, AblationResult
from rmu_lens.audit.suite import AuditFileError, AuditResult
from rmu_lens.audit.finetune import FinetuneCondition, FinetuneResult
from rmu_lens.audit.probing import ProbeAuditResult
from rmu_lens.audit.recovery_stats import Recovery


def rec(value: float, low: float, high: float, note: str = "") -> Recovery:
    return Recovery(0.95, 0.25, 0.25 + value * 0.7, value, low, high, 144, note)


def constructed() -> AuditResult:
    ablation = AblationResult(
        conditions=[
            AblationCondition([2], "mean_diff", 0.6, 0.99, 0.0, rec(0.5, 0.4, 0.6), {"q1": True}),
            AblationCondition([0, 1, 2], "pca", 0.85, 0.98, -0.01, rec(0.86, 0.78, 0.93)),
            AblationCondition([0, 1, 2], "random", 0.26, 0.99, 0.0, rec(0.01, -0.02, 0.04)),
        ],
        directions={"stats": {"2": {"mean_diff_norm": 115.0}}},
    )
    finetune = FinetuneResult(
        conditions=[
            FinetuneCondition("retain", 5, 0.25, 0.99, 0.0, rec(0.0, 0.0, 0.02), 0.3, 0.1),
            FinetuneCondition("retain", 10, 0.27, 0.99, 0.0, rec(0.03, 0.0, 0.06), 0.3, 0.1),
            FinetuneCondition("forget", 5, 0.8, 0.98, -0.01, rec(0.79, 0.7, 0.88), 6.9, 0.4),
            FinetuneCondition("forget", 10, 0.84, 0.98, -0.01, rec(0.84, 0.75, 0.92), 6.9, 0.5),
        ],
        config={"method": "lora"},
    )
    probe = ProbeAuditResult(layers=[0, 1], hook_names=["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"],
                             base_acc=[0.25, 0.45], unlearned_acc=[0.26, 0.30], transfer_acc=[0.25, 0.2], chance=0.25, n_questions=144)
    baseline = {"base_forget_acc": 0.95, "unlearned_forget_acc": 0.25, "n_forget": 144, "removed": 0.70, "mode": "cloze",
                "base_retain_acc": 0.99, "unlearned_retain_acc": 0.99, "n_retain": 288}
    return AuditResult(baseline=baseline, ablation=ablation, finetune=finetune, probe=probe)


def test_headline_quotes_removed_points_best_ablation_control_and_ten_shot_recovery():
    lines = constructed().headline()
    assert lines[0].startswith("removed 70.0 points of forget accuracy (0.950 -> 0.250")
    assert "ablation recovers 86% [78%, 93%] (pca @ layers 0,1,2)" in lines[1]
    assert "a random direction 1% [0%, 4%]" in lines[1]
    assert lines[2] == "10-shot fine-tuning recovers 3% [0%, 6%] on unrelated text, 84% [75%, 92%] on forget-domain text"
    assert "25% of the base's above-chance decodability survives" in lines[3]  # (0.30-0.25)/(0.45-0.25)


def test_probe_share_is_undefined_where_the_base_probe_is_at_chance():
    probe = constructed().probe
    assert math.isnan(probe.surviving[0]) and probe.surviving[1] == pytest.approx(0.25)


def test_audit_result_round_trips_through_json_with_nan(tmp_path):
    result = constructed()
    result.ablation.conditions[0].recovery = rec(float("nan"), float("nan"), float("nan"), "nothing removed")
    path = result.save(tmp_path / "audit.json")
    json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))
    loaded = AuditResult.load(path)
    assert math.isnan(loaded.ablation.conditions[0].recovery.recovery)
    assert loaded.ablation.conditions[0].forget_outcomes == {"q1": True}
    assert loaded.headline() == result.headline()
    assert loaded.finetune.curve("forget")[1].recovery == result.finetune.curve("forget")[1].recovery
    assert loaded.probe.surviving_transfer[1] == result.probe.surviving_transfer[1]


def test_figures_are_matplotlib_figures_written_by_write(tmp_path):
    result = constructed()
    figures = result.figures()
    assert set(figures) == {"ablation", "finetune", "probe"}
    assert all(isinstance(f, Figure) for f in figures.values())
    paths = result.write(tmp_path / "out")
    assert all(paths[name].stat().st_size > 0 for name in figures)


def test_headline_says_why_recovery_is_undefined():
    result = constructed()
    for condition in result.ablation.conditions:
        condition.recovery = rec(float("nan"), float("nan"), float("nan"), "unlearning removed 1.0 accuracy points")
    assert "ablation recovery undefined: unlearning removed 1.0 accuracy points" in result.headline()[1]


@pytest.mark.parametrize("content, message", [("{not json", "not valid JSON"), ('{"format": "other"}', "not an rmu_lens audit")])
def test_loading_a_bad_file_names_the_file(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(AuditFileError, match=message):
        AuditResult.load(path)
