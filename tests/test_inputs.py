"""Invalid settings and inputs are refused where they enter, with one error naming the input and the fix."""

from __future__ import annotations

import json
import math
import warnings

import pytest

from rmu_lens.data.corpora import Corpus, CorpusError, load_corpus
from rmu_lens.eval.questions import QuestionError, load_questions
from rmu_lens.models import tokenizer_of
from rmu_lens.rmu.config import RMUConfig

QUESTION = {"question": "Which is a virus?", "choices": ["influenza", "oak", "salt", "granite"], "answer": 0}


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


# --- RMUConfig -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lr", "steering_coeff", "alpha", "adaptive_beta", "adam_eps", "weight_decay"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_config_refuses_non_finite_numbers(name, value):
    with pytest.raises(ValueError, match=f"{name}=.* must be a finite number"):
        RMUConfig(**{name: value})


def test_config_refuses_a_non_finite_value_inside_a_per_topic_list():
    with pytest.raises(ValueError, match="alpha=.*finite"):
        RMUConfig(alpha=[1200.0, math.nan])


def test_a_valid_config_serializes_as_strict_json():
    # json.dumps writes NaN unless told not to; a validated config must never need it
    json.loads(json.dumps(RMUConfig(lr=1e-3, adaptive_beta=2.0).to_dict(), allow_nan=False))


@pytest.mark.parametrize("name", ["max_length", "retain_max_length"])
def test_config_refuses_token_limits_that_leave_nothing_to_measure(name):
    with pytest.raises(ValueError, match=f"{name}=1 leaves no token.*use 2 or more"):
        RMUConfig(**{name: 1})
    assert getattr(RMUConfig(**{name: 2}), name) == 2


def test_config_refuses_negative_weight_decay_and_zero_eps():
    with pytest.raises(ValueError, match="weight_decay"):
        RMUConfig(weight_decay=-0.1)
    with pytest.raises(ValueError, match="adam_eps"):
        RMUConfig(adam_eps=0.0)


# --- corpora ---------------------------------------------------------------------------------


def test_whitespace_only_texts_are_dropped_from_files_with_a_warning(tmp_path):
    source = write_jsonl(tmp_path / "c.jsonl", [{"text": "a real text"}, {"text": "   \n\t"}, {"text": ""}, {"text": "more"}])
    with pytest.warns(UserWarning, match=r"dropped 2 empty or whitespace-only text\(s\) \(first at .*c.jsonl:2\)"):
        corpus = load_corpus(source)
    assert corpus.texts == ["a real text", "more"]


def test_a_file_of_only_whitespace_texts_is_refused(tmp_path):
    source = write_jsonl(tmp_path / "c.jsonl", [{"text": "  "}, {"text": "\n"}])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CorpusError, match="no texts left.*2 of them blank"):
            load_corpus(source)


def test_in_memory_whitespace_text_is_refused_naming_its_index():
    with pytest.raises(CorpusError, match="text 1 is empty or whitespace only"):
        Corpus(name="forget", texts=["fine", "  "], source="in-memory texts")


def test_trainer_inputs_refuse_whitespace_texts():
    from rmu_lens.rmu.batches import as_source

    with pytest.raises(CorpusError, match="text 0 is empty"):
        as_source("forget", ["\n\n", "a text"])


@pytest.mark.parametrize("value, shown", [(None, "null"), (12, "int 12"), (["a"], "list")])
def test_a_non_string_text_is_an_error_naming_file_and_row(tmp_path, value, shown):
    source = write_jsonl(tmp_path / "c.jsonl", [{"text": "ok"}, {"text": value}])
    with pytest.raises(CorpusError, match=rf"c.jsonl:2: field 'text' is {shown}"):
        load_corpus(source)


def test_a_null_text_in_parquet_is_an_error_naming_the_row(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["ok", None]}), tmp_path / "c.parquet")
    with pytest.raises(CorpusError, match=r"c.parquet: row 2: field 'text' is null"):
        load_corpus(tmp_path / "c.parquet")


def test_txt_documents_are_separated_by_blank_lines(tmp_path):
    (tmp_path / "c.txt").write_text("first line\nsecond line\n\n  \nnext document\n", encoding="utf-8")
    assert load_corpus(tmp_path / "c.txt").texts == ["first line\nsecond line", "next document"]


