"""The bundled question sets: size, well-formed rows, balanced answers, no length bias, dev/test halves.

Every ``*.jsonl`` in the bundled folder is checked, so a set added later is held to the same bar.
The length-bias numbers are computed here from the choices (not by the checker script), as the
exact expectation of a chooser that always takes the longest (or shortest) choice, ties at random.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from rmu_lens.eval.questions import QuestionError, bundled_question_dir, load_questions

FILES = sorted(bundled_question_dir().glob("*.jsonl"))
MIN_QUESTIONS = 200
CHANCE = 0.25
LENGTH_TOLERANCE = 0.03


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _sets(check: str) -> list:
    """Every bundled set, one test id each (``check`` names what the caller asserts)."""
    return [pytest.param(path, id=path.stem) for path in FILES]


def _extreme_pick(records: list[dict], pick) -> float:
    total = 0.0
    for record in records:
        lengths = [len(choice) for choice in record["choices"]]
        tied = [i for i, n in enumerate(lengths) if n == pick(lengths)]
        total += (record["answer"] in tied) / len(tied)
    return total / len(records)


def test_the_folder_holds_the_six_sets():
    assert {p.stem for p in FILES} >= {"virology", "cybersecurity", "biology", "computing", "geography", "history"}


@pytest.mark.parametrize("path", _sets("size"))
def test_set_is_large_well_formed_and_balanced(path: Path):
    records = _records(path)
    assert len(records) >= MIN_QUESTIONS
    ids = [r["id"] for r in records]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(rf"{re.escape(path.stem)}-\d{{3}}", i) for i in ids), "ids are NAME-NNN"
    for record in records:
        assert len(record["choices"]) == 4 and len({c.strip().lower() for c in record["choices"]}) == 4, record["id"]
        assert record["answer"] in range(4), record["id"]
    positions = Counter(r["answer"] for r in records)
    for position in range(4):
        assert 0.15 <= positions[position] / len(records) <= 0.35, (position, positions)


@pytest.mark.parametrize("path", _sets("length"))
def test_set_has_no_length_bias(path: Path):
    records = _records(path)
    longest, shortest = _extreme_pick(records, max), _extreme_pick(records, min)
    assert abs(longest - CHANCE) <= LENGTH_TOLERANCE, f"always-longest scores {longest:.3f}"
    assert abs(shortest - CHANCE) <= LENGTH_TOLERANCE, f"always-shortest scores {shortest:.3f}"


@pytest.mark.parametrize("path", _sets("split"))
def test_set_splits_into_even_dev_and_test_halves(path: Path):
    records = _records(path)
    assert all(r.get("split") in ("dev", "test") for r in records), "every row needs split dev or test"
    halves = Counter(r["split"] for r in records)
    assert abs(halves["dev"] - halves["test"]) <= 2, halves
    for position in range(4):
        per_position = Counter(r["split"] for r in records if r["answer"] == position)
        assert abs(per_position["dev"] - per_position["test"]) <= 1, (position, per_position)


def test_no_question_text_repeats_across_sets():
    seen: dict[str, str] = {}
    for path in FILES:
        for record in _records(path):
            text = " ".join(record["question"].lower().split())
            assert text not in seen or seen[text] == record["id"], f"{record['id']} repeats {seen.get(text)}"
            seen[text] = record["id"]


# --- loader: split= and bundled:NAME:SPLIT -----------------------------------------------


def test_split_keyword_and_source_suffix_select_the_same_half():
    path = bundled_question_dir() / "virology.jsonl"
    expected = {split: [r["id"] for r in _records(path) if r["split"] == split] for split in ("dev", "test")}
    for split, ids in expected.items():
        by_keyword = load_questions("bundled:virology", split=split)
        by_source = load_questions(f"bundled:virology:{split}")
        assert [q.id for q in by_keyword] == ids == [q.id for q in by_source]
        assert {q.split for q in by_source} == {split}
        assert {q.task for q in by_source} == {"virology"}
    everything = load_questions("bundled:virology")
    assert sorted(q.id for q in everything) == sorted(expected["dev"] + expected["test"])


def test_split_with_limit_and_subjects_applies_the_split_first():
    dev = load_questions("bundled:biology:dev", limit=5)
    assert len(dev) == 5 and all(q.split == "dev" for q in dev)


@pytest.mark.parametrize("source, kwargs", [
    ("bundled:virology:val", {}),
    ("bundled:virology", {"split": "train"}),
])
def test_unknown_split_is_one_clear_error(source, kwargs):
    with pytest.raises(QuestionError, match=r"no split '(val|train)'; its splits are \['dev', 'test'\]"):
        load_questions(source, **kwargs)


def test_conflicting_splits_are_refused():
    with pytest.raises(QuestionError, match="names split 'dev' but split='test'"):
        load_questions("bundled:virology:dev", split="test")


def test_split_of_a_file_without_split_fields_is_refused(tmp_path):
    path = tmp_path / "plain.jsonl"
    path.write_text(json.dumps({"question": "Q?", "choices": ["a", "b", "c", "d"], "answer": 0}) + "\n", encoding="utf-8")
    assert load_questions(path)[0].split is None
    with pytest.raises(QuestionError, match="rows have no 'split' field"):
        load_questions(path, split="dev")


def test_split_field_of_a_file_is_read_and_checked(tmp_path):
    rows = [{"question": f"Q{i}?", "choices": ["a", "b", "c", "d"], "answer": i % 4, "split": s}
            for i, s in enumerate(["dev", "test", "dev"])]
    path = tmp_path / "halves.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert [q.question for q in load_questions(path, split="dev")] == ["Q0?", "Q2?"]
    path.write_text(json.dumps({**rows[0], "split": 3}) + "\n", encoding="utf-8")
    with pytest.raises(QuestionError, match="'split' must be a name"):
        load_questions(path)
