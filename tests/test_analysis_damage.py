"""Damage: correlations against numpy, ranking and joining on a constructed case."""

from __future__ import annotations

import numpy as np
import pytest

from rmu_lens.analysis.collapse import MODEL_METRICS, SHIFT_METRICS, CollapseAnalysis
from rmu_lens.analysis.damage import DamageAnalysis, average_ranks, pearson, spearman
from rmu_lens.eval.compare import Comparison, SubjectChange


def test_pearson_matches_numpy_corrcoef():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=12), rng.normal(size=12)
    assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], rel=1e-12)


def test_spearman_is_pearson_of_ranks_with_ties_averaged():
    x = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0]
    y = [2.0, 7.0, 1.0, 8.0, 2.0, 8.0]
    assert list(average_ranks(x)) == [3.0, 1.5, 4.0, 1.5, 5.0, 6.0]
    rx, ry = np.array([3, 1.5, 4, 1.5, 5, 6]), np.array([2.5, 4, 1, 5.5, 2.5, 5.5])
    assert spearman(x, y) == pytest.approx(np.corrcoef(rx, ry)[0, 1], rel=1e-12)
    no_ties = np.random.default_rng(1).normal(size=(2, 9))
    ranks = [np.argsort(np.argsort(v)) for v in no_ties]
    assert spearman(*no_ties) == pytest.approx(np.corrcoef(*ranks)[0, 1], rel=1e-12)


def test_correlation_is_undefined_below_three_points_or_for_constants():
    assert pearson([1, 2], [2, 1]) is None
    assert pearson([1, 1, 1], [1, 2, 3]) is None
    assert spearman([1, 2], [1, 2]) is None


def change(subject: str, role: str, base: float, new: float) -> SubjectChange:
    return SubjectChange(subject, role, 100, base, new, new - base, new - base - 0.05, new - base + 0.05)


def constructed() -> tuple[Comparison, CollapseAnalysis]:
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "blocks.2.hook_resid_post"]
    collapse = CollapseAnalysis.empty(1, hooks, {"pathogens": np.linspace(1, 2, 8)}, {"pathogens": 10.0})
    # cos(unlearned, base) per layer: the forget set moves most, plants some, cities hardly.
    cosines = {"pathogens": [0.9, 0.1, 0.2], "plants": [0.99, 0.7, 0.6], "cities": [1.0, 0.99, 0.98],
               "software": [1.0, 0.995, 0.97]}
    roles = {"pathogens": "forget", "plants": "adjacent", "cities": "distant", "software": "distant"}
    for name, cos in cosines.items():
        stats = {}
        for i, hook in enumerate(hooks):
            shift = {m: 1.0 for m in SHIFT_METRICS} | {"cos_unlearned_base": cos[i], "norm_ratio": 1 + (1 - cos[i])}
            model = {m: 0.0 for m in MODEL_METRICS}
            stats[hook] = {"base": model, "unlearned": model, "shift": shift}
        collapse.add(name, roles[name], "pathogens", stats)
    comparison = Comparison("acc", [
        change("Pathogens", "forget", 0.97, 0.25), change("plants", "collateral", 0.97, 0.80),
        change("cities", "collateral", 0.99, 0.99), change("software", "collateral", 1.0, 0.98),
        change("history", "collateral", 0.5, 0.5),
    ], [])
    return comparison, collapse


def test_rows_are_ranked_by_accuracy_drop_with_the_shift_beside_them():
    comparison, collapse = constructed()
    damage = DamageAnalysis.from_results(comparison, collapse)
    assert [r["domain"] for r in damage.rows] == ["pathogens", "plants", "software", "cities"]
    plants = damage.rows[1]
    assert plants["accuracy_drop"] == pytest.approx(0.17)
    assert plants["shift_at_layer"] == pytest.approx(0.3)
    assert plants["shift_mean"] == pytest.approx(np.mean([0.01, 0.3, 0.4]))
    assert plants["shift_peak_layer"] == 2
    assert plants["norm_ratio_at_layer"] == pytest.approx(1.3)
    assert damage.shift_map["cities"] == pytest.approx([0.0, 0.01, 0.02])
    assert damage.unmatched == {"datasets": [], "subjects": ["history"]}


def test_correlations_are_computed_across_matched_domains():
    comparison, collapse = constructed()
    damage = DamageAnalysis.from_results(comparison, collapse)
    rows = {r["domain"]: r for r in damage.rows}
    names = ["pathogens", "plants", "software", "cities"]
    drops = [rows[n]["accuracy_drop"] for n in names]
    shifts = [rows[n]["shift_at_layer"] for n in names]
    corr = damage.correlations["shift_at_layer_all"]
    assert corr["n"] == 4
    assert corr["pearson"] == pytest.approx(np.corrcoef(shifts, drops)[0, 1], rel=1e-9)
    assert corr["spearman"] == pytest.approx(0.8)  # ranks 4,3,2,1 vs 4,3,1,2: cities and software swap
    assert damage.correlations["shift_mean_non_forget"]["n"] == 3


def test_damage_round_trips_and_subject_mapping_is_checked(tmp_path):
    comparison, collapse = constructed()
    damage = DamageAnalysis.from_results(comparison, collapse)
    assert DamageAnalysis.load(damage.save(tmp_path / "damage.json")).to_dict() == damage.to_dict()
    assert "plants" in damage.table()
    with pytest.raises(ValueError, match="not in the comparison"):
        DamageAnalysis.from_results(comparison, collapse, subjects={"plants": "botany"})
