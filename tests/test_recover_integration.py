"""recover() on real RMU runs read as plain HF folders (no run.json): the testbed and the embedded default.

The truth comes from the run directory (run.json's read hook and trained tensors, the saved u and c);
the estimate sees only the two model folders and the texts.
"""

from __future__ import annotations

import json

import pytest

import rmu_lens as rl
from rmu_lens._io import load_tensors
from rmu_lens.analysis.recover import recover

pytestmark = pytest.mark.integration


def _truth(run_dir):
    info = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    tensors = load_tensors(run_dir / "control_vectors.safetensors")
    layer = int(info["read_hook"].split(".")[1])
    return info, {t: tensors[f"u.{t}"] for t in info["topics"]}, info["steering_coeffs"], layer


def _assert_recovered(est, run_dir):
    info, vectors, coeffs, layer = _truth(run_dir)
    check = est.check(vectors, coeffs, layer)
    for topic, row in check.items():
        assert est.topics[topic].collapsed, est.topics[topic].reason
        assert row["layer_hat"] == layer
        assert row["cos_u"] >= 0.99, (topic, row)
        assert abs(row["c_ratio"] - 1) <= 0.10, (topic, row)
    assert sorted(est.weights.changed) == sorted(p["hf_name"] for p in info["trained_parameters"])


def test_testbed_run_recovered_from_its_model_folder(testbed, testbed_run_dir, tmp_path):
    # the base as a plain folder too, so the weight diff reads both shard by shard
    base_dir = rl.models.save_hf_model(testbed.bridge(), tmp_path / "base")
    est = recover(rl.load_model(base_dir), rl.load_model(testbed_run_dir / "model"),
                  {testbed.forget_domain: testbed.forget_corpus()}, testbed.retain_corpus(),
                  weights=(base_dir, testbed_run_dir / "model"), progress=False)
    assert est.weights.source == "files, shard by shard"
    _assert_recovered(est, testbed_run_dir)


@pytest.fixture(scope="session")
def smollm2_demo_run(smollm2_dir, tmp_path_factory):
    """A settled RMU run of the embedded default (virology + cybersecurity, 40 steps), shared per session.

    The first demo profile's setting, whose forget activations end at c·u: the estimate is checked against
    the u and c RMU reached. The current demo profile ends short of c (docs/analysis.md gives its numbers).
    """
    out = tmp_path_factory.mktemp("smollm2-demo-run") / "run"
    forget = [rl.load_corpus("bundled:virology"), rl.load_corpus("bundled:cybersecurity")]
    settled = rl.RMUConfig.profile("demo", layer=7, update_layers=[5, 6, 7], adaptive_beta=2.5, alpha=100.0, lr=1e-2,
                                   max_batches=40)
    rl.unlearn(rl.load_model(smollm2_dir), forget, rl.load_corpus("bundled:retain"), settled, out=out, progress=False)
    return out


def test_embedded_default_run_recovered_from_its_model_folder(smollm2_dir, smollm2, smollm2_demo_run):
    forget = {"virology": rl.load_corpus("bundled:virology"), "cybersecurity": rl.load_corpus("bundled:cybersecurity")}
    est = recover(smollm2, rl.load_model(smollm2_demo_run / "model"), forget, rl.load_corpus("bundled:retain"),
                  weights=(smollm2_dir, smollm2_demo_run / "model"), layers=range(10), progress=False)
    _assert_recovered(est, smollm2_demo_run)
