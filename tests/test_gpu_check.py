"""benchmarks/gpu_check.py end to end on tiny shapes (CPU), so its first GPU run cannot fail on a typo.

Also a check in its own right: the official-style step and rmu_lens's give the same first-step losses,
a model whose layers above l sit on the meta device trains, and the evaluator agrees with lm-eval.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gpu-check") / "gpu_check.json"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--tiny", "--device", "cpu", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=1200,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(out.read_text())


def test_every_case_ran(report):
    assert set(report["cases"]) == {"zephyr-memory-official", "zephyr-memory-rmu_lens", "zephyr-timing", "yi", "llama70b", "eval"}
    assert all(case.get("status") != "failed" for case in report["cases"].values())


def test_official_and_rmu_lens_first_step_losses_agree(report):
    losses = report["cases"]["zephyr-timing"]["first_step_losses"]
    official, ours = losses["official_float32"], losses["rmu_lens"]
    assert ours[0] == pytest.approx(official[0], rel=1e-3)  # bf16 activations of two code paths
    assert official[1] == 0.0 and ours[1] == 0.0  # first step: updated == frozen on retain


def test_the_model_with_upper_layers_on_meta_trains(report):
    case = report["cases"]["llama70b"]
    assert case["layers_materialised"] == case["layer"] + 1 < case["n_layers"]
    assert case["parameters_on_meta"] > 0
    assert all(math.isfinite(v) for v in case["first_step_losses"]) and case["first_step_losses"][0] > 0


def test_evaluator_matches_lm_eval_predictions(report):
    for mode in ("letter", "cloze"):
        result = report["cases"]["eval"]["modes"][mode]
        assert result["differing_predictions"] == 0
        assert result["max_abs_loglikelihood_difference"] < 1e-4


def test_memory_and_timing_are_reported(report):
    cases = report["cases"]
    assert cases["zephyr-memory-official"]["peak_rss_gib"] > 0 and cases["zephyr-memory-rmu_lens"]["peak_rss_gib"] > 0
    assert cases["zephyr-timing"]["ms_per_step"]["official"] > 0 and cases["zephyr-timing"]["ms_per_step"]["rmu_lens"] > 0
    assert cases["yi"]["official"]["status"] in ("ran", "out of memory")
