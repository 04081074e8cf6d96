"""analyze(): base vs unlearned model on named datasets — collapse, probes and damage in one result.

    analysis = analyze(base, unlearned, {"virology": (bio_texts, "forget"), "retain": (wiki, "retain"),
                                         "biology": (bio_adjacent, "adjacent")},
                       control_vectors=run.control_vectors, steering_coeffs=run.steering_coeffs, layer=7)
    analysis.summary(); analysis.save("analysis/")

Per dataset the texts are tokenized once and the same token batch goes through both models, so
tokens pair up; activations are collected at every requested layer's ``hook_resid_post`` with
``stop_at_layer`` and dropped after their statistics are taken, so memory stays at one dataset.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rmu_lens.analysis.activations import (
    DEFAULT_MEMORY_LIMIT_MB,
    TokenBatch,
    answer_position_activations,
    collect_activations,
    resid_post_hooks,
    tokenize,
)
from rmu_lens.analysis.collapse import ROLES, CollapseAnalysis, collapse_stats, pca_projection
from rmu_lens.analysis.damage import DamageAnalysis
from rmu_lens.analysis.probes import ProbeAnalysis, probe_layers
from rmu_lens.data.corpora import Corpus

ANALYSIS_FORMAT = "rmu_lens.analysis/1"
ANALYSIS_FILE = "analysis.json"
DOMAIN_PROBE_ROLES = ("forget", "retain", "adjacent")


@dataclass
class Analysis:
    """Everything :func:`analyze` measured: collapse (always), probes and damage (when asked for)."""

    collapse: CollapseAnalysis
    probes: dict[str, ProbeAnalysis] = field(default_factory=dict)
    damage: DamageAnalysis | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def _repr_html_(self) -> str:
        """Notebook summary: layer-l numbers per dataset, probe accuracies, damage ranking (names escaped)."""
        from rmu_lens.jupyter.display import analysis_html

        return analysis_html(self)

    def summary(self) -> dict[str, Any]:
        """Headline numbers at layer l: forget norm vs c, collapse, retain/adjacent shift, probes, damage."""
        c = self.collapse
        out: dict[str, Any] = {"layer": c.layer, "hook": f"blocks.{c.layer}.hook_resid_post", "datasets": {}}
        for name, info in c.datasets.items():
            row = {
                "role": info["role"],
                "norm_base": c.value(name, "mean_norm", "base"),
                "norm_unlearned": c.value(name, "mean_norm", "unlearned"),
                "cos_unlearned_base": c.value(name, "cos_unlearned_base"),
                "norm_ratio": c.value(name, "norm_ratio"),
            }
            if info["role"] == "forget":
                coefficient = c.steering_coeffs[info["topic"]]
                row |= {
                    "steering_coeff": coefficient,
                    "norm_unlearned_over_c": row["norm_unlearned"] / coefficient,
                    "cos_u_unlearned": c.value(name, "cos_u", "unlearned"),
                    "cos_u_perp_base": c.value(name, "cos_u_perp", "base"),
                    "cos_u_perp_unlearned": c.value(name, "cos_u_perp", "unlearned"),
                    "dist_to_cu_over_c": c.value(name, "dist_to_cu", "unlearned") / coefficient,
                    "mean_pairwise_cos": [c.value(name, "mean_pairwise_cos", m) for m in ("base", "unlearned")],
                    "effective_rank": [c.value(name, "effective_rank", m) for m in ("base", "unlearned")],
                }
            out["datasets"][name] = row
        hook = f"blocks.{c.layer}.hook_resid_post"
        for task, probe in self.probes.items():
            if hook in probe.hook_names:
                i = probe.hook_names.index(hook)
                out[f"{task}_probe"] = {
                    "chance": probe.chance,
                    **{v: probe.accuracy[v][i]["acc"] for v in probe.accuracy},
                    "by_group": {v: {g: accs[i] for g, accs in groups.items()} for v, groups in probe.by_group.items()},
                }
        if self.damage is not None:
            out["damage"] = {
                "ranked": [(r["domain"], round(r["accuracy_drop"], 4), round(r["shift_at_layer"], 4)) for r in self.damage.rows],
                "correlation_shift_at_layer": self.damage.correlations.get("shift_at_layer_all"),
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": ANALYSIS_FORMAT,
            "meta": self.meta,
            "collapse": self.collapse.to_dict(),
            "probes": {name: p.to_dict() for name, p in self.probes.items()},
            "damage": self.damage.to_dict() if self.damage is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Analysis:
        if data.get("format") != ANALYSIS_FORMAT:
            raise ValueError(f"Not an rmu_lens analysis (format {data.get('format')!r}, expected {ANALYSIS_FORMAT!r})")
        return cls(
            collapse=CollapseAnalysis.from_dict(data["collapse"]),
            probes={name: ProbeAnalysis.from_dict(p) for name, p in data.get("probes", {}).items()},
            damage=DamageAnalysis.from_dict(data["damage"]) if data.get("damage") else None,
            meta=data.get("meta", {}),
        )

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``analysis.json`` into ``directory`` (created if needed); numbers only, no activations."""
        from rmu_lens._io import atomic_write_json

        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise NotADirectoryError(f"{directory} exists and is not a directory: Analysis.save takes a directory")
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_json(directory / ANALYSIS_FILE, self.to_dict())
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Analysis:
        """Read a directory written by :meth:`save` (or an ``analysis.json`` path)."""
        path = Path(directory)
        file = path / ANALYSIS_FILE if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"{directory} holds no {ANALYSIS_FILE}: write one with Analysis.save(directory)")
        return cls.from_dict(json.loads(file.read_text(encoding="utf-8")))