def test_txt_with_several_lines_and_no_blank_line_is_refused_with_the_fix(tmp_path):
    (tmp_path / "c.txt").write_text("one\ntwo\nthree\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="3 lines and no blank line.*separated by blank lines"):
        load_corpus(tmp_path / "c.txt")


def test_a_one_line_txt_is_one_text(tmp_path):
    (tmp_path / "c.txt").write_text("just one document\n", encoding="utf-8")
    assert load_corpus(tmp_path / "c.txt").texts == ["just one document"]


@pytest.mark.parametrize("name", ["c.jsonl", "c.txt"])
def test_non_utf8_corpus_is_one_error_naming_the_file_and_the_fix(tmp_path, name):
    text = '{"text": "caf\xe9"}\n' if name.endswith(".jsonl") else "caf\xe9\n"
    (tmp_path / name).write_bytes(text.encode("latin-1"))
    with pytest.raises(CorpusError, match=rf"{name}: not UTF-8 text \(byte 0xe9 .*re-save the file as UTF-8"):
        load_corpus(tmp_path / name)


def test_bundled_corpus_names_cannot_leave_the_package():
    with pytest.raises(CorpusError, match="No bundled corpus"):
        load_corpus("bundled:../questions/virology")


# --- question sets ---------------------------------------------------------------------------


def test_bundled_question_names_cannot_leave_the_package():
    # rmu_lens/data/corpora/virology.jsonl exists, one folder up from the question sets
    with pytest.raises(QuestionError, match=r"No bundled question set '../corpora/virology'; available: bundled:"):
        load_questions("bundled:../corpora/virology")


def test_bundled_question_sets_still_load():
    assert len(load_questions("bundled:virology")) > 50


@pytest.mark.parametrize("name", ["q.jsonl", "q.json", "q.csv"])
def test_non_utf8_question_file_is_one_error_naming_the_file(tmp_path, name):
    text = {"q.jsonl": json.dumps({**QUESTION, "question": "QQQ"}) + "\n",
            "q.json": json.dumps([{**QUESTION, "question": "QQQ"}]),
            "q.csv": "QQQ,a,b,c,d,A\n"}[name].replace("QQQ", "caf\xe9")
    (tmp_path / name).write_bytes(text.encode("latin-1"))
    with pytest.raises(QuestionError, match=rf"{name}: not UTF-8 text \(byte 0xe9.*re-save the file as UTF-8"):
        load_questions(tmp_path / name)


def test_an_oversized_question_is_refused_before_scoring(tmp_path):
    source = write_jsonl(tmp_path / "q.jsonl", [QUESTION, {**QUESTION, "question": "x" * 2_000_000}])
    with pytest.raises(QuestionError, match=r"q.jsonl:2: question and choices are 2,000,\d+ characters, over the limit"):
        load_questions(source)
    assert len(load_questions(source, max_chars=None)) == 2


def test_an_oversized_csv_field_is_a_question_error(tmp_path):
    (tmp_path / "q.csv").write_text("x" * 200_000 + ",a,b,c,d,A\n", encoding="utf-8")
    with pytest.raises(QuestionError, match="q.csv: not a readable CSV file"):
        load_questions(tmp_path / "q.csv")


# --- trainer inputs --------------------------------------------------------------------------


def tiny_config(**overrides) -> RMUConfig:
    settings = dict(layer=2, steering_coeff=8.0, alpha=5.0, lr=1e-3, batch_size=2, max_batches=4, max_length=24,
                    retain_max_length=24, checkpoint_every=0)
    return RMUConfig(**{**settings, **overrides})


def tokenized(tokenizer, items: list[str], max_length: int = 24) -> list[dict]:
    tokenizer.padding_side = "right"
    return [dict(tokenizer(items[i:i + 2], return_tensors="pt", padding=True, truncation=True, max_length=max_length))
            for i in range(0, len(items), 2)]


def test_a_list_of_token_batches_is_one_forget_topic(make_tiny):
    import rmu_lens as rl
    from tests.helpers import texts

    forget, retain = texts("bio", 8), texts("retain", 8)
    text_run = rl.unlearn(make_tiny(n_layers=4, seed=3), forget, retain, tiny_config(), progress=False)
    bridge = make_tiny(n_layers=4, seed=3)
    tokenizer = tokenizer_of(bridge)
    token_run = rl.unlearn(bridge, tokenized(tokenizer, forget), tokenized(tokenizer, retain), tiny_config(), progress=False)
    assert token_run.topics == ["forget"] == text_run.topics
    assert [h["forget_loss"] for h in token_run.history] == pytest.approx([h["forget_loss"] for h in text_run.history], rel=1e-6)


def test_a_text_batch_of_single_tokens_is_refused_naming_the_batch(make_tiny):
    import rmu_lens as rl
    from tests.helpers import texts

    bridge = make_tiny(n_layers=4)
    # Two-token limit keeps one measurable token per row; the texts below tokenize to one token each.
    tokenizer = tokenizer_of(bridge)
    single = [t for t in ("a", "b", "c", "d", "e", "x", "y", "z") if len(tokenizer(t)["input_ids"]) == 1][:2]
    assert len(single) == 2, "the tiny tokenizer should encode single letters as one token"
    with pytest.raises(ValueError, match=r"'forget' batch 0 \(texts 0..1, max_length=24\) has no row of two or more tokens"):
        rl.unlearn(bridge, single + texts("bio", 2), texts("retain", 4), tiny_config(adaptive_beta=2.0), progress=False)


def test_a_pre_tokenized_batch_of_single_tokens_is_refused():
    import torch

    from rmu_lens.rmu.batches import as_source

    with pytest.raises(ValueError, match=r"forget\[0\]: this pre-tokenized batch has no row of two or more tokens"):
        as_source("forget", [{"input_ids": torch.tensor([[5], [7]]), "attention_mask": torch.tensor([[1], [1]])}])


def test_control_vectors_as_one_row_per_topic_tensor(make_tiny):
    import torch

    import rmu_lens as rl
    from tests.helpers import texts

    bridge = make_tiny(n_layers=4)
    d_model = bridge.cfg.d_model
    rows = torch.randn(2, d_model, generator=torch.Generator().manual_seed(0))
    forget = {"bio": texts("bio", 4), "cyber": texts("cyber", 4)}
    run = rl.unlearn(bridge, forget, texts("retain", 4), tiny_config(max_batches=2), control_vectors=rows, progress=False)
    for row, topic in zip(rows, ["bio", "cyber"]):
        torch.testing.assert_close(run.control_vectors[topic], row / row.norm())


def test_control_vectors_tensor_of_the_wrong_shape_is_one_clear_error():
    import torch

    from rmu_lens.rmu.control import check_control_vectors

    with pytest.raises(ValueError, match=r"shape \(3, 16\); expected \(2, 16\): one row per forget topic \['bio', 'cyber'\]"):
        check_control_vectors(torch.ones(3, 16), ["bio", "cyber"], 16)
    with pytest.raises(ValueError, match=r"control_vectors\['bio'\] has shape \(8,\); expected \(16,\)"):
        check_control_vectors(torch.ones(2, 8), ["bio", "cyber"], 16)


# --- analyze --data NAME=SOURCE:ROLE ---------------------------------------------------------


def test_dataset_names_may_contain_equals_signs():
    from rmu_lens.cli import parse_dataset

    assert parse_dataset("lr=1e-3=bundled:virology:forget") == ("lr=1e-3", "bundled:virology", "forget")
    assert parse_dataset("virology=bundled:virology:forget") == ("virology", "bundled:virology", "forget")


def test_dataset_paths_may_contain_equals_signs(tmp_path):
    from rmu_lens.cli import parse_dataset

    folder = tmp_path / "lr=1e-3"
    folder.mkdir()
    (folder / "texts.jsonl").write_text('{"text": "a text"}\n', encoding="utf-8")
    source = str(folder / "texts.jsonl")
    assert parse_dataset(f"mine={source}:retain") == ("mine", source, "retain")
    assert parse_dataset(f"a=b={source}:retain") == ("a=b", source, "retain")


def test_dataset_without_a_name_is_refused():
    from rmu_lens.cli import parse_dataset

    with pytest.raises(ValueError, match="write NAME=SOURCE:ROLE"):
        parse_dataset("bundled:virology:forget")
