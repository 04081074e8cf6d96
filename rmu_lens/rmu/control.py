"""Control vectors: per forget topic, u = rand(d_model) / ||rand|| (fixed), scaled by c at use.

The official code draws ``torch.rand(1, 1, d_model)`` — entries in U[0, 1), so u is far from
isotropic (cos(u, all-ones) ~ 0.87); analyses should report both directions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch


def draw_unit_vectors(topics: list[str], d_model: int, seed: int) -> dict[str, torch.Tensor]:
    """One unit vector per topic, drawn in topic order from a CPU generator seeded with ``seed``.

    Matches ``torch.manual_seed(seed); torch.rand(1, 1, d_model)`` per topic on the CPU, in float32.
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)
    vectors = {}
    for topic in topics:
        raw = torch.rand(d_model, generator=generator, dtype=torch.float32)
        vectors[topic] = raw / raw.norm()
    return vectors


def check_control_vectors(
    vectors: Mapping[str, Any] | Sequence[Any] | torch.Tensor, topics: list[str], d_model: int
) -> dict[str, torch.Tensor]:
    """Validate user-supplied vectors and normalise them to unit norm, one per topic.

    Accepted: a mapping topic -> (d_model,) vector, a list with one vector per topic in topic
    order, or one (n_topics, d_model) tensor or array whose rows follow the topic order. Their
    direction is kept; their scale is set by the steering coefficient.
    """
    if isinstance(vectors, torch.Tensor) or hasattr(vectors, "__array__"):
        matrix = torch.as_tensor(vectors)
        if matrix.ndim == 1 and len(topics) == 1:
            matrix = matrix.unsqueeze(0)
        if matrix.ndim != 2 or matrix.shape[0] != len(topics):
            raise ValueError(
                f"control_vectors is a tensor of shape {tuple(matrix.shape)}; expected ({len(topics)}, {d_model}): "
                f"one row per forget topic {topics}, in that order (or pass a dict topic -> vector)"
            )
        vectors = list(matrix)
    if isinstance(vectors, (list, tuple)):
        if len(vectors) != len(topics):
            raise ValueError(f"control_vectors has {len(vectors)} vectors for {len(topics)} forget topics {topics}")
        vectors = dict(zip(topics, vectors))
    if not isinstance(vectors, Mapping):
        raise ValueError(
            f"control_vectors is a {type(vectors).__name__}; give a dict topic -> vector, a list of vectors, "
            f"or an (n_topics, d_model) tensor"
        )
    missing = [t for t in topics if t not in vectors]
    if missing:
        raise ValueError(f"control_vectors lacks topics {missing}; give one vector per forget topic {topics}")
    checked = {}
    for topic in topics:
        vector = torch.as_tensor(vectors[topic], dtype=torch.float32).detach().cpu().reshape(-1)
        if vector.numel() != d_model:
            raise ValueError(
                f"control_vectors[{topic!r}] has shape {tuple(torch.as_tensor(vectors[topic]).shape)}; "
                f"expected ({d_model},), the model's d_model"
            )
        norm = vector.norm()
        if not torch.isfinite(norm) or norm == 0:
            raise ValueError(f"control_vectors[{topic!r}] must be finite and non-zero")
        checked[topic] = vector / norm
    return checked
