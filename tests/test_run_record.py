"""RMURun.load reads a run directory back as the run that wrote it; every reader agrees on the RMU layer."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from rmu_lens.analysis.analyze import run_inputs
from rmu_lens.audit.suite import _run_settings
from rmu_lens.errors import RMULensError, RunDirectoryError
from rmu_lens.rmu import RMUConfig, RMURun, unlearn
from rmu_lens.rmu.record import NotARunError
from tests.helpers import texts

HOOK = "blocks.3.hook_resid_post"  # reads block 3 while config.layer says 2


@pytest.fixture
def hooked_run(make_tiny, tmp_path):
    config = RMUConfig(layer=2, hook_point=HOOK, steering_coeff=8.0, alpha=5.0, lr=1e-3, batch_size=2, max_batches=2,
                       max_length=24, retain_max_length=24, checkpoint_every=0)
    run = unlearn(make_tiny(n_layers=4, seed=1), {"bio": texts("bio", 4), "cyber": texts("cyber", 4, seed=1)},
                  texts("retain", 4), config, out=tmp_path / "run", progress=False)
    return run, tmp_path / "run"


def test_a_loaded_run_holds_what_the_directory_files_say(hooked_run):
    run, out = hooked_run
    loaded = RMURun.load(out)
    saved = json.loads((out / "run.json").read_text(encoding="utf-8"))
    vectors = load_file(str(out / "control_vectors.safetensors"))
    assert loaded.topics == saved["topics"] == ["bio", "cyber"]
    assert loaded.steering_coeffs == saved["steering_coeffs"]
    assert all(torch.equal(loaded.control_vectors[t], vectors[f"u.{t}"]) for t in loaded.topics)
    assert all(torch.equal(loaded.control_vectors[t], run.control_vectors[t].cpu()) for t in run.topics)
    assert loaded.config.to_dict() == saved["config"] and loaded.history == saved["history"]
    assert loaded.model is None and loaded.model_dir == out / "model" and (loaded.model_dir / "config.json").is_file()
    assert loaded.status == "finished" and loaded.record == saved


def test_every_reader_takes_the_layer_from_the_loss_hook_point(hooked_run, make_tiny):
    run, out = hooked_run
    block = int(HOOK.split(".")[1])
    assert run.config.layer != block
    assert run.layer == RMURun.load(out).layer == block
    assert run_inputs(run)["layer"] == run_inputs(out)["layer"] == block
    bridge = make_tiny(n_layers=4, seed=1)
    for source in (run, out, str(out), json.loads((out / "run.json").read_text(encoding="utf-8"))):
        assert _run_settings(bridge, source)[1]["layer"] == block, type(source).__name__


def test_a_missing_or_damaged_run_directory_is_named(hooked_run, tmp_path):
    _, out = hooked_run
    with pytest.raises(NotARunError, match="no run.json"):
        RMURun.load(tmp_path / "nowhere")
    (out / "control_vectors.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(RunDirectoryError, match="control_vectors.safetensors is damaged"):
        RMURun.load(out)
    (out / "control_vectors.safetensors").unlink()
    with pytest.raises(NotARunError, match="no control_vectors.safetensors"):
        RMURun.load(out)
    (out / "run.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(RunDirectoryError, match="not readable JSON"):
        RMURun.load(out)
    (out / "run.json").write_text(json.dumps({"status": "finished"}), encoding="utf-8")
    with pytest.raises(RMULensError, match="lacks what a run records"):
        RMURun.load(out)
