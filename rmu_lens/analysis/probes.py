"""Linear probes per layer: is a domain, or the answer to a question, linearly decodable — before and after RMU?

:class:`LinearProbe` is a scikit-learn estimator (``StandardScaler`` + ``LogisticRegression`` in a
``Pipeline``): ``fit`` / ``predict`` / ``score``, clonable, usable in sklearn's own tools.

:func:`probe_layers` runs stratified k-fold cross-validation per hook point on the same folds for
three probes:

* ``base``: trained and tested on base activations;
* ``transfer``: trained on base activations, tested on the unlearned model's activations of the
  same held-out rows (does the old read-out still work?);
* ``unlearned``: retrained and tested on unlearned activations (is the information still there,
  in a new place?).

Accuracy is pooled over the out-of-fold predictions, with a Wilson 95% interval, beside the
chance rate (the majority class share; with ``candidates``, the mean of 1 / number of candidates).
With ``candidates`` each row is predicted among its own allowed labels — the knowledge probe uses
it to pick the answer among a question's four choices.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from rmu_lens.analysis.activations import Activations, answer_position_activations
from rmu_lens.analysis.registry import Analyzer, DatasetInfo, register_analyzer
from rmu_lens.eval.stats import wilson_interval
from rmu_lens.results import JSONResult

PROBE_FORMAT = "rmu_lens.probes/1"
PROBE_SET_FORMAT = "rmu_lens.probe_set/1"
DOMAIN_PROBE_ROLES = ("forget", "retain", "adjacent")
VARIANTS = ("base", "transfer", "unlearned")
MAX_CONFUSION_CLASSES = 12
PROBE_CAPTIONS = {
    "domain": "Linear-probe accuracy per layer for which dataset a text comes from (forget, retain, adjacent): "
              "base probe on the base model, the same probe on the unlearned model, and a probe retrained on it.",
    "knowledge": "Linear-probe accuracy per layer for the correct answer of each question from the last context "
                 "token: if the retrained probe stays well above chance after RMU, the knowledge is still decodable.",
}


class LinearProbe(ClassifierMixin, BaseEstimator):
    """A linear probe: standardise the features, then multinomial logistic regression (sklearn inside).

    ``C`` is the inverse L2 strength; learned state lives in ``pipeline_`` and ``classes_``.
    """

    def __init__(self, C: float = 1.0, max_iter: int = 2000, random_state: int | None = 0) -> None:
        self.C = C
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> LinearProbe:
        """Fit on features ``X`` ``[n, d]`` and labels ``y`` ``[n]``."""
        X, y = _features(X, "X"), np.asarray(y)
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)} labels")
        if len(np.unique(y)) < 2:
            raise ValueError("y has a single class: a probe needs at least two labels to separate")
        self.pipeline_ = Pipeline([
            ("scale", StandardScaler()),
            ("logistic", LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=self.random_state)),
        ])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # separable data: weights grow, predictions are fine
            # Answer-text labels (knowledge probe) have many classes with few rows each, by design.
            warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
            self.pipeline_.fit(X, y)
        self.classes_ = self.pipeline_.classes_
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.pipeline_.predict_proba(_features(X, "X"))

    def decision_function(self, X: Any) -> np.ndarray:
        return self.pipeline_.decision_function(_features(X, "X"))

    def predict(self, X: Any) -> np.ndarray:
        return self.pipeline_.predict(_features(X, "X"))

    def predict_among(self, X: Any, candidates: Sequence[Sequence[Any]]) -> np.ndarray:
        """For each row, the most probable label among that row's ``candidates`` (labels unseen in fit rank last)."""
        proba = self.predict_proba(X)
        column = {label: i for i, label in enumerate(self.classes_)}
        picks = []
        for row, allowed in zip(proba, candidates):
            scores = [row[column[c]] if c in column else -1.0 for c in allowed]
            picks.append(allowed[int(np.argmax(scores))])
        return np.asarray(picks, dtype=object if isinstance(picks[0], str) else None)

    def score(self, X: Any, y: Any, sample_weight: Any = None, candidates: Sequence[Sequence[Any]] | None = None) -> float:
        """Accuracy on ``(X, y)``; with ``candidates``, of :meth:`predict_among`."""
        y = np.asarray(y)
        predicted = self.predict(X) if candidates is None else self.predict_among(X, candidates)
        correct = (np.asarray(predicted) == y).astype(float)
        if sample_weight is not None:
            return float(np.average(correct, weights=sample_weight))
        return float(correct.mean())


