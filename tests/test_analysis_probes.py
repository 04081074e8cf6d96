"""Linear probes: planted signals are found, shuffled labels sit at chance, transfer logic is right."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold, cross_val_predict, cross_val_score

from rmu_lens.analysis.probes import LinearProbe, ProbeAnalysis, probe_layers

HOOK = "blocks.0.hook_resid_post"


def planted(n: int = 120, d: int = 12, seed: int = 0, signal_dim: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    X = rng.normal(size=(n, d))
    X[np.arange(n), signal_dim + y] += 6.0  # class k is shifted along axis signal_dim + k
    return X, y


def test_linear_probe_is_a_scikit_learn_estimator():
    X, y = planted()
    scores = cross_val_score(clone(LinearProbe(C=0.5)), X, y, cv=3)
    assert scores.min() > 0.9
    probe = LinearProbe().fit(X, y)
    assert list(probe.classes_) == [0, 1, 2]
    assert probe.predict_proba(X).shape == (len(X), 3)
    assert probe.get_params()["C"] == 1.0


def test_planted_linear_signal_is_decoded_almost_perfectly():
    X, y = planted()
    result = probe_layers({HOOK: X}, y)
    assert result.accuracy["base"][0]["acc"] > 0.95
    assert result.chance == pytest.approx(np.bincount(y).max() / len(y))
    assert result.accuracy["base"][0]["ci_low"] > result.chance
    matrix = np.asarray(result.confusion["base"][0])
    assert matrix.sum() == len(y)
    assert np.trace(matrix) == round(result.accuracy["base"][0]["acc"] * len(y))
    assert list(matrix.sum(1)) == list(np.bincount(y))


def test_shuffled_labels_sit_at_chance_and_the_interval_covers_it():
    X, y = planted(n=300, seed=1)
    shuffled = np.random.default_rng(2).permutation(y)
    X = np.random.default_rng(3).normal(size=X.shape)  # no signal left at all
    row = probe_layers({HOOK: X}, shuffled).accuracy["base"][0]
    chance = np.bincount(shuffled).max() / len(shuffled)
    assert row["ci_low"] <= chance + 0.02 and row["ci_high"] >= 1 / 3 - 0.02
    # No signal: the accuracy is what sklearn's own out-of-fold predictions give, not a loose bound.
    assert row["acc"] == pytest.approx((_sklearn_reference(X, shuffled) == shuffled).mean(), abs=1e-12)


def test_transfer_fails_when_the_signal_moves_but_retraining_finds_it():
    X_base, y = planted(seed=4, signal_dim=0)
    X_new = np.random.default_rng(5).normal(size=X_base.shape)
    X_new[np.arange(len(y)), 5 + y] += 6.0  # the same information, along other axes
    result = probe_layers({HOOK: X_base}, y, unlearned={HOOK: X_new})
    acc = {v: result.accuracy[v][0]["acc"] for v in ("base", "transfer", "unlearned")}
    assert acc["base"] > 0.95 and acc["unlearned"] > 0.95
    assert acc["transfer"] < 0.6


def test_transfer_succeeds_when_the_unlearned_features_are_unchanged():
    X, y = planted(seed=6)
    result = probe_layers({HOOK: X}, y, unlearned={HOOK: X.copy()})
    assert result.accuracy["transfer"][0]["acc"] == result.accuracy["base"][0]["acc"]


def test_candidates_restrict_predictions_to_each_rows_choices():
    rng = np.random.default_rng(7)
    values = [f"v{i}" for i in range(8)]
    labels = rng.choice(values, size=200)
    X = np.stack([np.eye(8)[values.index(v)] * 3 + rng.normal(scale=0.3, size=8) for v in labels])
    candidates = [[v, *rng.choice([w for w in values if w != v], size=3, replace=False)] for v in labels]
    groups = ["a" if i % 2 else "b" for i in range(200)]
    result = probe_layers({HOOK: X}, labels, candidates=candidates, groups=groups)
    assert result.chance == 0.25
    assert result.accuracy["base"][0]["acc"] > 0.95
    assert set(result.by_group["base"]) == {"a", "b"}
    probe = LinearProbe().fit(X, labels)
    picks = probe.predict_among(X[:5], [["v0", "v1"]] * 5)
    assert set(picks) <= {"v0", "v1"}


def test_probe_analysis_round_trips_through_json(tmp_path):
    X, y = planted()
    result = probe_layers({HOOK: X}, y, unlearned={HOOK: X}, name="domain")
    loaded = ProbeAnalysis.load(result.save(tmp_path / "probe.json"))
    assert loaded.to_dict() == result.to_dict()
    assert loaded.layers == [0]


def test_misaligned_rows_are_refused():
    X, y = planted()
    with pytest.raises(ValueError, match="rows"):
        probe_layers({HOOK: X[:-1]}, y)


def _sklearn_reference(X: np.ndarray, y: np.ndarray, n_folds: int = 5, seed: int = 0, C: float = 1.0) -> np.ndarray:
    """Out-of-fold predictions from sklearn's own cross-validation, on the folds probe_layers documents."""
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return cross_val_predict(LinearProbe(C=C, random_state=seed), X, y, cv=folds)


@pytest.mark.parametrize("signal", [True, False], ids=["planted", "noise"])
def test_cross_validated_accuracy_is_sklearns_cross_val_predict(signal: bool):
    # Pure noise in 40 dimensions for 90 rows: a probe that saw its test rows would score far above the
    # out-of-fold accuracy sklearn reports; with a signal, every fold's predictions must agree too.
    X, y = planted(n=90, d=40, seed=8)
    if not signal:
        X = np.random.default_rng(9).normal(size=X.shape)
    X_new = np.random.default_rng(10).normal(size=X.shape) + X
    result = probe_layers({HOOK: X}, y, unlearned={HOOK: X_new})
    folds = list(StratifiedKFold(n_splits=5, shuffle=True, random_state=0).split(X, y))
    for variant, features in (("base", X), ("unlearned", X_new)):
        correct = _sklearn_reference(features, y) == y
        row = result.accuracy[variant][0]
        assert row["acc"] == pytest.approx(correct.mean(), abs=1e-12), variant
        assert row["fold_acc"] == pytest.approx([correct[test].mean() for _, test in folds], abs=1e-12), variant
    # transfer: each fold's base probe, scored on the unlearned features of its held-out rows
    transfer = np.empty(len(y), dtype=y.dtype)
    for train, test in folds:
        transfer[test] = LinearProbe(random_state=0).fit(X[train], y[train]).predict(X_new[test])
    assert result.accuracy["transfer"][0]["acc"] == pytest.approx((transfer == y).mean(), abs=1e-12)
    if not signal:
        in_sample = (LinearProbe(random_state=0).fit(X, y).predict(X) == y).mean()
        assert in_sample > result.accuracy["base"][0]["acc"] + 0.2, "the leak this test exists to catch must be visible"
