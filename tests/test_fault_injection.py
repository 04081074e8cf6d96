"""Fault injection: `rmu-lens unlearn` in a subprocess, killed (SIGKILL) inside a step, inside a checkpoint
write, between a checkpoint's renames and inside the final save, and interrupted with Ctrl-C (SIGINT); each
time resumed with --resume. The final weights and every step's losses equal an uninterrupted run's exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from rmu_lens.models import build_random_model, load_model, save_hf_model
from tests.helpers import texts

ROOT = Path(__file__).resolve().parents[1]
RUN_FILES = [".lock", "control_vectors.safetensors", "model", "run.json"]


def child(fault: str, model_dir: Path, data_dir: Path, out: Path, *flags: str) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.crash_child", fault, str(model_dir), str(data_dir), str(out), *flags],
        cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def finish(process: subprocess.Popen) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=600)
    return process.returncode, stderr


def state(out: Path) -> tuple[str, int | None]:
    """(run.json status, step of checkpoint/ or None)."""
    checkpoint = out / "checkpoint" / "state.json"
    step = json.loads(checkpoint.read_text())["step"] if checkpoint.is_file() else None
    return json.loads((out / "run.json").read_text())["status"], step


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("fault")
    model, tokenizer = build_random_model("llama", n_layers=4, seed=5)
    model_dir = save_hf_model(load_model(model, tokenizer=tokenizer), root / "model")
    data_dir = root / "data"
    data_dir.mkdir()
    for name, seed in (("bio", 0), ("cyber", 1), ("retain", 2)):
        (data_dir / f"{name}.txt").write_text("\n\n".join(texts(name, 24, seed=seed)) + "\n", encoding="utf-8")
    return model_dir, data_dir


def test_killed_and_interrupted_runs_resume_to_the_uninterrupted_weights(inputs, tmp_path):
    model_dir, data_dir = inputs
    reference_out, out = tmp_path / "reference", tmp_path / "run"
    reference = child("none", model_dir, data_dir, reference_out)  # runs alongside the interrupted chain

    # 10 steps, a checkpoint every 2. Each line: the fault, then what must be on disk after it.
    code, _ = finish(child("update:4", model_dir, data_dir, out))  # killed inside step 3
    assert code == -signal.SIGKILL and state(out) == ("running", 2)

    code, _ = finish(child("checkpoint-write:1", model_dir, data_dir, out, "--resume"))  # writing step 4's checkpoint
    assert code == -signal.SIGKILL and state(out) == ("running", 2)
    assert any(p.name.startswith(".checkpoint-") for p in out.iterdir())  # its partial staging

    code, _ = finish(child("checkpoint-swap:1", model_dir, data_dir, out, "--resume"))  # between the two renames
    assert code == -signal.SIGKILL and not (out / "checkpoint").exists() and (out / "checkpoint.old").is_dir()

    code, stderr = finish(child("sigint-update:4", model_dir, data_dir, out, "--resume"))  # Ctrl-C inside step 5
    assert code == 130 and state(out) == ("interrupted", 6)
    assert "resume with: rmu-lens unlearn" in stderr and stderr.rstrip().endswith("--resume")

    code, _ = finish(child("final-save:1", model_dir, data_dir, out, "--resume"))  # model staged, not renamed in
    assert code == -signal.SIGKILL and state(out) == ("running", 8)
    assert any(p.name.startswith(".model-") for p in out.iterdir())

    code, stderr = finish(child("none", model_dir, data_dir, out, "--resume"))
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == RUN_FILES  # every leftover recovered or cleaned

    code, stderr = finish(reference)
    assert code == 0, stderr
    resumed, uninterrupted = json.loads((out / "run.json").read_text()), json.loads((reference_out / "run.json").read_text())
    assert resumed["status"] == uninterrupted["status"] == "finished"
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in uninterrupted["history"]]
    weights, expected = load_file(out / "model" / "model.safetensors"), load_file(reference_out / "model" / "model.safetensors")
    assert weights.keys() == expected.keys()
    assert [name for name in expected if not weights[name].equal(expected[name])] == []