def _datasets(datasets: Mapping[str, Any], topics: list[str]) -> dict[str, tuple[Any, str, str]]:
    if not isinstance(datasets, Mapping) or not datasets:
        raise ValueError("datasets must be a non-empty mapping name -> (texts or Corpus, role)")
    checked = {}
    for name, entry in datasets.items():
        if not isinstance(entry, (tuple, list)) or len(entry) not in (2, 3):
            raise ValueError(f"datasets[{name!r}] must be (texts, role) or (texts, role, topic), role in {ROLES}")
        data, role, *rest = entry
        if role not in ROLES:
            raise ValueError(f"datasets[{name!r}]: role={role!r}; choose one of {ROLES}")
        if rest:
            topic = rest[0]
        elif role == "forget" and name in topics:
            topic = name
        elif role == "forget" and len(topics) > 1:
            raise ValueError(
                f"datasets[{name!r}] is a forget set but matches no topic {topics}: name it after its topic "
                f"or pass (texts, 'forget', topic)"
            )
        else:
            topic = topics[0]  # non-forget sets are read against the first topic's u unless told otherwise
        if topic not in topics:
            raise ValueError(f"datasets[{name!r}]: topic {topic!r} has no control vector; topics: {topics}")
        checked[str(name)] = (data, role, topic)
    return checked


def _limited(data: Any, max_texts: int | None, tokenizer: Any, max_length: int, name: str) -> TokenBatch:
    if isinstance(data, TokenBatch):
        return data if max_texts is None else TokenBatch(data.input_ids[:max_texts], data.attention_mask[:max_texts])
    texts = list(data.texts) if isinstance(data, Corpus) else data
    if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"datasets[{name!r}]: expected a non-empty list of texts, a Corpus or a TokenBatch")
    batch = tokenize(tokenizer, texts if max_texts is None else texts[:max_texts], max_length)
    keep = batch.attention_mask.sum(-1) >= 2  # one-token texts have no token left once position 0 is excluded
    if not keep.any():
        raise ValueError(f"datasets[{name!r}]: every text is shorter than 2 tokens")
    return TokenBatch(batch.input_ids[keep], batch.attention_mask[keep])


