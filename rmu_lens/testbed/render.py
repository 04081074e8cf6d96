"""World → text: training documents (paraphrased facts and Q/A in the evaluator's format) and
held-out multiple-choice questions in the WMDP schema.

Every function here is a pure function of the world and a seed, so the corpora and the questions
of a testbed are reproducible from ``world.json`` alone.
"""

from __future__ import annotations

import random
from typing import Any

from rmu_lens.testbed.templates import (
    DESCRIPTION,
    FILLER_OPENERS,
    FILLER_SENTENCES,
    QA_TEXT,
    TEMPLATES,
    heldout_question_templates,
    training_question_templates,
)
from rmu_lens.testbed.world import Domain, Entity, World


def fill(template: str, entity: Entity, domain: Domain, value: str = "") -> str:
    """A template with the entity's name, its domain noun and ``value`` filled in."""
    return template.format(name=entity.name, noun=domain.noun, value=value)


def qa_prompt(subject: str, question: str) -> str:
    """The cloze context the evaluator scores choices after (lm-eval's ``*_continuation`` format)."""
    return DESCRIPTION.format(subject=subject) + QA_TEXT.format(question=question.strip())


def entity_paragraph(entity: Entity, domain: Domain, rng: random.Random) -> str:
    """All of an entity's facts, in a random order, each in a randomly chosen statement template."""
    attributes = list(domain.attributes)
    rng.shuffle(attributes)
    sentences = [f"{entity.name} is a {domain.noun}."]
    for attribute in attributes:
        template = rng.choice(TEMPLATES[attribute].statements)
        sentences.append(fill(template, entity, domain, entity.facts[attribute]))
    return " ".join(sentences)


def domain_paragraphs(world: World, domain: Domain, copies: int, seed: int = 0) -> list[str]:
    """``copies`` paragraphs per entity of ``domain`` (different orders and paraphrases)."""
    rng = random.Random(f"paragraphs:{world.seed}:{domain.name}:{seed}")
    return [entity_paragraph(e, domain, rng) for _ in range(copies) for e in domain.entities]


def qa_pairs(world: World, domain: Domain) -> list[str]:
    """``Question: ...`` / ``Answer: value`` pairs for every fact and every training question template."""
    pairs = []
    for entity in domain.entities:
        for attribute in domain.attributes:
            for template in training_question_templates(attribute):
                question = fill(template, entity, domain)
                pairs.append(f"{QA_TEXT.format(question=question)} {entity.facts[attribute]}")
    return pairs


def qa_documents(world: World, domain: Domain, per_document: int = 4) -> list[str]:
    """The domain's Q/A pairs, shuffled, ``per_document`` at a time after the evaluator's description.

    Each document opens exactly as the evaluator's zero-shot cloze prompt does (with a training
    question) followed by the answer; the later pairs read like lm-eval's few-shot examples and
    cost no repeated description.
    """
    rng = random.Random(f"qa:{world.seed}:{domain.name}")
    pairs = qa_pairs(world, domain)
    rng.shuffle(pairs)
    header = DESCRIPTION.format(subject=domain.name)
    return [header + "\n\n".join(pairs[i : i + per_document]) for i in range(0, len(pairs), per_document)]


def filler_paragraphs(count: int, seed: int = 0) -> list[str]:
    """``count`` paragraphs: an opener and three to five everyday sentences (no fact of the world)."""
    rng = random.Random(f"filler:{seed}")
    return [
        " ".join([rng.choice(FILLER_OPENERS), *rng.sample(FILLER_SENTENCES, rng.randint(3, 5))])
        for _ in range(count)
    ]


def training_documents(world: World, paragraph_copies: int = 4, qa_per_document: int = 4, filler: int = 60) -> list[str]:
    """The model's whole training text: paragraphs and Q/A documents of every domain, plus filler."""
    documents: list[str] = []
    for domain in world.domains:
        documents += domain_paragraphs(world, domain, paragraph_copies)
        documents += qa_documents(world, domain, qa_per_document)
    documents += filler_paragraphs(filler, world.seed)
    return documents


def questions(world: World, domain: Domain | str | None = None) -> list[dict[str, Any]]:
    """One held-out multiple-choice question per fact, in the WMDP schema with ``subject`` = domain.

    The question template cycles through the attribute's held-out templates; the three distractors
    are other values of the same attribute type held by entities of the same domain, so each is a
    fact the model knows about some other entity.
    """
    domains = world.domains if domain is None else [world.domain(domain) if isinstance(domain, str) else domain]
    out = []
    for current in domains:
        rng = random.Random(f"questions:{world.seed}:{current.name}")
        for entity_index, entity in enumerate(current.entities):
            for attribute_index, attribute in enumerate(current.attributes):
                templates = heldout_question_templates(attribute)
                template = templates[(entity_index + attribute_index) % len(templates)]
                answer = entity.facts[attribute]
                seen = sorted({e.facts[attribute] for e in current.entities} - {answer})
                if len(seen) < 3:
                    raise ValueError(
                        f"Domain {current.name!r}, attribute {attribute!r} has only {len(seen) + 1} distinct values; "
                        f"make the world with more entities (n_entities >= 4)"
                    )
                choices = rng.sample(seen, 3)
                position = rng.randrange(4)
                choices.insert(position, answer)
                out.append({
                    "id": f"{current.name}-{entity.name}-{attribute}",
                    "subject": current.name,
                    "question": fill(template, entity, current),
                    "choices": choices,
                    "answer": position,
                    "attribute": attribute,
                    "entity": entity.name,
                    "template": template,
                })
    return out
