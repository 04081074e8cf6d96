"""Question loaders: every accepted format, the subject/limit selection, and every bad-input error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rmu_lens.eval import Question, QuestionError, load_questions

WMDP_ROWS = [
    {"question": "What is the powerhouse of the cell?", "choices": ["Nucleus", "Mitochondrion", "Ribosome", "Vacuole"], "answer": 1},
    {"question": "Which molecule stores genetic information?", "choices": ["DNA", "Lipid", "Starch", "Water"], "answer": 0},
    {"question": "What do plants absorb for photosynthesis?", "choices": ["Helium", "Neon", "Carbon dioxide", "Argon"], "answer": 2},
]
MMLU_ROWS = [
    {"question": "What is 2 + 2?", "subject": "elementary_mathematics", "choices": ["3", "4", "5", "6"], "answer": "B"},
    {"question": "What is 3 * 3?", "subject": "elementary_mathematics", "choices": ["9", "6", "12", "3"], "answer": 0},
    {"question": "Which virus family includes influenza?", "subject": "virology", "choices": ["Orthomyxoviridae", "Poxviridae", "Reoviridae", "Retroviridae"], "answer": "A"},
]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_in_wmdp_schema_loads_questions_in_file_order(tmp_path):
    questions = load_questions(write_jsonl(tmp_path / "wmdp-bio.jsonl", WMDP_ROWS))
    assert [q.question for q in questions] == [r["question"] for r in WMDP_ROWS]
    assert [q.answer for q in questions] == [1, 0, 2]
    assert questions[0].choices == WMDP_ROWS[0]["choices"]
    assert {q.task for q in questions} == {"wmdp-bio"}
    assert [q.id for q in questions] == ["wmdp-bio/0", "wmdp-bio/1", "wmdp-bio/2"]


def test_wmdp_task_names_map_to_lm_eval_topic_words(tmp_path):
    for stem, topic in [("wmdp-bio", "biology"), ("wmdp_cyber", "cybersecurity"), ("wmdp-chem", "chemistry")]:
        questions = load_questions(write_jsonl(tmp_path / f"{stem}.jsonl", WMDP_ROWS[:1]))
        assert questions[0].topic == topic


def test_subject_field_sets_topic_with_underscores_as_spaces(tmp_path):
    rows = [dict(WMDP_ROWS[0], subject="college_biology")]
    question = load_questions(write_jsonl(tmp_path / "set.jsonl", rows))[0]
    assert question.subject == "college_biology"
    assert question.topic == "college biology"


def test_json_list_and_data_object_and_columns_load_the_same_questions(tmp_path):
    expected = load_questions(write_jsonl(tmp_path / "a.jsonl", WMDP_ROWS), task="t")
    listed = tmp_path / "b.json"
    listed.write_text(json.dumps(WMDP_ROWS))
    wrapped = tmp_path / "c.json"
    wrapped.write_text(json.dumps({"data": WMDP_ROWS}))
    columns = tmp_path / "d.json"
    columns.write_text(json.dumps({k: [r[k] for r in WMDP_ROWS] for k in WMDP_ROWS[0]}))
    for path in (listed, wrapped, columns):
        assert load_questions(path, task="t") == expected


def test_parquet_in_mmlu_schema_reads_integer_and_letter_answers(tmp_path):
    import pyarrow
    import pyarrow.parquet as pq

    rows = [dict(r, answer=str(r["answer"])) for r in MMLU_ROWS]  # one column type: "B", "0", "A"
    pq.write_table(pyarrow.Table.from_pylist(rows), tmp_path / "mmlu.parquet")
    questions = load_questions(tmp_path / "mmlu.parquet", format="mmlu")
    assert [q.answer for q in questions] == [1, 0, 0]
    assert [q.subject for q in questions] == ["elementary_mathematics", "elementary_mathematics", "virology"]
    assert questions[0].task == "mmlu"
    assert questions[2].id == "mmlu/virology/0"


def test_mmlu_csv_file_without_header_gives_subject_from_file_name(tmp_path):
    path = write_csv(tmp_path / "high_school_biology_test.csv", [
        '"Which organelle makes ATP?",Nucleus,Mitochondrion,Ribosome,Lysosome,B',
        '"A question, with a comma",one,two,three,four,D',
    ])
    questions = load_questions(path)
    assert [q.subject for q in questions] == ["high_school_biology", "high_school_biology"]
    assert questions[1].question == "A question, with a comma"
    assert [q.answer for q in questions] == [1, 3]
    assert questions[0].topic == "high school biology"


def test_mmlu_csv_directory_is_one_task_with_one_subject_per_file(tmp_path):
    folder = tmp_path / "data" / "test"
    folder.mkdir(parents=True)
    write_csv(folder / "virology_test.csv", ["Q1?,a,b,c,d,A", "Q2?,a,b,c,d,C"])
    write_csv(folder / "anatomy_test.csv", ["Q3?,a,b,c,d,D"])
    for source in (folder, tmp_path / "data"):  # the folder itself, or MMLU's data/ with test/ inside
        questions = load_questions(source)
        assert {q.task for q in questions} == {"mmlu"}
        assert [(q.subject, q.answer) for q in questions] == [("anatomy", 3), ("virology", 0), ("virology", 2)]


def test_subjects_keeps_named_subjects_and_limit_keeps_first_n_of_each(tmp_path):
    path = write_jsonl(tmp_path / "mmlu.jsonl", MMLU_ROWS)
    only_virology = load_questions(path, subjects=["virology"])
    assert [q.subject for q in only_virology] == ["virology"]
    limited = load_questions(path, limit=1)
    assert [q.question for q in limited] == ["What is 2 + 2?", "Which virus family includes influenza?"]
    assert load_questions(path, subjects=["elementary mathematics"], limit=1)[0].answer == 1


def test_explicit_ids_are_kept(tmp_path):
    rows = [dict(r, id=f"q{i}") for i, r in enumerate(WMDP_ROWS)]
    assert [q.id for q in load_questions(write_jsonl(tmp_path / "s.jsonl", rows))] == ["q0", "q1", "q2"]


def test_question_is_a_plain_dataclass():
    question = Question("Q?", ["a", "b", "c", "d"], 2, None, "demo", "demo/0")
    assert question.to_dict() == {"question": "Q?", "choices": ["a", "b", "c", "d"], "answer": 2,
                                  "subject": None, "task": "demo", "id": "demo/0", "split": None}
    assert question.group == "demo"


# --- errors -------------------------------------------------------------------------------


def error_of(path, **kwargs) -> str:
    with pytest.raises(QuestionError) as info:
        load_questions(path, **kwargs)
    return str(info.value)


def test_invalid_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(WMDP_ROWS[0]) + "\n{not json\n")
    message = error_of(path)
    assert f"{path}:2" in message and "not valid JSON" in message


def test_missing_field_names_row_and_required_fields(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [WMDP_ROWS[0], {"question": "Q?", "answer": 0}])
    message = error_of(path)
    assert f"{path}:2" in message and "'choices'" in message


def test_wrong_choice_count_names_row_and_count(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [dict(WMDP_ROWS[0], choices=["a", "b", "c"])])
    message = error_of(path)
    assert f"{path}:1" in message and "3 choices" in message and "exactly 4" in message


def test_answer_out_of_range_names_row(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [WMDP_ROWS[0], dict(WMDP_ROWS[1], answer=4)])
    message = error_of(path)
    assert f"{path}:2" in message and "out of range" in message


def test_answer_of_wrong_kind_is_rejected(tmp_path):
    for answer in ("E", "maybe", True, None, [1]):
        path = write_jsonl(tmp_path / "bad.jsonl", [dict(WMDP_ROWS[0], answer=answer)])
        assert "'answer'" in error_of(path)


def test_non_string_choice_and_empty_question_are_rejected(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [dict(WMDP_ROWS[0], choices=["a", 2, "c", "d"])])
    assert "choice 1" in error_of(path)
    path = write_jsonl(tmp_path / "bad.jsonl", [dict(WMDP_ROWS[0], question="  ")])
    assert "'question'" in error_of(path)


def test_duplicate_ids_are_rejected(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [dict(WMDP_ROWS[0], id="x"), dict(WMDP_ROWS[1], id="x")])
    assert "occurs twice" in error_of(path)


def test_csv_row_with_wrong_column_count_names_row_and_layout(tmp_path):
    path = write_csv(tmp_path / "anatomy_test.csv", ["Q1?,a,b,c,d,A", "Q2?,a,b,c,B"])
    message = error_of(path)
    assert f"{path}: row 2" in message and "5 columns" in message and "answer letter" in message


def test_csv_answer_that_is_not_a_letter_is_rejected(tmp_path):
    path = write_csv(tmp_path / "anatomy_test.csv", ["Q1?,a,b,c,d,2"])
    assert "letters A-D" in error_of(path)


def test_mmlu_format_requires_a_subject_on_every_row(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", WMDP_ROWS)
    assert "needs a 'subject'" in error_of(path, format="mmlu")


def test_missing_file_unknown_format_and_unknown_subject_are_clear(tmp_path):
    assert "not found" in error_of(tmp_path / "nope.jsonl")
    path = write_jsonl(tmp_path / "s.jsonl", MMLU_ROWS)
    assert "format='xml'" in error_of(path, format="xml")
    message = error_of(path, subjects=["astronomy"])
    assert "astronomy" in message and "virology" in message
    text = tmp_path / "s.txt"
    text.write_text("hello")
    assert "unsupported question file" in error_of(text)


def test_hub_name_offline_explains_how_to_use_a_local_file(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    message = error_of("cais/wmdp", config="wmdp-bio")
    assert "to_json" in message and "local file" in message and "no network" in message
    assert "wmdp-bio" in error_of("cais/wmdp")  # a missing config is named before any download
