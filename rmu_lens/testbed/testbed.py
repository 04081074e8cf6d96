"""The testbed's public face: build or load a trained model of a world, with its corpora and questions.

    tb = load_testbed(seed=0, size="small", overlap=0.5)   # trains once (minutes), then loads in seconds
    bridge = tb.bridge()
    run = rmu_lens.unlearn(bridge, forget=tb.forget_corpus(), retain=tb.retain_corpus(),
                           config=testbed_rmu_config())

A testbed directory is a plain HF model directory (config, safetensors, tokenizer) plus
``world.json``, ``questions.jsonl``, ``forget.jsonl``, ``retain.jsonl`` and ``testbed.json`` (how it was
made and the training statistics). It lives in ``cache_dir()/testbed/<key>``, where the key names
the size, seed and overlap and ends in a digest of everything that determines the model, so a
change to the generator, the templates or the recipe trains a new model instead of reusing a stale one.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rmu_lens._io import atomic_directory, atomic_write_json
from rmu_lens.data.corpora import Corpus
from rmu_lens.testbed.render import (
    domain_paragraphs,
    filler_paragraphs,
    qa_documents,
    qa_prompt,
    questions,
    training_documents,
)
from rmu_lens.testbed.train import SIZES, ModelSize
from rmu_lens.testbed.world import World, make_world

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from rmu_lens.eval import Question
    from rmu_lens.rmu.config import RMUConfig

RECIPE_VERSION = 1
"""Bump when the generator, the templates, the tokenizer or the training loop change what is trained."""
TASK = "testbed"
"""The evaluator's task name for testbed questions (their subject is the domain)."""
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "world.json", "testbed.json")


