"""`rmu-lens testbed` and `overlap_sweep` on the cached "small" testbed (overlap 0.5).

Both run the testbed's RMU preset themselves. The reference is the session's own preset run
(``testbed_run_dir``) and separate cloze evaluations of the base and unlearned models: the same
deterministic run on CPU, so accuracies and drops must agree exactly.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def evaluations(testbed, testbed_run_dir):
    from rmu_lens.eval import evaluate
    from rmu_lens.models import load_model

    questions = testbed.questions()
    base = evaluate(testbed.bridge(), questions, mode="cloze", progress=False).by_subject()
    after = evaluate(load_model(testbed_run_dir / "model"), questions, mode="cloze", progress=False).by_subject()
    return base, after


def test_testbed_command_writes_the_measurement_of_separate_evaluations(testbed, evaluations, tmp_path):
    from rmu_lens.cli import main
    from rmu_lens.testbed import testbed_rmu_config

    out = tmp_path / "measurement.json"
    assert main(["testbed", "--seed", "0", "--overlap", "0.5", "--out", str(out), "--quiet"]) == 0
    measurement = json.loads(out.read_text())
    base, after = evaluations
    for domain in testbed.domains:
        assert measurement["base"][domain]["acc"] == pytest.approx(base[domain]["acc"], abs=1e-12), domain
        assert measurement["after"][domain]["acc"] == pytest.approx(after[domain]["acc"], abs=1e-12), domain
        assert measurement["base"][domain]["n"] == base[domain]["n"]
    adjacent = testbed.adjacent_domain
    assert measurement["adjacent_drop"] == pytest.approx(base[adjacent]["acc"] - after[adjacent]["acc"], abs=1e-12)
    assert measurement["config"] == testbed_rmu_config().to_dict()
    assert measurement["roles"][testbed.forget_domain] == "forget"


def test_overlap_sweep_row_holds_the_drops_of_separate_evaluations(testbed, evaluations):
    from rmu_lens.testbed import overlap_sweep

    sweep = overlap_sweep((0.5,), seed=0, size="small", max_texts=8, progress=False)
    (row,) = sweep.rows
    base, after = evaluations

    def drop(domain):
        return base[domain]["acc"] - after[domain]["acc"]

    assert row["overlap"] == 0.5
    assert row["forget_drop"] == pytest.approx(drop(testbed.forget_domain), abs=1e-12)
    assert row["adjacent_drop"] == pytest.approx(drop(testbed.adjacent_domain), abs=1e-12)
    assert row["distant_drop"] == pytest.approx(np.mean([drop(d) for d in testbed.distant_domains]), abs=1e-12)
    low, high = row["adjacent_drop_ci"]
    assert low <= row["adjacent_drop"] <= high
    assert 0.0 <= row["adjacent_shift_at_layer"] <= 2.0  # 1 - cos lies in [0, 2]
