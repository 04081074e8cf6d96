"""Collapse metrics against a float64 numpy recomputation, and on a planted collapse to c·u."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rmu_lens.analysis.activations import Activations, statistics_mask
from rmu_lens.analysis.collapse import (
    MODEL_METRICS,
    CollapseAnalysis,
    collapse_stats,
    pca_projection,
    shift_metrics,
    token_metrics,
)

D = 16


def numpy_metrics(h: np.ndarray, u: np.ndarray, c: float) -> dict[str, float]:
    """Every metric by its textbook definition, pair by pair where it has one."""
    h = h.astype(np.float64)
    u = u / np.linalg.norm(u)
    ones = np.ones(D) / np.sqrt(D)
    perp = u - (u @ ones) * ones
    perp /= np.linalg.norm(perp)
    norms = np.linalg.norm(h, axis=1)

    def mean_cos(v):
        return float(np.mean(h @ v / norms))

    n = len(h)
    pairs = [h[i] @ h[j] / (norms[i] * norms[j]) for i in range(n) for j in range(n) if i != j]
    singular = np.linalg.svd(h, compute_uv=False)
    p = singular / singular.sum()
    p = p[p > 0]
    cov = np.cov(h, rowvar=False)
    q = np.quantile(norms, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {
        "mean_norm": norms.mean(), "norm_q05": q[0], "norm_q25": q[1], "norm_q50": q[2], "norm_q75": q[3],
        "norm_q95": q[4], "cos_u": mean_cos(u), "cos_ones": mean_cos(ones), "cos_u_perp": mean_cos(perp),
        "dist_to_cu": float(np.mean(np.linalg.norm(h - c * u, axis=1))), "mean_pairwise_cos": float(np.mean(pairs)),
        "cov_trace": float(np.trace(cov)), "relative_dispersion": float(np.trace(cov) / np.mean(norms**2)),
        "effective_rank": float(np.exp(-(p * np.log(p)).sum())),
    }


def test_every_metric_matches_numpy_on_random_tokens():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(40, D)) + rng.normal(size=D)
    u = rng.random(D)
    got = token_metrics(torch.tensor(h, dtype=torch.float32), torch.tensor(u), 3.0)
    expected = numpy_metrics(h.astype(np.float32), u, 3.0)
    assert set(got) == set(MODEL_METRICS)
    for name in MODEL_METRICS:
        assert got[name] == pytest.approx(expected[name], rel=1e-5, abs=1e-6), name


def test_planted_collapse_to_c_u_is_detected():
    rng = np.random.default_rng(1)
    u = rng.random(D)
    u /= np.linalg.norm(u)
    c = 50.0
    collapsed = c * u + 0.05 * rng.normal(size=(60, D))
    spread = rng.normal(size=(60, D)) * 5
    after = token_metrics(torch.tensor(collapsed), torch.tensor(u), c)
    before = token_metrics(torch.tensor(spread), torch.tensor(u), c)
    assert after["mean_pairwise_cos"] > 0.999 and abs(before["mean_pairwise_cos"]) < 0.1
    assert after["effective_rank"] < 1.2 < 10 < before["effective_rank"]
    assert after["dist_to_cu"] / c < 0.01
    assert after["mean_norm"] == pytest.approx(c, rel=0.01)
    assert after["cos_u"] > 0.999
    assert after["relative_dispersion"] < 1e-4 < 0.9 < before["relative_dispersion"]


def test_u_perp_separates_u_from_the_all_ones_direction():
    u = torch.rand(D, generator=torch.Generator().manual_seed(0))
    ones_like = torch.ones(8, D) + 0.01 * torch.randn(8, D, generator=torch.Generator().manual_seed(1))
    metrics = token_metrics(ones_like, u, 1.0)
    assert metrics["cos_ones"] > 0.99
    assert metrics["cos_u"] > 0.8  # large only because u leans towards all-ones
    assert abs(metrics["cos_u_perp"]) < 0.05


def test_shift_metrics_match_numpy():
    rng = np.random.default_rng(2)
    base = rng.normal(size=(30, D))
    new = base + 0.5 * rng.normal(size=(30, D))
    got = shift_metrics(torch.tensor(base), torch.tensor(new))
    cos = np.sum(base * new, 1) / (np.linalg.norm(base, axis=1) * np.linalg.norm(new, axis=1))
    assert got["cos_unlearned_base"] == pytest.approx(cos.mean(), rel=1e-12)
    assert got["cos_unlearned_base_q05"] == pytest.approx(np.quantile(cos, 0.05), rel=1e-12)
    assert got["norm_ratio"] == pytest.approx(np.linalg.norm(new, axis=1).mean() / np.linalg.norm(base, axis=1).mean())


def activations(values: torch.Tensor, attention: torch.Tensor) -> Activations:
    return Activations(["blocks.0.hook_resid_post"], attention, statistics_mask(attention, 1), None, 1,
                       values={"blocks.0.hook_resid_post": values})


def test_collapse_stats_use_statistics_tokens_only():
    g = torch.Generator().manual_seed(3)
    attention = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    base = torch.randn(2, 5, D, generator=g)
    base[:, 0] *= 100  # a position-0 outlier must not reach the statistics
    new = base * 2
    stats = collapse_stats(activations(base, attention), activations(new, attention), torch.ones(D) + torch.arange(D), 1.0)
    tokens = torch.cat([base[0, 1:4], base[1, 1:3]])
    assert stats["blocks.0.hook_resid_post"]["base"]["mean_norm"] == pytest.approx(float(tokens.norm(dim=1).mean()), rel=1e-6)
    assert stats["blocks.0.hook_resid_post"]["shift"]["norm_ratio"] == pytest.approx(2.0, rel=1e-9)
    assert stats["blocks.0.hook_resid_post"]["shift"]["cos_unlearned_base"] == pytest.approx(1.0, rel=1e-9)


def test_collapse_stats_refuse_unaligned_tokens():
    a = torch.tensor([[1, 1, 1, 0]])
    b = torch.tensor([[1, 1, 1, 1]])
    with pytest.raises(ValueError, match="same TokenBatch"):
        collapse_stats(activations(torch.randn(1, 4, D), a), activations(torch.randn(1, 4, D), b), torch.rand(D), 1.0)


def test_pca_projects_the_target_into_the_same_plane():
    rng = np.random.default_rng(4)
    u = rng.random(D)
    points = {"forget": {"base": rng.normal(size=(20, D)), "unlearned": 10 * u + 0.01 * rng.normal(size=(20, D))}}
    pca = pca_projection(points, {"topic": 10 * u})
    after = np.asarray(pca["points"]["forget"]["unlearned"])
    assert np.linalg.norm(after.mean(0) - np.asarray(pca["targets"]["topic"])) < 0.05


def test_collapse_analysis_round_trips_through_json(tmp_path):
    rng = np.random.default_rng(5)
    u = torch.tensor(rng.random(D))
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    analysis = CollapseAnalysis.empty(1, hooks, {"bio": u}, {"bio": 4.0})
    stat = {"base": token_metrics(torch.randn(10, D), u, 4.0), "unlearned": token_metrics(torch.randn(10, D), u, 4.0),
            "shift": shift_metrics(torch.randn(10, D), torch.randn(10, D))}
    analysis.add("bio", "forget", "bio", {h: stat for h in hooks})
    assert analysis.directions["bio"]["cos_u_ones"] == pytest.approx(float(u.sum() / u.norm()) / D**0.5)
    loaded = CollapseAnalysis.load(analysis.save(tmp_path / "collapse.json"))
    assert loaded.to_dict() == analysis.to_dict()
    assert loaded.value("bio", "mean_norm", "base") == stat["base"]["mean_norm"]
    with pytest.raises(ValueError, match="role"):
        analysis.add("x", "forgotten", "bio", {h: stat for h in hooks})
