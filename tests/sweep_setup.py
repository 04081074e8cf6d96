"""Shared inputs of the sweep tests: a tiny random llama, small corpora, inline questions, a small space."""

from __future__ import annotations

from rmu_lens.eval import Question
from tests.helpers import texts

WORDS = ["river", "mountain", "harbour", "desert", "castle", "voyage", "glacier", "festival"]
QUESTION_LIST = [Question(f"Where is the {WORDS[i]}?", [WORDS[(i + k) % 8] for k in range(4)], i % 4, "tiny", "tiny", f"t{i}")
                 for i in range(8)]
QUESTIONS = {"forget": QUESTION_LIST, "retain": QUESTION_LIST[:4], "adjacent": QUESTION_LIST[4:]}
SPACE = {"lr": {"low": 1e-3, "high": 3e-2, "log": True}, "layer": {"choices": [1, 2]}, "update_depth": {"choices": [1, 2]}}


def tiny_config(**overrides):
    from rmu_lens.rmu import RMUConfig

    settings = dict(layer=1, steering_coeff=20.0, alpha=10.0, lr=1e-3, batch_size=2, max_batches=4, cycle=True,
                    max_length=32, retain_max_length=32, optimizer="adamw", checkpoint_every=0)
    return RMUConfig(**{**settings, **overrides})


def tiny_model(seed: int = 0):
    from rmu_lens.models import build_random_model, load_model

    model, tokenizer = build_random_model("llama", n_layers=3, d_model=32, seed=seed)
    return load_model(model, tokenizer=tokenizer)


def sweep_inputs():
    """(model, forget texts, retain texts, template config) — the same in every process."""
    return tiny_model(), texts("bio", 8), texts("retain", 8), tiny_config()
