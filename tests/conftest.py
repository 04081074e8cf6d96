"""Shared fixtures: the embedded model is converted once per test session; tiny models in seconds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct as an HF safetensors directory (converted on first use)."""
    from rmu_lens.models import embedded_model_dir

    return embedded_model_dir("smollm2-135m")


@pytest.fixture(scope="session")
def smollm2(smollm2_dir):
    """A bridge over the embedded model, shared by the session: do not modify its weights."""
    from rmu_lens.models import load_model

    return load_model(smollm2_dir)


@pytest.fixture
def make_tiny() -> Callable[..., object]:
    """Factory for a bridge over a tiny random HF model: ``make_tiny("llama", n_layers=4, seed=0)``."""
    from rmu_lens.models import build_random_model, load_model

    def make(architecture: str = "llama", **kwargs):
        model, tokenizer = build_random_model(architecture, **kwargs)
        return load_model(model, tokenizer=tokenizer)

    return make


@pytest.fixture(scope="session")
def testbed():
    """The "small" ground-truth testbed (seed 0, overlap 0.5): trained once into the cache, then loaded."""
    from rmu_lens.testbed import load_testbed

    return load_testbed(seed=0, size="small", overlap=0.5, progress=True)


@pytest.fixture(scope="session")
def testbed_run_dir(testbed, tmp_path_factory) -> Path:
    """A finished RMU run on the testbed with its preset, saved as a run directory (model/ inside).

    Shared by the analysis, audit and report tests: load ``run_dir / "model"`` for the unlearned
    model and ``testbed.bridge()`` for the base; do not write into this directory.
    """
    from rmu_lens.rmu import unlearn
    from rmu_lens.testbed import testbed_rmu_config

    out = tmp_path_factory.mktemp("testbed-run") / "run"
    unlearn(testbed.bridge(), forget=testbed.forget_corpus(), retain=testbed.retain_corpus(),
            config=testbed_rmu_config(), out=out, progress=True)
    return out
