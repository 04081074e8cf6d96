"""analyze(): base vs unlearned model on named datasets — every registered analyzer in one result.

    analysis = analyze(base, unlearned, {"virology": (bio_texts, "forget"), "retain": (wiki, "retain"),
                                         "biology": (bio_adjacent, "adjacent")},
                       control_vectors=run.control_vectors, steering_coeffs=run.steering_coeffs, layer=7,
                       config=AnalysisConfig(max_texts=64))
    analysis.summary(); analysis.save("analysis/")

Per dataset the texts are tokenized once and the same token batch goes through both models, so
tokens pair up; activations are collected at every requested layer's ``hook_resid_post`` with
``stop_at_layer``, shown to every analyzer of the registry (rmu_lens.analysis.registry) and
dropped, so memory stays at one dataset. The analyzers here are collapse, probes and damage.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from rmu_lens.analysis.activations import collect_activations, resid_post_hooks, statistics_batch

# The built-in analyzers register themselves on import, in this order (the report's figure order).
from rmu_lens.analysis.collapse import ROLES, CollapseAnalysis
from rmu_lens.analysis.probes import DOMAIN_PROBE_ROLES, ProbeAnalysis, ProbeSet, knowledge_probe  # noqa: F401
from rmu_lens.analysis.damage import DamageAnalysis
from rmu_lens.analysis.config import AnalysisConfig
from rmu_lens.analysis.registry import ANALYZERS, AnalysisInputs, AnalyzerRegistryError, DatasetInfo, result_class
from rmu_lens.results import JSONResult

ANALYSIS_FORMAT = "rmu_lens.analysis/2"
OLD_ANALYSIS_FORMAT = "rmu_lens.analysis/1"
ANALYSIS_FILE = "analysis.json"

@dataclass(init=False)
class Analysis(JSONResult):
    """Everything :func:`analyze` measured: one result per analyzer that had something to say, by name.

    ``collapse`` is always there after ``analyze``; ``probes`` when asked for, ``damage`` with a comparison.
    The built-in results may also be given by keyword: ``Analysis(collapse=c, probes={"domain": p}, damage=d)``.
    """

    results: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    config: AnalysisConfig = field(default_factory=AnalysisConfig)

    FORMAT = ANALYSIS_FORMAT
    WHAT = "an rmu_lens analysis"
    FILE_NAME = ANALYSIS_FILE

    def __init__(
        self,
        results: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
        config: AnalysisConfig | None = None,
        *,
        collapse: CollapseAnalysis | None = None,
        probes: ProbeSet | Mapping[str, ProbeAnalysis] | None = None,
        damage: DamageAnalysis | None = None,
    ) -> None:
        self.results = dict(results or {})
        given = {"collapse": collapse, "probes": ProbeSet(dict(probes)) if isinstance(probes, Mapping) else probes,
                 "damage": damage}
        for name, result in given.items():
            if result is None or (name == "probes" and not result.probes):
                continue
            if name in self.results:
                raise ValueError(f"Analysis: {name!r} given both in results and by keyword")
            self.results[name] = result
        self.meta = dict(meta or {})
        self.config = config if config is not None else AnalysisConfig()

    @property
    def collapse(self) -> CollapseAnalysis:
        if "collapse" not in self.results:
            raise KeyError(f"this analysis has no collapse result; it holds {list(self.results)}")
        return self.results["collapse"]

    @property
    def probes(self) -> dict[str, ProbeAnalysis]:
        """Probe results by task (``domain``, ``knowledge``); empty when no probe ran."""
        found = self.results.get("probes")
        return found.probes if found is not None else {}

    @property
    def damage(self) -> DamageAnalysis | None:
        return self.results.get("damage")

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

    # -- the Result protocol ------------------------------------------------------------------

    def figures(self) -> dict[str, Any]:
        """Every result's figures, in analyzer order (figure names are unique across results)."""
        figures: dict[str, Any] = {}
        for name, result in self.results.items():
            for key, figure in result.figures().items():
                if key in figures:
                    raise AnalyzerRegistryError(f"figure name {key!r} of analyzer {name!r} is already used by another "
                                                f"analyzer: give its figures names of their own")
                figures[key] = figure
        return figures

    def captions(self) -> dict[str, str]:
        return {key: text for result in self.results.values() for key, text in getattr(result, "captions", dict)().items()}

    def to_dict(self) -> dict[str, Any]:
        """``format``, ``config``, ``meta``, ``analyzers`` (names in order), then each result under its analyzer's name."""
        return {"format": ANALYSIS_FORMAT, "config": self.config.to_dict(), "meta": self.meta,
                "analyzers": list(self.results), **{name: r.to_dict() for name, r in self.results.items()}}

    @classmethod
    def check_format(cls, data: Any, source: Any = None) -> None:
        if isinstance(data, Mapping) and data.get("format") == OLD_ANALYSIS_FORMAT:
            return
        super().check_format(data, source)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Analysis:
        cls.check_format(data)
        if data["format"] == OLD_ANALYSIS_FORMAT:  # collapse, probes {task: probe}, damage, meta
            results: dict[str, Any] = {"collapse": CollapseAnalysis.from_dict(data["collapse"])}
            if data.get("probes"):
                results["probes"] = ProbeSet({n: ProbeAnalysis.from_dict(p) for n, p in data["probes"].items()})
            if data.get("damage"):
                results["damage"] = DamageAnalysis.from_dict(data["damage"])
            return cls(results=results, meta=data.get("meta", {}))
        results = {name: result_class(name).from_dict(data[name]) for name in data["analyzers"]}
        return cls(results=results, meta=data.get("meta", {}), config=AnalysisConfig.from_dict(data.get("config", {})))


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
    subjects: Mapping[str, str] | None = None,
    config: AnalysisConfig | None = None,
    base_cache: dict[Any, Any] | None = None,
    progress: bool = True,
    **settings: Any,
) -> Analysis:
    """Compare ``base_model`` and ``unlearned_model`` on ``datasets`` = ``{name: (texts | Corpus, role)}``.

    Roles: forget / retain / adjacent / distant; a forget set is read against its topic's u (its
    name, or a third tuple item), other sets against the first topic's. Every registered analyzer
    runs: collapse statistics always; the domain probe (forget vs retain vs adjacent) when
    ``config.probes``; the knowledge probe when ``questions`` are given; the damage table when
    ``comparison`` (``rmu_lens.eval.compare``) is given, its subjects paired with datasets by name or
    by ``subjects`` = ``{dataset: subject}``. ``config`` holds the settings (:class:`AnalysisConfig`);
    a setting may also be passed by name (``max_texts=64``), which overrides ``config``'s.
    ``base_cache``: a dict the caller keeps for one base model; the base model's activations are read
    from it when a call with the same dataset, tokens and settings stored them (rmu_lens.analysis.base_cache),
    so several unlearned models are analysed with one base pass.
    """
    from rmu_lens.analysis.base_cache import base_activations
    from rmu_lens.models import tokenizer_of

    config = (config or AnalysisConfig()).replace(**settings) if settings else (config or AnalysisConfig())
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
    layer = int(layer)
    layer_list = sorted(set(range(base_model.cfg.n_layers) if config.layers is None else config.layers) | {layer})
    hooks = resid_post_hooks(base_model, layer_list)
    tokenizer = tokenizer_of(base_model)
    inputs = AnalysisInputs(
        base_model=base_model, unlearned_model=unlearned_model,
        datasets={name: DatasetInfo(name, role, topic) for name, (_, role, topic) in checked.items()},
        control_vectors={t: torch.as_tensor(v, dtype=torch.float32).reshape(-1) for t, v in control_vectors.items()},
        steering_coeffs=dict(steering_coeffs), layer=layer, hook_names=hooks, config=config,
        questions=questions, comparison=comparison, subjects=subjects, progress=progress,
    )
    analyzers = [cls(inputs) for cls in ANALYZERS.values()]

    collect = dict(batch_size=config.batch_size, memory_limit_mb=config.memory_limit_mb, progress=progress)
    batch_settings = {"max_texts": config.max_texts, "max_length": config.max_length}
    for name, (data, _, _) in checked.items():
        batch = statistics_batch(data, tokenizer, config.max_texts, config.max_length, f"datasets[{name!r}]")
        with base_activations(base_model, batch, hooks, cache=base_cache, name=name, settings=batch_settings,
                              **collect) as base_acts, \
                collect_activations(unlearned_model, batch, hooks, **collect) as new_acts:
            for analyzer in analyzers:
                analyzer.observe(inputs.datasets[name], base_acts, new_acts)
    seconds = {"activations": round(time.perf_counter() - started, 1)}
    for analyzer in analyzers:
        began = time.perf_counter()
        result = analyzer.finish()
        if result is not None:
            inputs.results[analyzer.name] = result
        seconds[analyzer.name] = round(time.perf_counter() - began, 1)
    seconds["total"] = round(time.perf_counter() - started, 1)
    meta = {
        "base_model": _model_name(base_model),
        "unlearned_model": _model_name(unlearned_model),
        "layer": layer,
        "hook_names": hooks,
        "max_texts": config.max_texts,
        "max_length": config.max_length,
        "tokens": "one token batch per dataset, right padding, shared by both models; statistics exclude padding "
                  "and the first real token of each row (position 0, an outlier)",
        "seconds": seconds,
    }
    return Analysis(results=dict(inputs.results), meta=meta, config=config)


