"""Small text corpora and weight snapshots for tests."""

from __future__ import annotations

import random

import torch

WORDS = {
    "bio": "virus capsid host cell membrane genome protein enzyme replication immune antibody vaccine bacteria".split(),
    "cyber": "attacker password encryption firewall malware network key certificate phishing patch exploit log".split(),
    "retain": "river mountain empire painter harbour festival orchestra desert glacier castle harvest voyage".split(),
}


def texts(kind: str, n: int, seed: int = 0, min_words: int = 4, max_words: int = 30) -> list[str]:
    """``n`` texts of varied length (so batches need padding) from a small vocabulary."""
    rng = random.Random(f"{kind}-{seed}")
    return [" ".join(rng.choice(WORDS[kind]) for _ in range(rng.randint(min_words, max_words))) for _ in range(n)]


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every parameter and buffer, by name."""
    state = dict(model.named_parameters())
    state.update(dict(model.named_buffers()))
    return {name: tensor.detach().clone() for name, tensor in state.items()}
