"""Invalid settings and inputs are refused where they enter, with one error naming the input and the fix."""

from __future__ import annotations

import json
import math
import warnings

import pytest

from rmu_lens.data.corpora import Corpus, CorpusError, load_corpus
from rmu_lens.eval.questions import QuestionError, load_questions
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