def _model_name(model: Any) -> str:
    original = getattr(model, "original_model", None)
    return str(getattr(original, "name_or_path", "") or type(model).__name__)


def run_inputs(run: Any) -> dict[str, Any]:
    """control_vectors, steering_coeffs, layer (and the run directory's model path) from an RMURun or a run directory."""
    from rmu_lens.rmu.record import RMURun

    if not isinstance(run, RMURun):
        run = RMURun.load(run)
    return {
        "control_vectors": dict(run.control_vectors), "steering_coeffs": dict(run.steering_coeffs),
        "layer": run.layer, "model": run.model, "model_dir": run.model_dir,
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
        if model_dir is None or not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"{model_dir} holds no saved model: the run did not finish, or pass unlearned_model=")
        from rmu_lens.models import load_model

        unlearned_model = load_model(model_dir)
    options.setdefault("layer", inputs["layer"])
    return analyze(
        base_model, unlearned_model, datasets, control_vectors=inputs["control_vectors"],
        steering_coeffs=inputs["steering_coeffs"], **options,
    )


def forget_and_retain(datasets: Mapping[str, tuple[Any, str]]) -> tuple[dict[str, Any], Any]:
    """The forget sets by name and the first retain set, which the estimate of u, c and l reads."""
    forget = {name: entry[0] for name, entry in datasets.items() if entry[1] == "forget"}
    retain = [entry[0] for entry in datasets.values() if entry[1] == "retain"]
    if not forget or not retain:
        raise ValueError("the datasets need at least one forget set and one retain set (roles 'forget' and "
                         "'retain'): the estimate compares how far each moved")
    return forget, retain[0]


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
    model folders for a shard-by-shard weight diff (default: the loaded models). ``base_cache`` (see
    :func:`analyze`) also keeps the base side of the estimate when ``recovery`` is not given.
    """
    from rmu_lens.analysis.base_cache import recover_cache
    from rmu_lens.analysis.recover import recover

    forget, retain = forget_and_retain(datasets)
    if recovery is None:
        settings = dict(layers=options.get("layers"), max_texts=options.get("max_texts", 32),
                        max_length=options.get("max_length", 128))
        cache = options.get("base_cache")
        recovery = recover(base_model, unlearned_model, forget, retain, weights=weights, **settings,
                           base_cache=None if cache is None else recover_cache(cache, base_model, forget, retain, **settings),
                           progress=options.get("progress", True))
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