def analyze(
    base_model: Any,
    unlearned_model: Any,
    datasets: Mapping[str, Any],
    *,
    control_vectors: Mapping[str, Any],
    steering_coeffs: Mapping[str, float],
    layer: int,
    questions: Sequence[Any] | None = None,
    comparison: Any = None,
    layers: Sequence[int] | None = None,
    max_texts: int | None = 32,
    max_length: int = 128,
    batch_size: int = 8,
    probes: bool = True,
    knowledge_mode: str = "cloze",
    probe_folds: int = 5,
    pca_points: int = 200,
    subjects: Mapping[str, str] | None = None,
    memory_limit_mb: float = DEFAULT_MEMORY_LIMIT_MB,
    seed: int = 0,
    progress: bool = True,
) -> Analysis:
    """Compare ``base_model`` and ``unlearned_model`` on ``datasets`` = ``{name: (texts | Corpus, role)}``.

    Roles: forget / retain / adjacent / distant; a forget set is read against its topic's u (its
    name, or a third tuple item), other sets against the first topic's. Collapse statistics always;
    the domain probe (forget vs retain vs adjacent) when ``probes``; the knowledge probe when
    ``questions`` are given; the damage table when ``comparison`` (``rmu_lens.eval.compare``) is given.
    ``layers`` defaults to every layer; ``max_texts`` caps each dataset (first texts, in order).
    """
    from rmu_lens.models import tokenizer_of

    started = time.perf_counter()
    if base_model is unlearned_model:
        raise ValueError(
            "base_model and unlearned_model are the same object: unlearn() edits its model in place, so load a "
            "fresh copy of the original for base_model (e.g. rmu_lens.load_model(...))"
        )
    topics = list(control_vectors)
    if not topics:
        raise ValueError("control_vectors is empty: pass {topic: u} (RMURun.control_vectors)")
    missing = [t for t in topics if t not in steering_coeffs]
    if missing:
        raise ValueError(f"steering_coeffs lacks topics {missing}: pass {{topic: c}} for every control vector")
    checked = _datasets(datasets, topics)
    layer_list = sorted(set(range(base_model.cfg.n_layers) if layers is None else [int(x) for x in layers]) | {int(layer)})
    hooks = resid_post_hooks(base_model, layer_list)
    layer_hook = f"blocks.{int(layer)}.hook_resid_post"
    tokenizer = tokenizer_of(base_model)
    vectors = {t: torch.as_tensor(v, dtype=torch.float32).reshape(-1) for t, v in control_vectors.items()}
    collapse = CollapseAnalysis.empty(int(layer), hooks, vectors, dict(steering_coeffs))
    rng = np.random.default_rng(seed)

    sequence_features: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    pca_tokens: dict[str, dict[str, np.ndarray]] = {}
    collect = dict(batch_size=batch_size, memory_limit_mb=memory_limit_mb, progress=progress)
    for name, (data, role, topic) in checked.items():
        batch = _limited(data, max_texts, tokenizer, max_length, name)
        with collect_activations(base_model, batch, hooks, **collect) as base_acts, \
                collect_activations(unlearned_model, batch, hooks, **collect) as new_acts:
            stats = collapse_stats(base_acts, new_acts, vectors[topic], float(steering_coeffs[topic]), hooks)
            collapse.add(name, role, topic, stats, {"n_sequences": base_acts.n_sequences, "n_tokens": base_acts.n_tokens})
            sequence_features[name] = {
                m: {h: acts.sequences(h).numpy() for h in hooks} for m, acts in (("base", base_acts), ("unlearned", new_acts))
            }
            base_tokens, new_tokens = base_acts.tokens(layer_hook), new_acts.tokens(layer_hook)
            pick = np.sort(rng.choice(len(base_tokens), size=min(pca_points, len(base_tokens)), replace=False))
            pca_tokens[name] = {"base": base_tokens[pick].numpy(), "unlearned": new_tokens[pick].numpy()}
    targets = {t: (float(steering_coeffs[t]) * vectors[t]).numpy() for t in topics}
    collapse.pca = {"layer": int(layer), "hook": layer_hook, "points_per_dataset": pca_points,
                    **pca_projection(pca_tokens, targets)}

    collapse_seconds = time.perf_counter() - started
    probe_results: dict[str, ProbeAnalysis] = {}
    domain_sets = [n for n, (_, role, _) in checked.items() if role in DOMAIN_PROBE_ROLES]
    if probes and len(domain_sets) >= 2:
        labels = [n for n in domain_sets for _ in range(len(sequence_features[n]["base"][hooks[0]]))]
        features = {m: {h: np.concatenate([sequence_features[n][m][h] for n in domain_sets]) for h in hooks}
                    for m in ("base", "unlearned")}
        probe_results["domain"] = probe_layers(
            features["base"], labels, unlearned=features["unlearned"], n_folds=probe_folds, seed=seed, name="domain",
            description="which dataset a text comes from (forget vs retain vs adjacent), from its mean activation "
                        "over statistics tokens",
        )
    if probes and questions:
        probe_results["knowledge"] = knowledge_probe(
            base_model, unlearned_model, questions, hooks, mode=knowledge_mode, n_folds=probe_folds, seed=seed,
            batch_size=batch_size, progress=progress,
        )
    damage = DamageAnalysis.from_results(comparison, collapse, subjects) if comparison is not None else None
    meta = {
        "base_model": _model_name(base_model),
        "unlearned_model": _model_name(unlearned_model),
        "layer": int(layer),
        "hook_names": hooks,
        "max_texts": max_texts,
        "max_length": max_length,
        "tokens": "one token batch per dataset, right padding, shared by both models; statistics exclude padding "
                  "and the first real token of each row (position 0, an outlier)",
        "seconds": {"activations_and_collapse": round(collapse_seconds, 1),
                    "probes_and_damage": round(time.perf_counter() - started - collapse_seconds, 1),
                    "total": round(time.perf_counter() - started, 1)},
    }
    return Analysis(collapse=collapse, probes=probe_results, damage=damage, meta=meta)


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


def _model_name(model: Any) -> str:
    original = getattr(model, "original_model", None)
    return str(getattr(original, "name_or_path", "") or type(model).__name__)


