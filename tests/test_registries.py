"""Question-format, row-reader and prompt-mode registries: adding one is a function and a decorator,
and an unknown name is one error listing the registered ones."""

from __future__ import annotations

import json

import pytest

from rmu_lens.eval import Question, QuestionError, load_questions
from rmu_lens.eval import prompts, questions
from rmu_lens.eval.prompts import PROMPT_MODES, PromptModeError, Request, build_request, get_prompt_mode, prompt_mode
from rmu_lens.eval.questions import QUESTION_FORMATS, ROW_READERS, question_format, row_reader
from rmu_lens.errors import RMULensError

ROWS = [
    {"question": "Which gas do plants absorb?", "choices": ["Helium", "Neon", "Carbon dioxide", "Argon"], "answer": 2},
    {"question": "Which molecule stores genes?", "choices": ["DNA", "Lipid", "Starch", "Water"], "answer": 0},
]


@pytest.fixture
def restore_registries():
    saved = dict(QUESTION_FORMATS), dict(ROW_READERS), dict(prompts._MODES)
    yield
    for registry, before in zip((QUESTION_FORMATS, ROW_READERS, prompts._MODES), saved):
        registry.clear()
        registry.update(before)


def test_builtin_names_are_exported():
    assert PROMPT_MODES == ("letter", "cloze")
    assert questions.FORMATS == ("wmdp", "mmlu", "mmlu-csv") == tuple(QUESTION_FORMATS)
    assert set(ROW_READERS) == {".jsonl", ".json", ".parquet"}


def test_unknown_mode_and_format_name_the_registered_ones(tmp_path):
    with pytest.raises(PromptModeError, match=r"mode='generate'; choose one of 'letter' .*'cloze'") as info:
        build_request(Question("Q?", ["a", "b", "c", "d"], 0, None, "t", "t/0"), "generate")
    assert isinstance(info.value, RMULensError) and isinstance(info.value, ValueError)
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    with pytest.raises(QuestionError, match=r"format='xml'; choose one of \['wmdp', 'mmlu', 'mmlu-csv'\]"):
        load_questions(path, format="xml")


def test_a_registered_row_reader_reads_its_suffix_as_wmdp_rows(tmp_path, restore_registries):
    @row_reader(".tsv")
    def tsv_rows(path):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            question, *choices, answer = line.split("\t")
            yield f"{path}:{number}", {"question": question, "choices": choices, "answer": int(answer)}

    tsv = tmp_path / "set.tsv"
    tsv.write_text("".join("\t".join([r["question"], *r["choices"], str(r["answer"])]) + "\n" for r in ROWS))
    jsonl = tmp_path / "set.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert load_questions(tsv, format="wmdp") == load_questions(jsonl)
    with pytest.raises(QuestionError, match=r"unsupported question file '.txt'; use .jsonl, .json, .parquet, .tsv"):
        (tmp_path / "set.txt").write_text("x")
        load_questions(tmp_path / "set.txt")


def test_a_registered_format_is_detected_by_suffix_and_names_its_task(tmp_path, restore_registries):
    @question_format("lines", detects=(".qa",), task="lines-set", needs_subject=True)
    def lines_rows(path):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            subject, question, *choices = line.split("|")
            yield f"{path}:{number}", {"question": question, "choices": choices, "answer": 0, "subject": subject or None}

    path = tmp_path / "x.qa"
    path.write_text("virology|Which is a virus?|influenza|oak|salt|granite\n")
    [question] = load_questions(path)
    assert question == Question("Which is a virus?", ["influenza", "oak", "salt", "granite"], 0, "virology", "lines-set",
                                "lines-set/virology/0")
    path.write_text("|Which is a virus?|influenza|oak|salt|granite\n")
    assert len(load_questions(path)) == 1  # detected: needs_subject applies only when the format is asked for
    with pytest.raises(QuestionError, match="format 'lines' needs a 'subject'"):
        load_questions(path, format="lines")


def test_a_registered_prompt_mode_builds_requests_and_carries_its_settings(restore_registries):
    @prompt_mode("yes-no", lm_eval_tasks="none", acc_norm=True)
    def yes_no(question):
        return Request(question.question, [" " + c for c in question.choices])

    question = Question("Q?", ["a", "b", "c", "d"], 0, None, "t", "t/0")
    assert build_request(question, "yes-no") == Request("Q?", [" a", " b", " c", " d"])
    spec = get_prompt_mode("yes-no")
    assert spec.acc_norm and spec.lm_eval_tasks == "none"
    assert not get_prompt_mode("letter").acc_norm and get_prompt_mode("cloze").acc_norm
    with pytest.raises(PromptModeError, match="'yes-no' \\(none\\)"):
        get_prompt_mode("nope")