def _features(X: Any, name: str) -> np.ndarray:
    if hasattr(X, "detach"):
        X = X.detach().cpu().numpy()
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a [n_samples, n_features] matrix, got shape {X.shape}")
    return X


def _per_hook(features: Activations | Mapping[str, Any], hook_names: Sequence[str] | None) -> dict[str, np.ndarray]:
    if isinstance(features, Activations):
        names = list(hook_names or features.hook_names)
        return {n: _features(features.sequences(n, features.reduce or "mean"), n) for n in names}
    names = list(hook_names or features)
    missing = [n for n in names if n not in features]
    if missing:
        raise KeyError(f"No features for {missing}; given: {list(features)}")
    return {n: _features(features[n], n) for n in names}


def _folds(y: np.ndarray, stratify: np.ndarray, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    _, counts = np.unique(stratify, return_counts=True)
    if counts.min() >= n_folds:
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        return list(splitter.split(np.zeros(len(y)), stratify))
    splitter = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y))))


@dataclass
class ProbeAnalysis(JSONResult):
    """Cross-validated probe accuracy per hook point for ``base``, ``transfer`` and ``unlearned`` probes.

    ``accuracy[variant]`` is a list aligned with ``hook_names`` of ``{"acc", "ci_low", "ci_high", "n",
    "fold_acc"}``; ``by_group[variant][group]`` a list of accuracies per hook point.
    """

    name: str
    description: str
    hook_names: list[str]
    layers: list[int | None]
    classes: list[Any]
    n: int
    n_folds: int
    chance: float
    chance_rule: str
    accuracy: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    by_group: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    group_sizes: dict[str, int] = field(default_factory=dict)
    confusion: dict[str, list[list[list[int]]]] = field(default_factory=dict)
    """Per variant, per hook point: out-of-fold confusion matrix (rows true, columns predicted, in
    ``classes`` order); only for plain classification with at most MAX_CONFUSION_CLASSES classes."""
    meta: dict[str, Any] = field(default_factory=dict)

    def acc(self, variant: str = "base", hook_name: str | None = None) -> float:
        """Accuracy of ``variant`` at ``hook_name`` (the first hook point by default)."""
        i = self.hook_names.index(hook_name) if hook_name else 0
        return self.accuracy[variant][i]["acc"]

    FORMAT = PROBE_FORMAT
    WHAT = "a probe analysis"

    def figures(self) -> dict[str, Any]:
        """``probe_{name}``: accuracy per layer of each probe variant against chance."""
        from rmu_lens.plots.representations import plot_probes

        return {f"probe_{self.name}": plot_probes(self)}

    def captions(self) -> dict[str, str]:
        return {f"probe_{self.name}": PROBE_CAPTIONS.get(
            self.name, f"Linear-probe accuracy per layer ({self.name}), before and after RMU.")}

    def to_dict(self) -> dict[str, Any]:
        return {"format": PROBE_FORMAT, **{k: getattr(self, k) for k in self.__dataclass_fields__}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeAnalysis:
        cls.check_format(data)
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def _summary(correct: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    right, n = int(correct.sum()), len(correct)
    low, high = wilson_interval(right, n)
    return {"acc": right / n, "ci_low": low, "ci_high": high, "n": n,
            "fold_acc": [float(correct[test].mean()) for _, test in folds]}


def probe_layers(
    base: Activations | Mapping[str, Any],
    labels: Sequence[Any],
    *,
    unlearned: Activations | Mapping[str, Any] | None = None,
    hook_names: Sequence[str] | None = None,
    candidates: Sequence[Sequence[Any]] | None = None,
    groups: Sequence[str] | None = None,
    n_folds: int = 5,
    seed: int = 0,
    C: float = 1.0,
    name: str = "probe",
    description: str = "",
) -> ProbeAnalysis:
    """Cross-validated linear probes of ``labels`` at every hook point (module docstring).

    ``base`` / ``unlearned``: Activations (per-sequence vectors are used; per-token ones are averaged
    over statistics tokens) or a mapping hook name → ``[n, d]`` features, rows aligned with ``labels``.
    ``groups`` (e.g. each question's subject) adds per-group accuracy and stratifies the folds.
    """
    from rmu_lens.analysis.collapse import LAYER_OF_HOOK

    y = np.asarray(list(labels))
    X_base = _per_hook(base, hook_names)
    names = list(X_base)
    X_new = _per_hook(unlearned, names) if unlearned is not None else None
    n = len(y)
    for hook, X in X_base.items():
        if len(X) != n or (X_new is not None and X_new[hook].shape != X.shape):
            raise ValueError(f"{hook}: features have {len(X)} rows for {n} labels (base and unlearned rows must align)")
    if candidates is not None and len(candidates) != n:
        raise ValueError(f"candidates has {len(candidates)} rows for {n} labels")
    if candidates is not None and any(label not in allowed for label, allowed in zip(y, candidates)):
        raise ValueError("every label must be one of its row's candidates")
    group_labels = np.asarray(list(groups), dtype=object) if groups is not None else None
    if group_labels is not None and len(group_labels) != n:
        raise ValueError(f"groups has {len(group_labels)} entries for {n} labels")
    if n_folds < 2 or n < n_folds:
        raise ValueError(f"n_folds={n_folds} needs at least 2 folds and at least n_folds rows (have {n})")
    stratify = y if candidates is None else (group_labels if group_labels is not None else np.zeros(n))
    folds = _folds(y, stratify, n_folds, seed)

    values, counts = np.unique(y.astype(str), return_counts=True)
    if candidates is None:
        chance, rule = float(counts.max() / n), "majority class share"
    else:
        chance, rule = float(np.mean([1 / len(c) for c in candidates])), "mean of 1 / number of candidates"
    variants = VARIANTS if X_new is not None else ("base",)
    accuracy: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    by_group: dict[str, dict[str, list[float]]] = {v: {} for v in variants}
    with_confusion = candidates is None and len(values) <= MAX_CONFUSION_CLASSES
    confusion: dict[str, list[list[list[int]]]] = {v: [] for v in variants} if with_confusion else {}
    for hook in names:
        predicted = {v: np.empty(n, dtype=object) for v in variants}
        for train, test in folds:
            allowed = [candidates[i] for i in test] if candidates is not None else None
            probe = LinearProbe(C=C, random_state=seed).fit(X_base[hook][train], y[train])
            predicted["base"][test] = _predict(probe, X_base[hook][test], allowed)
            if X_new is not None:
                predicted["transfer"][test] = _predict(probe, X_new[hook][test], allowed)
                retrained = LinearProbe(C=C, random_state=seed).fit(X_new[hook][train], y[train])
                predicted["unlearned"][test] = _predict(retrained, X_new[hook][test], allowed)
        correct = {v: np.asarray([str(p) == str(t) for p, t in zip(predicted[v], y)]) for v in variants}
        for v in variants:
            accuracy[v].append(_summary(correct[v], folds))
            if with_confusion:
                from sklearn.metrics import confusion_matrix

                matrix = confusion_matrix(y.astype(str), predicted[v].astype(str), labels=[str(x) for x in values])
                confusion[v].append(matrix.tolist())
            if group_labels is not None:
                for group in sorted(set(group_labels)):
                    members = group_labels == group
                    by_group[v].setdefault(str(group), []).append(float(correct[v][members].mean()))
    layers = []
    for hook in names:
        match = LAYER_OF_HOOK.match(hook)
        layers.append(int(match.group(1)) if match else None)
    return ProbeAnalysis(
        name=name, description=description, hook_names=names, layers=layers,
        classes=[str(v) for v in values] if len(values) <= 50 else [f"{len(values)} classes"],
        n=n, n_folds=len(folds), chance=chance, chance_rule=rule, accuracy=accuracy,
        by_group=by_group if group_labels is not None else {},
        group_sizes={str(g): int((group_labels == g).sum()) for g in sorted(set(group_labels))} if group_labels is not None else {},
        confusion=confusion,
        meta={"probe": "StandardScaler + LogisticRegression", "C": C, "seed": seed,
              "folds": "stratified k-fold" if candidates is None else "k-fold stratified by group"},
    )


def _predict(probe: LinearProbe, X: np.ndarray, candidates: list | None) -> np.ndarray:
    return probe.predict(X) if candidates is None else probe.predict_among(X, candidates)


@dataclass
class ProbeSet(JSONResult):
    """The probes of one analysis by task (``domain``, ``knowledge``), saved and drawn together."""

    probes: dict[str, ProbeAnalysis] = field(default_factory=dict)

    FORMAT = PROBE_SET_FORMAT
    WHAT = "a set of probe analyses"

    def figures(self) -> dict[str, Any]:
        """``probe_{task}`` per probe."""
        return {name: figure for probe in self.probes.values() for name, figure in probe.figures().items()}

    def captions(self) -> dict[str, str]:
        return {name: caption for probe in self.probes.values() for name, caption in probe.captions().items()}

    def to_dict(self) -> dict[str, Any]:
        return {"format": PROBE_SET_FORMAT, "probes": {name: p.to_dict() for name, p in self.probes.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProbeSet:
        cls.check_format(data)
        return cls({name: ProbeAnalysis.from_dict(p) for name, p in data["probes"].items()})


def knowledge_probe(
    base_model: Any,
    unlearned_model: Any,
    questions: Sequence[Any],
    hook_names: Sequence[str],
    *,
    mode: str = "cloze",
    n_folds: int = 5,
    seed: int = 0,
    batch_size: int = 8,
    progress: bool = True,
) -> ProbeAnalysis:
    """Probe the answer from the activation at the last context token, before and after unlearning.

    Cloze (default): the label is the correct choice's text and the probe picks among the question's
    own choices (the context does not list them, so an index would be unlearnable); chance = 1/4.
    Letter: the choices are in the prompt and the label is the answer's index (the WMDP paper's setup).
    """
    base = answer_position_activations(base_model, questions, hook_names, mode, batch_size=batch_size, progress=progress)
    new = answer_position_activations(unlearned_model, questions, hook_names, mode, batch_size=batch_size, progress=progress)
    groups = [q.group for q in questions]
    if mode == "cloze":
        labels = [q.choices[q.answer] for q in questions]
        candidates = [list(q.choices) for q in questions]
        description = "the correct choice's text, picked among the question's choices, from the last context token"
    else:
        labels, candidates = [int(q.answer) for q in questions], None
        description = "the correct answer's index (A-D listed in the prompt), from the last context token"
    return probe_layers(
        base, labels, unlearned=new, candidates=candidates, groups=groups, n_folds=n_folds, seed=seed,
        name="knowledge", description=f"{mode} prompts: {description}",
    )


@register_analyzer("probes", result=ProbeSet)
class ProbeAnalyzer(Analyzer):
    """With ``config.probes``: the domain probe (two or more forget/retain/adjacent sets) and, given
    questions, the knowledge probe."""

    def __init__(self, inputs: Any) -> None:
        super().__init__(inputs)
        self.features: dict[str, dict[str, dict[str, np.ndarray]]] = {}

    def observe(self, dataset: DatasetInfo, base: Activations, unlearned: Activations) -> None:
        if self.inputs.config.probes and dataset.role in DOMAIN_PROBE_ROLES:
            self.features[dataset.name] = {
                model: {h: acts.sequences(h).numpy() for h in self.inputs.hook_names}
                for model, acts in (("base", base), ("unlearned", unlearned))
            }

    def finish(self) -> ProbeSet | None:
        inputs, config = self.inputs, self.inputs.config
        if not config.probes:
            return None
        hooks = inputs.hook_names
        probes: dict[str, ProbeAnalysis] = {}
        if len(self.features) >= 2:
            sets = list(self.features)
            labels = [n for n in sets for _ in range(len(self.features[n]["base"][hooks[0]]))]
            features = {m: {h: np.concatenate([self.features[n][m][h] for n in sets]) for h in hooks}
                        for m in ("base", "unlearned")}
            probes["domain"] = probe_layers(
                features["base"], labels, unlearned=features["unlearned"], n_folds=config.probe_folds,
                seed=config.seed, name="domain",
                description="which dataset a text comes from (forget vs retain vs adjacent), from its mean activation "
                            "over statistics tokens",
            )
        if inputs.questions:
            probes["knowledge"] = knowledge_probe(
                inputs.base_model, inputs.unlearned_model, inputs.questions, hooks, mode=config.knowledge_mode,
                n_folds=config.probe_folds, seed=config.seed, batch_size=config.batch_size, progress=inputs.progress,
            )
        return ProbeSet(probes) if probes else None