def run_inputs(run: Any) -> dict[str, Any]:
    """control_vectors, steering_coeffs, layer (and the run directory's model path) from an RMURun or a run directory."""
    from rmu_lens.rmu.runner import block_output_index

    if hasattr(run, "control_vectors") and hasattr(run, "steering_coeffs"):
        n_layers = run.model.cfg.n_layers if run.model is not None else 10**6
        return {
            "control_vectors": dict(run.control_vectors), "steering_coeffs": dict(run.steering_coeffs),
            "layer": block_output_index(run.config.read_hook, n_layers), "model": run.model, "model_dir": None,
        }
    from rmu_lens._io import load_tensors
    from rmu_lens.rmu.rundir import read_run

    directory = Path(run)
    info = read_run(directory)
    vectors_file = directory / "control_vectors.safetensors"
    if not vectors_file.is_file():
        raise FileNotFoundError(f"{directory} has no control_vectors.safetensors: is it a complete rmu_lens run directory?")
    tensors = load_tensors(vectors_file)
    topics = info["topics"]
    return {
        "control_vectors": {t: tensors[f"u.{t}"] for t in topics},
        "steering_coeffs": {t: float(info["steering_coeffs"][t]) for t in topics},
        "layer": block_output_index(info["read_hook"], info["model"]["n_layers"]),
        "model": None,
        "model_dir": directory / "model",
    }


def analyze_run(
    base_model: Any, run: Any, datasets: Mapping[str, Any], *, unlearned_model: Any = None, **options: Any
) -> Analysis:
    """:func:`analyze` with u, c and layer l taken from ``run`` (an RMURun, or a run directory).

    The unlearned model is ``run.model`` or the run directory's ``model/`` unless ``unlearned_model``
    is given. ``base_model`` must be a separate copy of the original (unlearn edits in place).
    """
    inputs = run_inputs(run)
    if unlearned_model is None:
        unlearned_model = inputs["model"]
    if unlearned_model is None:
        model_dir = inputs["model_dir"]
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"{model_dir} holds no saved model: the run did not finish, or pass unlearned_model=")
        from rmu_lens.models import load_model

        unlearned_model = load_model(model_dir)
    options.setdefault("layer", inputs["layer"])
    return analyze(
        base_model, unlearned_model, datasets, control_vectors=inputs["control_vectors"],
        steering_coeffs=inputs["steering_coeffs"], **options,
    )


def analyze_model(
    base_model: Any,
    unlearned_model: Any,
    datasets: Mapping[str, Any],
    *,
    run: Any = None,
    weights: Any = None,
    recovery: Any = None,
    **options: Any,
) -> Analysis:
    """:func:`analyze` for any unlearned model: u, c and l are estimated (``rmu_lens.analysis.recover``).

    The forget sets of ``datasets`` are the topics and its first retain set the reference. With a
    ``run`` (RMURun or run directory) its recorded u, c and l are used and the estimate goes beside
    them as a check (cos(û, u), ĉ / c, l̂ == l). A topic that did not collapse is read against its
    first principal direction, and ``meta["recovery"]`` says it did not collapse. ``weights``: a pair of
    model folders for a shard-by-shard weight diff (default: the loaded models).
    """
    from rmu_lens.analysis.recover import recover

    forget = {name: entry[0] for name, entry in datasets.items() if entry[1] == "forget"}
    retain = [entry[0] for entry in datasets.values() if entry[1] == "retain"]
    if not forget or not retain:
        raise ValueError("analyze_model needs at least one forget set and one retain set in datasets "
                         "(the estimate compares how far each moved)")
    if recovery is None:
        recovery = recover(base_model, unlearned_model, forget, retain[0], weights=weights,
                           layers=options.get("layers"), max_texts=options.get("max_texts", 32),
                           max_length=options.get("max_length", 128), progress=options.get("progress", True))
    if run is not None:
        inputs = run_inputs(run)
        check = recovery.check(inputs["control_vectors"], inputs["steering_coeffs"], inputs["layer"])
    else:
        inputs, check = recovery.control_inputs(fallback=True), None
    options.setdefault("layer", inputs["layer"])
    analysis = analyze(base_model, unlearned_model, datasets, control_vectors=inputs["control_vectors"],
                       steering_coeffs=inputs["steering_coeffs"], **options)
    analysis.meta["recovery"] = {
        "source": "run directory (recorded u, c, l)" if run is not None else "estimated from the two models",
        "nothing_changed": recovery.nothing_changed, "verdicts": recovery.verdicts(),
        "changed_tensors": recovery.weights.changed if recovery.weights is not None else None,
        "check": check,
    }
    return analysis
