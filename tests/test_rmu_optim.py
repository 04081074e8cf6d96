"""LegacyAdamW against the transformers 4.x AdamW update written out element by element in float64.

transformers 4.x ``AdamW.step`` (correct_bias=True), per parameter element:

    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    p = p - lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)
    p = p - lr * weight_decay * p          # decoupled decay, applied AFTER the Adam update
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from rmu_lens.rmu.optim import LegacyAdamW


def plain_transformers_v4_adamw(start: list[float], gradients: list[list[float]], *, lr: float, betas=(0.9, 0.999),
                                eps: float = 1e-6, weight_decay: float = 0.0) -> list[list[float]]:
    """Each step's parameter values, with Python floats, one element at a time."""
    b1, b2 = betas
    p, m, v = list(start), [0.0] * len(start), [0.0] * len(start)
    trajectory = []
    for t, g in enumerate(gradients, start=1):
        for i in range(len(p)):
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i]
            p[i] = p[i] - lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m[i] / (math.sqrt(v[i]) + eps)
            if weight_decay > 0:
                p[i] = p[i] - lr * weight_decay * p[i]
        trajectory.append(list(p))
    return trajectory


@pytest.mark.parametrize("weight_decay", [0.0, 0.3])
@pytest.mark.parametrize("gradient_scale", [1e-5, 1.0], ids=["near-eps", "large"])
def test_legacy_adamw_with_weight_decay_follows_the_written_out_formula(weight_decay, gradient_scale):
    rng = random.Random(0)
    start = [rng.uniform(-2, 2) for _ in range(16)]
    gradients = [[gradient_scale * rng.gauss(0, 1) for _ in start] for _ in range(8)]
    # lr * weight_decay large enough that decay before vs after the Adam update differs far beyond 1e-12
    lr = 0.05
    expected = plain_transformers_v4_adamw(start, gradients, lr=lr, weight_decay=weight_decay)
    parameter = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))
    optimizer = LegacyAdamW([parameter], lr=lr, eps=1e-6, weight_decay=weight_decay)
    for gradient, values in zip(gradients, expected):
        parameter.grad = torch.tensor(gradient, dtype=torch.float64)
        optimizer.step()
        torch.testing.assert_close(parameter.detach(), torch.tensor(values, dtype=torch.float64), rtol=1e-12, atol=1e-14)


def test_weight_decay_order_is_visible_at_this_tolerance():
    # Decay applied before the Adam update (torch.optim.AdamW's order) must not pass the test above.
    rng = random.Random(1)
    start = [rng.uniform(-2, 2) for _ in range(16)]
    gradients = [[rng.gauss(0, 1) for _ in start] for _ in range(8)]
    after = plain_transformers_v4_adamw(start, gradients, lr=0.05, weight_decay=0.3)[-1]
    parameter = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))
    optimizer = torch.optim.AdamW([parameter], lr=0.05, eps=1e-6, weight_decay=0.3)
    for gradient in gradients:
        parameter.grad = torch.tensor(gradient, dtype=torch.float64)
        optimizer.step()
    assert (parameter.detach() - torch.tensor(after, dtype=torch.float64)).abs().max() > 1e-6