@dataclass
class Testbed:
    """A trained testbed model and the world it knows; every fact behind every question is in ``world``."""

    __test__ = False  # not a pytest test class, despite its name

    world: World
    model_dir: Path
    size: str
    info: dict[str, Any] = field(default_factory=dict)

    # -- the world's roles --------------------------------------------------------------------

    @property
    def forget_domain(self) -> str:
        return self.world.forget.name

    @property
    def adjacent_domain(self) -> str:
        return self.world.adjacent.name

    @property
    def distant_domains(self) -> list[str]:
        return [d.name for d in self.world.distant]

    @property
    def domains(self) -> list[str]:
        return [d.name for d in self.world.domains]

    @property
    def spec(self) -> ModelSize:
        """The size preset the model was trained with (as recorded in ``testbed.json``)."""
        recorded = self.info.get("model")
        return ModelSize(**recorded) if recorded else _size(self.size)

    # -- model, questions, corpora --------------------------------------------------------------

    def bridge(self, **kwargs: Any) -> TransformerBridge:
        """A fresh TransformerBridge over the trained model (``rmu_lens.models.load_model`` on ``model_dir``)."""
        from rmu_lens.models import load_model

        return load_model(self.model_dir, **kwargs)

    def question_dicts(self, domain: str | None = None) -> list[dict[str, Any]]:
        """Held-out questions of one domain or all as dicts: the WMDP schema plus ``id``, ``subject``,
        ``attribute``, ``entity`` and ``template`` (what ``questions.jsonl`` holds)."""
        return questions(self.world, domain)

    def questions(self, domain: str | None = None) -> list[Question]:
        """Held-out questions of one domain or all, as the evaluator's Question objects (task ``testbed``)."""
        from rmu_lens.eval import Question

        return [
            Question(q["question"], list(q["choices"]), q["answer"], q["subject"], TASK, q["id"])
            for q in self.question_dicts(domain)
        ]

    def corpus(self, domain: str, qa: bool = True) -> Corpus:
        """What the model read about ``domain``: its paragraphs and (``qa=True``) its Q/A documents, interleaved.

        The Q/A documents use the training question templates only; evaluation questions are held out.
        """
        current = self.world.domain(domain)
        texts = domain_paragraphs(self.world, current, self.spec.paragraph_copies)
        if qa:
            texts += qa_documents(self.world, current, self.spec.qa_per_document)
        random.Random(f"corpus:{self.world.seed}:{domain}").shuffle(texts)
        return Corpus(name=domain, texts=texts, source=f"testbed:{self.model_dir.name}/{domain}")

    def forget_corpus(self, qa: bool = True) -> Corpus:
        """Text about the forget domain (what the model was trained on about it): RMU's forget set."""
        return self.corpus(self.forget_domain, qa)

    def retain_corpus(self, qa: bool = True) -> Corpus:
        """Text about the distant domains plus everyday filler, interleaved: RMU's retain set.

        The adjacent domain is left out on purpose: what RMU does to it is the measurement.
        """
        texts: list[str] = []
        for name in self.distant_domains:
            texts += self.corpus(name, qa).texts
        texts += filler_paragraphs(len(texts) // 4 or 1, seed=self.world.seed + 1)
        random.Random(f"retain:{self.world.seed}").shuffle(texts)
        return Corpus(name="retain", texts=texts, source=f"testbed:{self.model_dir.name}/retain")

    def training_documents(self) -> list[str]:
        """Every document the model was trained on, in generation order."""
        return training_documents(self.world, self.spec.paragraph_copies, self.spec.qa_per_document)

    @classmethod
    def from_dir(cls, directory: str | os.PathLike) -> Testbed:
        """Open a testbed directory written by :func:`load_testbed` (e.g. to share it, or after moving it)."""
        directory = Path(directory)
        missing = [name for name in REQUIRED_FILES if not (directory / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{directory} is not a testbed directory (missing {missing}); create one with "
                f"rmu_lens.testbed.load_testbed(...)"
            )
        info = json.loads((directory / "testbed.json").read_text(encoding="utf-8"))
        world = World.from_json((directory / "world.json").read_text(encoding="utf-8"))
        return cls(world=world, model_dir=directory, size=info["size"], info=info)


def _key(seed: int, size: str, overlap: float, world: World, spec: ModelSize) -> str:
    digest = hashlib.sha256(
        json.dumps({"recipe": RECIPE_VERSION, "world": world.to_dict(), "size": spec.to_dict(),
                    "documents": training_documents(world, spec.paragraph_copies, spec.qa_per_document)},
                   sort_keys=True).encode("utf-8")
    ).hexdigest()[:10]
    return f"{size}-seed{seed}-overlap{overlap:g}-{digest}"


def testbed_dir(seed: int = 0, size: str = "small", overlap: float = 0.5) -> Path:
    """Where the testbed of these arguments lives in the cache (whether or not it is built yet)."""
    from rmu_lens.models import cache_dir

    spec = _size(size)
    world = make_world(seed, overlap=overlap, n_entities=spec.n_entities)
    return cache_dir() / "testbed" / _key(seed, size, overlap, world, spec)


testbed_dir.__test__ = False  # type: ignore[attr-defined]  # not a pytest test, despite its name


def _size(size: str) -> ModelSize:
    if size not in SIZES:
        raise ValueError(f"size={size!r}; choose one of {sorted(SIZES)}")
    return SIZES[size]


def load_testbed(
    seed: int = 0, size: str = "small", overlap: float = 0.5, *, progress: bool = True, rebuild: bool = False
) -> Testbed:
    """The testbed for ``seed``/``size``/``overlap``: loaded from the cache, or generated and trained once.

    Training ("small": a few minutes on two CPU cores) writes into a temporary directory that is
    renamed into place, so an interrupted build leaves nothing half-written, and of two concurrent
    builds the first to finish is kept. ``rebuild=True`` trains again even when a cached copy exists.
    """
    directory = testbed_dir(seed, size, overlap)
    if rebuild or not _complete(directory):
        build_testbed(directory, seed=seed, size=size, overlap=overlap, progress=progress, overwrite=rebuild)
    return Testbed.from_dir(directory)


def _complete(directory: Path) -> bool:
    return all((directory / name).is_file() for name in REQUIRED_FILES)


def build_testbed(
    directory: str | os.PathLike,
    *,
    seed: int,
    size: str,
    overlap: float,
    progress: bool = True,
    overwrite: bool = True,
) -> Path:
    """Generate the world, train the model and write the testbed directory (atomically).

    With ``overwrite=False`` a complete testbed that appeared at ``directory`` meanwhile (another
    process built it) is kept and this build is discarded.
    """
    import torch

    from rmu_lens.testbed.tokenizer import build_tokenizer
    from rmu_lens.testbed.train import train_model

    spec = _size(size)
    directory = Path(directory)
    world = make_world(seed, overlap=overlap, n_entities=spec.n_entities)
    documents = training_documents(world, spec.paragraph_copies, spec.qa_per_document)
    evaluation = questions(world)
    prompts = [qa_prompt(q["subject"], q["question"]) + " " + choice for q in evaluation for choice in q["choices"]]
    tokenizer = build_tokenizer(documents + prompts)
    model, stats = train_model(documents, tokenizer, spec, seed=seed, progress=progress)
    model.name_or_path = str(directory)
    keep = None if overwrite else _complete
    with atomic_directory(directory, keep_existing=keep) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / "world.json").write_text(world.to_json() + "\n", encoding="utf-8")
        _write_jsonl(staging / "questions.jsonl", evaluation)
        testbed = Testbed(world=world, model_dir=staging, size=size)
        _write_jsonl(staging / "forget.jsonl", [{"text": t} for t in testbed.forget_corpus().texts])
        _write_jsonl(staging / "retain.jsonl", [{"text": t} for t in testbed.retain_corpus().texts])
        info = {
            "size": size, "seed": seed, "overlap": overlap, "recipe": RECIPE_VERSION, "model": spec.to_dict(),
            "vocab_size": len(tokenizer), "n_parameters": sum(p.numel() for p in model.parameters()),
            "torch": torch.__version__, **stats,
            "roles": {d.name: d.role for d in world.domains}, "shared_attributes": world.shared_attributes(),
        }
        atomic_write_json(staging / "testbed.json", info)
    return directory


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def testbed_rmu_config(**overrides: Any) -> RMUConfig:
    """The RMU preset for the "small" testbed model (``TESTBED_RMU``), with optional overrides.

    Measured effect (docs/testbed.md): the forget domain falls to chance, the distant domains keep
    their accuracy, and the adjacent domain loses accuracy on the attribute types it shares.
    """
    from rmu_lens.rmu.config import RMUConfig

    return RMUConfig.from_dict({**TESTBED_RMU, **overrides})


testbed_rmu_config.__test__ = False  # type: ignore[attr-defined]  # not a pytest test, despite its name


TESTBED_RMU: dict[str, Any] = {
    # Read the middle of the 4-layer model and train everything below it: with one block left
    # after layer l, a narrower edit (one MLP) leaves the facts decodable from what it keeps.
    "layer": 2,
    "update_layers": [0, 1, 2],
    "param_names": ["blocks.{layer}.mlp.*", "blocks.{layer}.attn.*"],
    # c = 5 x the mean layer-2 token norm of the frozen model on the first forget batch (~25 -> ~125).
    "adaptive_beta": 5.0,
    "alpha": 100.0,
    "lr": 3e-3,
    "batch_size": 8,
    "max_batches": 400,
    "cycle": True,
    "optimizer": "adamw",
    "checkpoint_every": 0,
}
"""RMU settings for the "small" testbed (4 layers, d_model 128): about a minute on one CPU core."""
