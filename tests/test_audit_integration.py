"""The recovery audits on the trained testbed, through `rmu-lens audit`: an RMU run with a clear effect,
ablation that recovers it, a random-direction control that recovers nothing, fine-tuning by source."""

from __future__ import annotations

import argparse
import math

import pytest

from rmu_lens.audit.suite import AuditResult
from rmu_lens.eval.stats import wilson_interval

pytestmark = pytest.mark.integration


def run_cli(argv: list[str]) -> int:
    from rmu_lens.audit.commands import register

    parser = argparse.ArgumentParser(prog="rmu-lens")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def audit_dir(testbed, testbed_run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit") / "audit"
    code = run_cli(["audit", "--testbed", "--unlearned", str(testbed_run_dir), "--out", str(out),
                    "--finetune-n", "5,10", "--quiet"])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def result(audit_dir) -> AuditResult:
    return AuditResult.load(audit_dir / "audit.json")


def all_recoveries(result: AuditResult):
    return [c.recovery for c in result.ablation.conditions] + [c.recovery for c in result.finetune.conditions]


def test_the_run_removed_the_forget_domain(result):
    assert result.baseline["base_forget_acc"] >= 0.9
    assert result.removed >= 0.5


def test_every_recovery_is_reported_in_zero_to_one_with_an_interval(result):
    for recovery in all_recoveries(result):
        assert math.isfinite(recovery.recovery)
        assert 0.0 <= recovery.clamped <= 1.0
        assert recovery.ci_low <= recovery.recovery <= recovery.ci_high


def test_ablating_the_estimated_direction_recovers_a_clear_share(result):
    best = result.ablation.best()
    assert best.recovery.recovery > 0.3, best.label
    assert best.recovery.ci_low > 0.0


def test_ablating_a_random_direction_of_the_same_norm_recovers_about_nothing(result):
    control, best = result.ablation.control(), result.ablation.best()
    assert control.layers == best.layers
    assert control.recovery.recovery < 0.15
    assert control.recovery.ci_high < best.recovery.ci_low


def test_estimated_direction_at_the_rmu_layer_is_the_control_vector(result):
    layer = result.meta["run"]["layer"]
    stats = result.ablation.directions["stats"][str(layer)]
    assert max(stats["cos_control_vector"].values()) > 0.9
    assert stats["n_outliers"] >= 0 and "first 1 token" in result.ablation.directions["exclusions"]


def test_fine_tuning_on_forget_domain_examples_recovers_at_least_as_much_as_unrelated(result, capsys):
    forget, unrelated = result.finetune.at("forget", 10), result.finetune.at("retain", 10)
    with capsys.disabled():
        print(f"\n10-shot fine-tuning recovery: forget-domain {forget.recovery.describe()}, "
              f"unrelated {unrelated.recovery.describe()}, difference {forget.recovery.recovery - unrelated.recovery.recovery:+.2f}")
    assert forget.recovery.recovery >= unrelated.recovery.recovery
    assert all(c.last_loss < c.first_loss for c in result.finetune.conditions)


def test_probe_audit_covers_every_layer(result, testbed):
    probe = result.probe
    assert probe.layers == list(range(testbed.spec.n_layers))
    assert probe.n_questions == len(testbed.questions(testbed.forget_domain))
    n = probe.n_questions
    # Out-of-fold accuracy over n questions is a count over n; chance is 1/4 (four choices each).
    assert all(abs(acc * n - round(acc * n)) < 1e-9 for acc in probe.base_acc + probe.unlearned_acc + probe.transfer_acc)
    assert probe.chance == pytest.approx(0.25)
    # The base model answers >= 90% of these questions (test_the_run_removed_the_forget_domain), so its
    # answers must be decodable at the best layer: the 95% Wilson interval lies above chance.
    best = probe.layers.index(probe.best_layer())
    low, _ = wilson_interval(round(probe.base_acc[best] * n), n)
    assert low > probe.chance, probe.base_acc


def test_the_command_writes_json_directions_and_figures(audit_dir, result):
    from rmu_lens._io import load_tensors

    assert {p.name for p in (audit_dir / "figures").iterdir()} == {"ablation.png", "finetune.png", "probe.png"}
    tensors = load_tensors(audit_dir / "directions.safetensors")
    assert {f"mean_diff.{l}" for l in result.ablation.meta["layer_sets"][-1]} <= set(tensors)
    assert len(result.headline()) == 4
