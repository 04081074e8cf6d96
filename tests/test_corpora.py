"""Corpus loading: bundled sets, file formats, length filters, and errors that name the file and line."""

from __future__ import annotations

import json

import pytest

from rmu_lens.data.corpora import BUNDLED, Corpus, CorpusError, batch_texts, load_corpus


@pytest.mark.parametrize("name, minimum", [("virology", 100), ("cybersecurity", 100), ("retain", 200)])
def test_bundled_corpora_have_enough_passages_of_100_to_200_words(name, minimum):
    corpus = load_corpus(f"bundled:{name}")
    assert len(corpus) >= minimum
    words = [len(text.split()) for text in corpus.texts]
    assert 100 <= min(words) and max(words) <= 200
    assert len(set(corpus.texts)) == len(corpus.texts)


def test_every_bundled_name_loads():
    assert {load_corpus(f"bundled:{name}").name for name in BUNDLED} == set(BUNDLED)


def test_jsonl_reads_the_named_field_in_file_order(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"body": f"text number {i}", "text": "other"}) + "\n" for i in range(3)))
    assert load_corpus(path, text_field="body").texts == ["text number 0", "text number 1", "text number 2"]


def test_txt_documents_are_separated_by_blank_lines(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("first line\nstill first\n\n\nsecond\n\nthird\n")
    assert load_corpus(path).texts == ["first line\nstill first", "second", "third"]


def test_parquet_column_is_read(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["alpha text", "beta text"]}), tmp_path / "c.parquet")
    assert load_corpus(tmp_path / "c.parquet").texts == ["alpha text", "beta text"]


def test_length_filters_keep_texts_longer_than_min_chars_as_the_official_code(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"text": "x" * n}) + "\n" for n in (50, 51, 300)))
    assert [len(t) for t in load_corpus(path, min_chars=50).texts] == [51, 300]
    assert [len(t) for t in load_corpus(path, min_chars=50, max_chars=100).texts] == [51]


def test_missing_field_error_names_the_file_and_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"content": "no text"}) + "\n")
    with pytest.raises(CorpusError, match=r"c\.jsonl:2: no field 'text'"):
        load_corpus(path)


def test_invalid_json_error_names_the_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n{not json\n")
    with pytest.raises(CorpusError, match=r"c\.jsonl:2: not valid JSON"):
        load_corpus(path)


def test_missing_file_and_empty_corpus_are_clear_errors(tmp_path):
    with pytest.raises(CorpusError, match="not found"):
        load_corpus(tmp_path / "absent.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(CorpusError, match="no texts"):
        load_corpus(tmp_path / "empty.jsonl")
    with pytest.raises(CorpusError, match="bundled"):
        load_corpus("bundled:chemistry")


def test_hf_dataset_names_fail_offline_with_a_fix(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CorpusError, match="local"):
        load_corpus("no-such-dataset-rmu-lens")


def test_batches_are_consecutive_chunks_with_a_short_last_one():
    assert batch_texts(list("abcdefg"), 3) == [["a", "b", "c"], ["d", "e", "f"], ["g"]]


def test_hash_identifies_texts_and_order():
    assert Corpus("a", ["x", "y"], "s").sha256 != Corpus("a", ["y", "x"], "s").sha256
    assert Corpus("a", ["x", "y"], "s").sha256 == Corpus("b", ["x", "y"], "t").sha256
