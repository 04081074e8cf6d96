"""AnalysisConfig: every setting of :func:`rmu_lens.analysis.analyze`, declared once with its help text.

Each field's ``metadata["help"]`` is the one-line description a command-line flag or a form shows;
``to_dict`` / ``from_dict`` / ``to_json`` / ``from_json`` round-trip it, and a saved
:class:`~rmu_lens.analysis.analyze.Analysis` carries the config it was made with.
What the analysis is *of* (models, datasets, u and c, layer l, questions, a comparison) are
arguments of ``analyze``, not settings.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rmu_lens.analysis.activations import DEFAULT_MEMORY_LIMIT_MB
from rmu_lens.errors import RMULensError

KNOWLEDGE_MODES = ("cloze", "letter")


class AnalysisConfigError(RMULensError, ValueError):
    """An analysis setting that cannot be used: the message names it and what would work."""


@dataclass
class AnalysisConfig:
    """Settings of one :func:`~rmu_lens.analysis.analyze` call (see each field's help)."""

    layers: list[int] | None = field(default=None, metadata={
        "help": "layers whose blocks.{i}.hook_resid_post are analysed (default: every layer; layer l is always added)"})
    max_texts: int | None = field(default=32, metadata={
        "help": "at most this many texts per dataset, the first ones in order (None: all)"})
    max_length: int = field(default=128, metadata={"help": "tokens per text; longer texts are truncated"})
    batch_size: int = field(default=8, metadata={"help": "texts (or questions) per forward pass"})
    probes: bool = field(default=True, metadata={
        "help": "run the linear probes: the domain probe (forget vs retain vs adjacent) and, with questions, the "
                "knowledge probe"})
    knowledge_mode: str = field(default="cloze", metadata={
        "help": "prompt of the knowledge probe: cloze (choices not in the prompt; the label is the answer text) or "
                "letter (choices listed; the label is the answer index)", "choices": KNOWLEDGE_MODES})
    probe_folds: int = field(default=5, metadata={"help": "cross-validation folds of every probe"})
    pca_points: int = field(default=200, metadata={"help": "tokens per dataset in the PCA at layer l"})
    memory_limit_mb: float = field(default=DEFAULT_MEMORY_LIMIT_MB, metadata={
        "help": "activations above this many MiB are spilled to safetensors shards on disk"})
    seed: int = field(default=0, metadata={"help": "seed of the PCA token sample and the probes' folds"})

    def __post_init__(self) -> None:
        if self.layers is not None:
            if isinstance(self.layers, (str, bytes)) or not all(_is_int(x) for x in self.layers):
                raise AnalysisConfigError(f"layers={self.layers!r}: give a list of layer numbers, e.g. [0, 3, 7], or None")
            self.layers = [int(x) for x in self.layers]
        positive = {"max_length": self.max_length, "batch_size": self.batch_size, "pca_points": self.pca_points}
        if self.max_texts is not None:
            positive["max_texts"] = self.max_texts
        for name, value in positive.items():
            if not _is_int(value) or value < 1:
                raise AnalysisConfigError(f"{name}={value!r}: must be a whole number of at least 1")
        if not _is_int(self.probe_folds) or self.probe_folds < 2:
            raise AnalysisConfigError(f"probe_folds={self.probe_folds!r}: cross-validation needs at least 2 folds")
        if self.knowledge_mode not in KNOWLEDGE_MODES:
            raise AnalysisConfigError(f"knowledge_mode={self.knowledge_mode!r}: choose one of {KNOWLEDGE_MODES}")
        if not isinstance(self.probes, bool):
            raise AnalysisConfigError(f"probes={self.probes!r}: must be True or False")
        if isinstance(self.memory_limit_mb, bool) or not isinstance(self.memory_limit_mb, numbers.Real) \
                or not self.memory_limit_mb > 0:
            raise AnalysisConfigError(f"memory_limit_mb={self.memory_limit_mb!r}: must be a positive number of MiB")
        if not _is_int(self.seed):
            raise AnalysisConfigError(f"seed={self.seed!r}: must be a whole number")
        for name in ("max_length", "batch_size", "pca_points", "probe_folds", "seed"):
            setattr(self, name, int(getattr(self, name)))
        if self.max_texts is not None:
            self.max_texts = int(self.max_texts)
        self.memory_limit_mb = float(self.memory_limit_mb)

    @classmethod
    def help(cls) -> dict[str, str]:
        """Field name -> help text, in declaration order."""
        return {f.name: f.metadata["help"] for f in dataclasses.fields(cls)}

    def replace(self, **settings: Any) -> AnalysisConfig:
        """A copy with ``settings`` changed; an unknown name is an error naming the known ones."""
        unknown = sorted(set(settings) - set(self.help()))
        if unknown:
            raise AnalysisConfigError(f"unknown analysis settings {unknown}; known: {list(self.help())}")
        return dataclasses.replace(self, **settings)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnalysisConfig:
        if not isinstance(data, Mapping):
            raise AnalysisConfigError(f"an analysis config is a dict of settings, not {type(data).__name__}")
        return cls().replace(**dict(data))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> AnalysisConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as bad:
            raise AnalysisConfigError(f"not a JSON analysis config ({bad.msg})") from bad
        return cls.from_dict(data)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
