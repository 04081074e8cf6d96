"""The full loop on the "small" testbed: train (once, cached), evaluate, RMU with the preset, evaluate.

The first run trains the model (a few minutes on two CPU cores); later runs load it from the cache.
The adjacent domain's drop is the measurement, recorded (``record_property``) and printed, not a bar.
"""

from __future__ import annotations

import pytest

from rmu_lens.testbed import experiment

pytestmark = pytest.mark.integration

CHANCE = 0.25


@pytest.fixture(scope="module")
def small_testbed(testbed):
    return testbed


@pytest.fixture(scope="module")
def base_result(small_testbed):
    from rmu_lens.eval import evaluate

    return evaluate(small_testbed.bridge(), small_testbed.questions(), mode="cloze", progress=False)


@pytest.fixture(scope="module")
def unlearned_result(small_testbed, testbed_run_dir):
    from rmu_lens.eval import evaluate
    from rmu_lens.models import load_model

    bridge = load_model(testbed_run_dir / "model")
    return evaluate(bridge, small_testbed.questions(), mode="cloze", progress=False)


def test_base_model_answers_heldout_questions_in_every_domain(small_testbed, base_result):
    accuracy = {subject: row["acc"] for subject, row in base_result.by_subject().items()}
    assert set(accuracy) == set(small_testbed.domains)
    assert all(acc >= 0.9 for acc in accuracy.values()), accuracy


def test_rmu_preset_brings_the_forget_domain_within_ten_points_of_chance(small_testbed, unlearned_result):
    accuracy = unlearned_result.by_subject()[small_testbed.forget_domain]["acc"]
    assert abs(accuracy - CHANCE) <= 0.10, accuracy


def test_rmu_preset_keeps_the_distant_domains(small_testbed, base_result, unlearned_result):
    base, after = base_result.by_subject(), unlearned_result.by_subject()
    kept = {d: after[d]["acc"] / base[d]["acc"] for d in small_testbed.distant_domains}
    assert all(ratio >= 0.9 for ratio in kept.values()), kept


def test_adjacent_domain_drop_is_measured(small_testbed, base_result, unlearned_result, record_property):
    before = experiment.accuracy_groups(small_testbed, base_result)
    after = experiment.accuracy_groups(small_testbed, unlearned_result)
    for group in before:
        if group.startswith(small_testbed.adjacent_domain):
            drop = before[group]["acc"] - after[group]["acc"]
            record_property(f"drop[{group}]", round(drop, 4))
            print(f"{group}: {before[group]['acc']:.3f} -> {after[group]['acc']:.3f} (drop {drop:+.3f})")
    # Reference: the groups counted by hand from the question list and each result's own outcomes.
    adjacent = small_testbed.adjacent_domain
    shared = set(small_testbed.world.shared_attributes())
    questions = small_testbed.question_dicts(adjacent)
    assert shared and any(q["attribute"] not in shared for q in questions)  # both groups are populated
    for groups, evaluation in ((before, base_result), (after, unlearned_result)):
        outcomes = evaluation.outcomes()
        for name, keep in ((adjacent, lambda q: True),
                           (f"{adjacent} (shared attributes)", lambda q: q["attribute"] in shared),
                           (f"{adjacent} (own attributes)", lambda q: q["attribute"] not in shared)):
            members = [outcomes[q["id"]] for q in questions if keep(q)]
            assert groups[name]["n"] == len(members), name
            assert groups[name]["acc"] == pytest.approx(sum(members) / len(members), abs=1e-12), name
        assert groups[adjacent]["acc"] == pytest.approx(evaluation.by_subject()[adjacent]["acc"], abs=1e-12)
