"""The utility section of a report: per-domain perplexity and generations, base vs unlearned.

    section = utility_section(base, unlearned, datasets={"retain": (retain, "retain"), ...},
                              prompts={"forget": [...], "adjacent": [...], "distant": [...]})
    section.summary()          # JSON-ready numbers (summary.json "utility")
    section.save("utility/")   # perplexity.json, generations.json

``datasets`` are name -> (texts or Corpus, role), as the representation analysis takes them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rmu_lens.utility.generation import GenerationConfig, Generations, compare_generations
from rmu_lens.utility.perplexity import PerplexityResult, perplexity

PERPLEXITY_FORMAT = "rmu_lens.utility_perplexity/1"


@dataclass
class DomainPerplexity:
    """One dataset's role and both models' perplexity on the same texts."""

    role: str
    base: PerplexityResult
    unlearned: PerplexityResult

    def summary(self) -> dict[str, Any]:
        return {"role": self.role, "n_texts": len(self.base.loglikelihoods), "base": self.base.metrics(),
                "unlearned": self.unlearned.metrics()}


@dataclass
class UtilitySection:
    """Perplexity per dataset and generations per role; either may be missing."""

    perplexity: dict[str, DomainPerplexity] = field(default_factory=dict)
    generations: Generations | None = None

    def summary(self) -> dict[str, Any]:
        """Metrics before -> after per dataset, gibberish measures per role (mean, 95% interval, n)."""
        return {
            "perplexity": {name: row.summary() for name, row in self.perplexity.items()},
            "generations": self.generations.summary() if self.generations is not None else None,
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``perplexity.json`` and ``generations.json`` into ``directory``."""
        from rmu_lens._io import atomic_write_json

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_json(directory / "perplexity.json", {
            "format": PERPLEXITY_FORMAT,
            "datasets": {name: {"role": row.role, "base": row.base.to_dict(), "unlearned": row.unlearned.to_dict()}
                         for name, row in self.perplexity.items()},
        })
        if self.generations is not None:
            self.generations.save(directory / "generations.json")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> UtilitySection:
        directory = Path(directory)
        section = cls()
        path = directory / "perplexity.json"
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != PERPLEXITY_FORMAT:
                raise ValueError(f"{path} is not a utility perplexity file (format {data.get('format')!r})")
            section.perplexity = {
                name: DomainPerplexity(row["role"], PerplexityResult.from_dict(row["base"]), PerplexityResult.from_dict(row["unlearned"]))
                for name, row in data["datasets"].items()
            }
        if (directory / "generations.json").is_file():
            section.generations = Generations.load(directory / "generations.json")
        return section

    def html(self) -> str:
        from rmu_lens.report.utility import utility_html

        return utility_html(self)

    def _repr_html_(self) -> str:
        return self.html()


def question_prompts(questions: Sequence[Any], subject_roles: Mapping[str, str], per_role: int = 4) -> dict[str, list[str]]:
    """``per_role`` prompts per role from the questions (``Question: ...\\nAnswer:``), taking the role's
    subjects in turn so each is represented; roles in forget, adjacent, distant order."""
    by_subject: dict[str, list[Any]] = {}
    for question in questions:
        by_subject.setdefault(question.group, []).append(question)
    prompts: dict[str, list[str]] = {}
    for role in ("forget", "adjacent", "distant"):
        queues = [list(by_subject[s]) for s in sorted(by_subject) if subject_roles.get(s) == role]
        chosen: list[str] = []
        while len(chosen) < per_role and any(queues):
            for queue in queues:
                if queue and len(chosen) < per_role:
                    chosen.append(f"Question: {queue.pop(0).question.strip()}\nAnswer:")
        if chosen:
            prompts[role] = chosen
    return prompts


def utility_section(
    base: Any,
    unlearned: Any,
    datasets: Mapping[str, tuple[Any, str]] | None = None,
    prompts: Mapping[str, Sequence[str]] | None = None,
    *,
    max_texts: int | None = 4,
    generation: GenerationConfig | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> UtilitySection:
    """Perplexity of both models on each dataset (first ``max_texts`` texts) and their generations
    for each role's prompts (``prompts``: role -> texts). Either input may be None to skip it."""
    section = UtilitySection()
    for name, (texts, role) in (datasets or {}).items():
        options = dict(max_texts=max_texts, batch_size=batch_size, progress=progress)
        section.perplexity[name] = DomainPerplexity(role, perplexity(base, texts, **options), perplexity(unlearned, texts, **options))
    if prompts:
        section.generations = compare_generations(base, unlearned, prompts, generation)
    return section
