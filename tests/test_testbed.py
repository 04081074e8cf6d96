"""The ground-truth testbed: world generator, templates, questions, tokenizer, cache (seconds, tiny size)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import torch

from rmu_lens.testbed import render, templates
from rmu_lens.testbed.testbed import Testbed, build_testbed, load_testbed, testbed_rmu_config
from rmu_lens.testbed.tokenizer import build_tokenizer
from rmu_lens.testbed.train import SIZES
from rmu_lens.testbed.world import N_ATTRIBUTES, WORD_POOLS, make_world

# A plain re-implementation of GPT-2-style pre-tokenization for ASCII text: a word keeps its
# leading space; punctuation and whitespace characters stand alone.
WORDS = re.compile(r" ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s")


def words(texts) -> set[str]:
    return {w for text in texts for w in WORDS.findall(text)}


def entity_names(world) -> set[str]:
    return {e.name for d in world.domains for e in d.entities}


def evaluation_prompts(world) -> list[str]:
    return [render.qa_prompt(q["subject"], q["question"]) + " " + c for q in render.questions(world) for c in q["choices"]]


@pytest.fixture(scope="module")
def world():
    return make_world(seed=0, overlap=0.5)


@pytest.fixture(scope="module")
def tiny_testbed(tmp_path_factory) -> Testbed:
    """A testbed of the "tiny" size (4 entities per domain, 2 layers, 20 steps): built in seconds."""
    directory = tmp_path_factory.mktemp("testbed") / "tiny"
    build_testbed(directory, seed=0, size="tiny", overlap=0.5, progress=False)
    return Testbed.from_dir(directory)


# --- world ----------------------------------------------------------------------------------


def test_make_world_is_deterministic_per_seed():
    assert make_world(seed=3).to_json() == make_world(seed=3).to_json()


def test_different_seeds_give_different_worlds():
    assert entity_names(make_world(seed=0)) != entity_names(make_world(seed=1))


def test_world_round_trips_through_json(world):
    assert type(world).from_json(world.to_json()) == world


def test_entity_names_are_unique_made_up_words(world):
    names = [e.name for d in world.domains for e in d.entities]
    english = {w.lower() for pool in WORD_POOLS.values() for w in pool}
    assert len(names) == len(set(names)) == 4 * world.n_entities
    assert not {n.lower() for n in names} & english
    assert all(re.fullmatch(r"[A-Z][a-z]+", n) for n in names)


def test_world_has_forget_adjacent_and_two_distant_domains(world):
    roles = Counter(d.role for d in world.domains)
    assert roles == {"forget": 1, "adjacent": 1, "distant": 2}
    assert all(len(d.attributes) == N_ATTRIBUTES and len(d.entities) == world.n_entities for d in world.domains)


def test_attribute_values_are_used_evenly(world):
    for domain in world.domains:
        for attribute in domain.attributes:
            counts = Counter(e.facts[attribute] for e in domain.entities)
            assert max(counts.values()) - min(counts.values()) <= 1, (domain.name, attribute, counts)


@pytest.mark.parametrize("overlap, shared", [(0.0, 0), (0.5, 3), (1.0, 6)])
def test_overlap_sets_how_many_attribute_types_are_shared(overlap, shared):
    world = make_world(seed=0, overlap=overlap)
    assert len(set(world.adjacent.attributes) & set(world.forget.attributes)) == shared


def test_overlap_increases_shared_vocabulary_monotonically():
    def shared_vocabulary(overlap: float) -> float:
        world = make_world(seed=0, overlap=overlap)
        names = {" " + n for n in entity_names(world)} | entity_names(world)
        vocab = {}
        for domain in (world.forget, world.adjacent):
            texts = render.domain_paragraphs(world, domain, 2) + render.qa_documents(world, domain)
            vocab[domain.name] = words(texts) - names
        a, b = vocab[world.forget.name], vocab[world.adjacent.name]
        return len(a & b) / len(a | b)

    values = [shared_vocabulary(k / N_ATTRIBUTES) for k in range(N_ATTRIBUTES + 1)]
    assert all(later > earlier for earlier, later in zip(values, values[1:])), values


@pytest.mark.parametrize("overlap", [-0.1, 1.5])
def test_overlap_outside_zero_to_one_is_rejected(overlap):
    with pytest.raises(ValueError, match="overlap"):
        make_world(overlap=overlap)


# --- templates and questions ----------------------------------------------------------------


def test_heldout_templates_are_disjoint_from_training_templates():
    training = {t for a in templates.TEMPLATES for t in templates.training_question_templates(a)}
    training |= {s for spec in templates.TEMPLATES.values() for s in spec.statements}
    heldout = {t for a in templates.TEMPLATES for t in templates.heldout_question_templates(a)}
    assert not training & heldout


def test_no_evaluation_question_occurs_in_training_text(world):
    corpus = "\n".join(render.training_documents(world))
    leaked = [q["question"] for q in render.questions(world) if q["question"] in corpus]
    assert not leaked


def test_every_word_of_the_evaluation_prompts_occurs_in_training_text(world):
    untrained = words(evaluation_prompts(world)) - words(render.training_documents(world))
    assert not untrained


def test_distractors_are_other_values_of_the_same_attribute(world):
    for question in render.questions(world):
        domain = world.domain(question["subject"])
        entity = next(e for e in domain.entities if e.name == question["entity"])
        values = {e.facts[question["attribute"]] for e in domain.entities}
        choices = question["choices"]
        assert choices[question["answer"]] == entity.facts[question["attribute"]]
        assert len(set(choices)) == 4 and set(choices) <= values


def test_questions_follow_the_wmdp_schema_with_domain_subjects(world):
    questions = render.questions(world)
    assert len({q["id"] for q in questions}) == len(questions) == 4 * world.n_entities * N_ATTRIBUTES
    for q in questions:
        assert isinstance(q["question"], str) and len(q["choices"]) == 4 and q["answer"] in range(4)
    assert Counter(q["subject"] for q in questions) == {d.name: world.n_entities * N_ATTRIBUTES for d in world.domains}


def test_answer_positions_are_balanced(world):
    positions = Counter(q["answer"] for q in render.questions(world))
    assert min(positions.values()) / sum(positions.values()) > 0.15, positions


def test_training_qa_documents_start_with_the_evaluators_cloze_prompt(world):
    from rmu_lens.eval import Question
    from rmu_lens.eval.prompts import cloze_request

    for domain in world.domains:
        for document in render.qa_documents(world, domain):
            first_question = re.match(r"[^\n]*\n\nQuestion: ([^\n]*)\nAnswer: ", document).group(1)
            request = cloze_request(Question(first_question, ["a", "b", "c", "d"], 0, domain.name, "testbed", "x"))
            assert document.startswith(request.context + " ")


# --- tokenizer ------------------------------------------------------------------------------


def test_tokenizer_round_trips_training_text_and_prompts(world):
    texts = render.training_documents(world) + evaluation_prompts(world)
    tokenizer = build_tokenizer(texts)
    encoded = tokenizer(texts, add_special_tokens=True)["input_ids"]
    assert all(tokenizer.unk_token_id not in ids for ids in encoded)
    assert [tokenizer.decode(ids) for ids in encoded] == texts


def test_tokenizer_adds_no_bos_and_pads_with_eos(world):
    tokenizer = build_tokenizer(render.training_documents(world))
    ids = tokenizer("The city of", add_special_tokens=True)["input_ids"]
    assert tokenizer.bos_token_id not in ids and len(ids) == 3
    assert tokenizer.pad_token_id == tokenizer.eos_token_id is not None


def test_cloze_answer_is_one_token_after_answer_colon(world):
    from rmu_lens.eval.prompts import encode_pair

    tokenizer = build_tokenizer(render.training_documents(world) + evaluation_prompts(world))
    question = render.questions(world)[0]
    context = render.qa_prompt(question["subject"], question["question"])
    _, continuation = encode_pair(tokenizer, context, " " + question["choices"][0])
    assert continuation == [tokenizer.convert_tokens_to_ids("\u0120" + question["choices"][0])]


# --- the built testbed (tiny size) ----------------------------------------------------------


def test_testbed_model_dir_loads_as_plain_hf_model_with_the_bridges_logits(tiny_testbed):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rmu_lens.models import hf_model_of

    tokenizer = AutoTokenizer.from_pretrained(tiny_testbed.model_dir)
    plain = AutoModelForCausalLM.from_pretrained(tiny_testbed.model_dir, dtype=torch.float32)
    ids = tokenizer("The following are questions (with answers) about plants.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = plain(input_ids=ids).logits
        got = hf_model_of(tiny_testbed.bridge())(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_saved_tokenizer_reloads_without_bos_and_with_eos_padding(tiny_testbed):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_testbed.model_dir)
    text = tiny_testbed.forget_corpus().texts[0]
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.bos_token_id not in ids and tokenizer.decode(ids) == text
    assert tokenizer.pad_token_id == tokenizer.eos_token_id is not None


def test_load_testbed_trains_once_then_reads_the_cache(tmp_path, monkeypatch):
    import rmu_lens.testbed.train as train

    monkeypatch.setenv("RMU_LENS_CACHE", str(tmp_path))
    first = load_testbed(seed=1, size="tiny", overlap=0.5, progress=False)

    def refuse(*args, **kwargs):
        raise AssertionError("load_testbed trained again although the testbed was cached")

    monkeypatch.setattr(train, "train_model", refuse)
    second = load_testbed(seed=1, size="tiny", overlap=0.5, progress=False)
    assert second.model_dir == first.model_dir and second.model_dir.parent == tmp_path / "testbed"
    assert [p.name for p in second.model_dir.parent.iterdir()] == [first.model_dir.name]  # no staging left


def test_questions_file_loads_with_the_evaluator(tiny_testbed):
    from rmu_lens.eval import load_questions

    loaded = load_questions(tiny_testbed.model_dir / "questions.jsonl")
    assert [(q.id, q.subject, q.answer) for q in loaded] == [(q.id, q.subject, q.answer) for q in tiny_testbed.questions()]


def test_forget_corpus_is_about_the_forget_domain_only(tiny_testbed):
    world = tiny_testbed.world
    text = "\n".join(tiny_testbed.forget_corpus().texts)
    assert all(e.name in text for e in world.forget.entities)
    others = [e.name for d in world.domains if d.role != "forget" for e in d.entities]
    assert not [n for n in others if re.search(rf"\b{n}\b", text)]


def test_retain_corpus_has_distant_domains_and_filler_but_no_forget_or_adjacent_entity(tiny_testbed):
    world = tiny_testbed.world
    text = "\n".join(tiny_testbed.retain_corpus().texts)
    excluded = [e.name for d in (world.forget, world.adjacent) for e in d.entities]
    assert not [n for n in excluded if re.search(rf"\b{n}\b", text)]
    assert all(e.name in text for d in world.distant for e in d.entities)
    assert any(opener in text for opener in templates.FILLER_OPENERS)


def test_unlearn_runs_on_the_testbed_corpora_unchanged(tiny_testbed):
    from rmu_lens.rmu import unlearn

    config = testbed_rmu_config(layer=1, update_layers=[0, 1], max_batches=2)
    run = unlearn(tiny_testbed.bridge(), forget=tiny_testbed.forget_corpus(), retain=tiny_testbed.retain_corpus(),
                  config=config, progress=False)
    assert len(run.history) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in run.history)


def test_rmu_preset_reads_a_middle_layer_of_the_small_model():
    config = testbed_rmu_config()
    assert 0 < config.layer < SIZES["small"].n_layers - 1


def test_testbed_dir_without_its_files_is_rejected_with_the_fix(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="load_testbed"):
        Testbed.from_dir(tmp_path)
