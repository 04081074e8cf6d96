"""Demo plans: what the demo runs (model, corpora, question sets with roles, RMU config, analysis sizes).

:func:`smollm2_plan` is the main job, :func:`testbed_plan` the ground-truth world; the bundled
question sets and their roles are shared with `rmu-lens analyze`'s defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rmu_lens.data.corpora import Corpus
    from rmu_lens.eval import Question
    from rmu_lens.rmu.config import RMUConfig
    from rmu_lens.utility.generation import GenerationConfig


def _generation_config() -> GenerationConfig:
    from rmu_lens.utility.generation import GenerationConfig

    # One batch for the demo's 12 prompts: cached decoding costs about the same per step for 8 or 16 rows.
    return GenerationConfig(max_new_tokens=24, min_new_tokens=8, batch_size=16)


SMOLLM2_QUESTION_SETS = {
    "virology": "forget", "cybersecurity": "forget",
    "biology": "adjacent", "computing": "adjacent",
    "geography": "distant", "history": "distant", "mathematics": "distant",
}
"""The bundled question sets and their roles for the bundled forget corpora (docs/question_sets.md).
Geography and history are topics the retain corpus also covers; mathematics is a domain neither the
forget nor the retain corpus touches, so its change is damage to knowledge RMU never saw."""

REPORT_SPLIT = "test"
"""Every number the demo and the analysis report is measured on the sets' test halves; the dev halves
are for tuning (``rmu-lens sweep``)."""


@dataclass
class DemoPlan:
    """What the demo runs. ``load_model`` returns a fresh base model on every call (the demo needs two:
    one stays the base, one is edited by RMU)."""

    name: str
    load_model: Callable[[], Any]
    forget: list[Corpus]
    retain: Corpus
    questions: list[Question]
    subject_roles: dict[str, str]
    """Question subject -> forget / adjacent / distant."""
    config: RMUConfig
    analysis_datasets: dict[str, tuple[Any, str]] = field(default_factory=dict)
    """Name -> (texts or Corpus, role) for the representation analysis."""
    analysis_subjects: dict[str, str] = field(default_factory=dict)
    """Analysis dataset -> question subject, where the names differ (pairs them in the damage table)."""
    analysis_max_texts: int = 32
    analysis_layers: list[int] | None = None
    """Layers the analysis reads (None: every layer)."""
    analysis_questions: bool = True
    """Also probe the answers of the questions from the activations (the knowledge probe; one more pass per model)."""
    eval_batch_size: int = 16
    mode: str = "cloze"
    utility: bool = True
    """Also measure perplexity per analysis dataset and generations per role (the report's utility section)."""
    utility_max_texts: int = 3
    """Texts per dataset for perplexity (both models score the same texts)."""
    utility_prompts_per_role: int = 4
    """Question prompts per role (forget, adjacent, distant) that both models complete."""
    generation: GenerationConfig = field(default_factory=lambda: _generation_config())
    judge: Any = None
    """A rmu_lens.utility.judge.JudgeConfig to rate the generations MT-Bench style (off: None)."""

    def __post_init__(self) -> None:
        subjects = {q.group for q in self.questions}
        unknown = sorted(set(self.subject_roles) - subjects)
        if unknown:
            raise ValueError(f"subject_roles names {unknown}, which no question has; subjects: {sorted(subjects)}")
        if "forget" not in self.subject_roles.values():
            raise ValueError("subject_roles must mark at least one question subject as 'forget'")

    @property
    def forget_subjects(self) -> list[str]:
        return sorted(s for s, role in self.subject_roles.items() if role == "forget")

    def describe(self) -> dict[str, Any]:
        """The plan as JSON-ready data (for summary.json)."""
        counts: dict[str, int] = {}
        for question in self.questions:
            counts[question.group] = counts.get(question.group, 0) + 1
        return {
            "name": self.name,
            "forget": [c.summary() for c in self.forget],
            "retain": self.retain.summary(),
            "questions": counts,
            "subject_roles": self.subject_roles,
            "mode": self.mode,
            "config": self.config.to_dict(),
            "analysis": {
                "datasets": {name: role for name, (_, role) in self.analysis_datasets.items()},
                "max_texts": self.analysis_max_texts,
                "layers": self.analysis_layers,
                "knowledge_probe": self.analysis_questions,
                "subjects": self.analysis_subjects,
            },
            "utility": {"max_texts": self.utility_max_texts, "prompts_per_role": self.utility_prompts_per_role,
                        "generation": self.generation.to_dict()} if self.utility else None,
        }


def question_texts(questions: Sequence[Question]) -> list[str]:
    """Each question with its correct answer as one text: material about a subject for the analysis."""
    return [f"Question: {q.question.strip()}\nAnswer: {q.choices[q.answer]}" for q in questions]


def bundled_question_sets(limit: int | None = None, split: str = REPORT_SPLIT) -> dict[str, tuple[list[Question], str]]:
    """The bundled question sets (first ``limit`` questions of each ``split`` half) with their roles."""
    from rmu_lens.eval import load_questions

    return {name: (load_questions(f"bundled:{name}:{split}", limit=limit), role)
            for name, role in SMOLLM2_QUESTION_SETS.items()}


def question_set_datasets(sets: Mapping[str, tuple[list[Question], str]]) -> tuple[dict[str, tuple[Any, str]], dict[str, str]]:
    """Analysis datasets from the non-forget question sets (question + answer as text), and dataset -> subject."""
    datasets, subjects = {}, {}
    for name, (questions, role) in sets.items():
        if role != "forget":
            datasets[name] = (question_texts(questions), role)
            subjects[name] = questions[0].group
    return datasets, subjects


SMOLLM2_ANALYSIS_LAYERS = [0, 2, 3, 4, 5, 6, 8, 12]
"""Layers the SmolLM2 demo analyzes: around l = 5 (update layers 4-5), stopping at 12 so the 30-layer model
is not run to the end."""


def smollm2_plan(
    question_limit: int | None = 30,
    *,
    max_batches: int | None = None,
    analysis_max_texts: int = 16,
    analysis_layers: list[int] | None = SMOLLM2_ANALYSIS_LAYERS,
    analysis_questions: bool = False,
    model: str = "smollm2-135m",
    load_options: Mapping[str, Any] | None = None,
) -> DemoPlan:
    """The main job: SmolLM2-135M, forget bundled virology + cybersecurity, retain bundled retain text,
    the demo RMU profile, the seven bundled question sets' test halves (first ``question_limit`` of each; None: all).

    Analysis datasets: the forget corpora and the retain corpus, plus the adjacent and distant question
    sets as text (question + answer), so every role is measured inside the model too. The defaults
    (30 questions per set, 16 texts per dataset, 8 layers, no knowledge probe) keep the demo under ten
    minutes on two CPU cores (docs/report.md). ``load_options`` (device, dtype, device_map ...) go to
    :func:`rmu_lens.load_model`.
    """
    from rmu_lens.data.corpora import load_corpus
    from rmu_lens.models import load_model
    from rmu_lens.rmu.config import RMUConfig

    sets = bundled_question_sets(question_limit)
    questions = [q for subset, _ in sets.values() for q in subset]
    roles = {q.group: role for subset, role in sets.values() for q in subset}
    config = RMUConfig.profile("demo", **({"max_batches": max_batches} if max_batches else {}))
    forget = [load_corpus("bundled:virology"), load_corpus("bundled:cybersecurity")]
    retain = load_corpus("bundled:retain")
    datasets: dict[str, tuple[Any, str]] = {c.name: (c, "forget") for c in forget}
    datasets["retain"] = (retain, "retain")
    extra, subjects = question_set_datasets(sets)
    datasets.update(extra)
    subjects.update({name: subset[0].group for name, (subset, role) in sets.items() if role == "forget"})
    return DemoPlan(
        name=model, load_model=lambda: load_model(model, **(load_options or {})), forget=forget, retain=retain, questions=questions,
        subject_roles=roles, config=config, analysis_datasets=datasets, analysis_subjects=subjects,
        analysis_max_texts=analysis_max_texts, analysis_layers=analysis_layers, analysis_questions=analysis_questions,
    )


def testbed_plan(
    testbed: Any = None, *, analysis_max_texts: int = 48, load_options: Mapping[str, Any] | None = None
) -> DemoPlan:
    """The ground-truth world: the testbed model, its forget/retain corpora and preset, every held-out
    question; roles from ``Testbed.forget_domain`` / ``adjacent_domain`` / ``distant_domains``.

    ``testbed``: a loaded Testbed (default: ``load_testbed()``, trained once and cached);
    ``load_options`` go to :func:`rmu_lens.load_model` when the testbed model is loaded.
    """
    from rmu_lens.testbed import load_testbed, testbed_rmu_config

    testbed = testbed if testbed is not None else load_testbed()
    roles = {testbed.forget_domain: "forget", testbed.adjacent_domain: "adjacent"}
    roles.update({d: "distant" for d in testbed.distant_domains})
    datasets: dict[str, tuple[Any, str]] = {}
    for domain, role in roles.items():
        datasets[domain] = (testbed.corpus(domain, qa=False), role)
    datasets["retain"] = (testbed.retain_corpus(), "retain")
    return DemoPlan(
        name=f"testbed {testbed.model_dir.name}", load_model=lambda: testbed.bridge(**(load_options or {})),
        forget=[testbed.forget_corpus()], retain=testbed.retain_corpus(), questions=testbed.questions(),
        subject_roles=roles, config=testbed_rmu_config(), analysis_datasets=datasets,
        analysis_max_texts=analysis_max_texts,
    )
