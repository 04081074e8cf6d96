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
