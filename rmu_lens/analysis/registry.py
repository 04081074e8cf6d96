"""The analyzer registry: what :func:`~rmu_lens.analysis.analyze` runs, one class per analyzer.

    @register_analyzer("collapse", result=CollapseAnalysis)
    class CollapseAnalyzer(Analyzer):
        def observe(self, dataset, base, unlearned): ...   # once per dataset, activations alive
        def finish(self): return CollapseAnalysis(...)      # a Result, or None when it has nothing

``analyze`` makes one instance of every registered analyzer per call, in registration order, and
hands each the same :class:`AnalysisInputs`. For each dataset it runs both models once and calls
every analyzer's :meth:`Analyzer.observe` with the two :class:`~rmu_lens.analysis.activations.Activations`
(per token, at ``inputs.hook_names``, dropped afterwards); then it calls :meth:`Analyzer.finish`
in order and stores each non-None result in ``inputs.results[name]`` — so an analyzer listed in
``requires`` has finished before it. The results end in :class:`~rmu_lens.analysis.analyze.Analysis`
under the analyzer's name, and ``result`` is the class that reads them back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rmu_lens.errors import RMULensError

RESERVED_NAMES = ("format", "config", "meta", "analyzers")
"""Top-level keys of analysis.json that are not analyzer results."""


class AnalyzerRegistryError(RMULensError, ValueError):
    """An analyzer that cannot be registered or found: the message names it and the registered ones."""


@dataclass
class DatasetInfo:
    """One dataset of an analysis: its name, role (forget/retain/adjacent/distant) and the topic whose u reads it."""

    name: str
    role: str
    topic: str


@dataclass
class AnalysisInputs:
    """Everything an analyzer may read: the models, the datasets, u and c, layer l, the settings, earlier results."""

    base_model: Any
    unlearned_model: Any
    datasets: dict[str, DatasetInfo]
    control_vectors: dict[str, Any]
    """topic -> u as a float32 tensor ``[d_model]``."""
    steering_coeffs: dict[str, float]
    layer: int
    hook_names: list[str]
    """The analysed hook points: ``blocks.{i}.hook_resid_post`` of ``config.layers`` plus layer l."""
    config: Any
    """The :class:`~rmu_lens.analysis.config.AnalysisConfig` of this call."""
    questions: Sequence[Any] | None = None
    comparison: Any = None
    subjects: Mapping[str, str] | None = None
    progress: bool = True
    results: dict[str, Any] = field(default_factory=dict)
    """Results of the analyzers that already finished, by name."""

    @property
    def layer_hook(self) -> str:
        return f"blocks.{self.layer}.hook_resid_post"


class Analyzer:
    """One analysis: sees every dataset's activations (:meth:`observe`), then makes its result (:meth:`finish`)."""

    name: ClassVar[str]
    result: ClassVar[type]
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self, inputs: AnalysisInputs) -> None:
        self.inputs = inputs

    def observe(self, dataset: DatasetInfo, base: Any, unlearned: Any) -> None:
        """Called once per dataset with both models' per-token Activations of the same tokens."""

    def finish(self) -> Any:
        """The result (a :class:`rmu_lens.results.Result`), or None when there is nothing to report."""
        raise NotImplementedError


ANALYZERS: dict[str, type[Analyzer]] = {}


def register_analyzer(name: str, *, result: type, requires: Sequence[str] = ()) -> Callable[[type[Analyzer]], type[Analyzer]]:
    """Class decorator: add an :class:`Analyzer` subclass to :data:`ANALYZERS` under ``name``.

    ``result`` is the result class it returns (read back by ``Analysis.load``); ``requires`` names
    analyzers whose results it reads, which must be registered first.
    """
    if not isinstance(name, str) or not name.isidentifier() or name in RESERVED_NAMES:
        raise AnalyzerRegistryError(f"analyzer name {name!r}: use an identifier other than {RESERVED_NAMES}")
    missing = [r for r in requires if r not in ANALYZERS]
    if missing:
        raise AnalyzerRegistryError(f"analyzer {name!r} requires {missing}, not registered yet; registered: {list(ANALYZERS)}")
    for method in ("from_dict", "to_dict", "figures"):
        if not hasattr(result, method):
            raise AnalyzerRegistryError(f"analyzer {name!r}: its result {result.__name__} lacks {method}() "
                                        f"(results follow rmu_lens.results.Result)")

    def decorate(cls: type[Analyzer]) -> type[Analyzer]:
        if not (isinstance(cls, type) and issubclass(cls, Analyzer)):
            raise AnalyzerRegistryError(f"@register_analyzer({name!r}) decorates an Analyzer subclass, not {cls!r}")
        known = ANALYZERS.get(name)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise AnalyzerRegistryError(f"an analyzer named {name!r} is already registered ({known.__qualname__})")
        cls.name, cls.result, cls.requires = name, result, tuple(requires)
        ANALYZERS[name] = cls
        return cls

    return decorate


def unregister_analyzer(name: str) -> None:
    """Remove ``name`` from the registry (and no analyzer may still require it)."""
    if name not in ANALYZERS:
        raise AnalyzerRegistryError(f"no analyzer {name!r}; registered: {list(ANALYZERS)}")
    dependants = [n for n, cls in ANALYZERS.items() if name in cls.requires]
    if dependants:
        raise AnalyzerRegistryError(f"analyzers {dependants} require {name!r}: unregister them first")
    del ANALYZERS[name]


def result_class(name: str) -> type:
    """The result class of the analyzer ``name`` (for reading a saved analysis)."""
    if name not in ANALYZERS:
        raise AnalyzerRegistryError(
            f"the analysis holds a result of analyzer {name!r}, which is not registered (registered: "
            f"{list(ANALYZERS)}): import the module that defines it before loading"
        )
    return ANALYZERS[name].result
