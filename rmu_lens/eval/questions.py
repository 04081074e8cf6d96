"""Multiple-choice question sets: WMDP and MMLU schemas from local files, bundled sets and the HF hub.

Accepted sources (``load_questions(source)``):

* WMDP schema ``{question, choices: [4], answer: int}`` in .jsonl, .json (a list of objects, or an
  object with a ``data``/``questions``/``test`` list) or .parquet; an optional ``subject`` field;
* MMLU in the ``cais/mmlu`` schema (WMDP fields plus ``subject``; ``answer`` an int or a letter);
* MMLU's original CSV layout: ``<subject>_test.csv`` files without a header (question, A, B, C, D,
  answer letter); a directory of them is one task with one subject per file;
* ``bundled:NAME`` for a set shipped in ``rmu_lens/data/questions/``, ``bundled:NAME:SPLIT`` for one
  of its halves (``dev`` or ``test``, from each row's ``split`` field; see docs/question_sets.md);
* an HF dataset name (``cais/wmdp`` with ``config="wmdp-bio"``, ``cais/mmlu``) when online.

Question formats and file readers are registries: ``@question_format(NAME, ...)`` on a function
``path -> (where, record) rows`` adds a ``format=`` value, ``@row_reader(".SUFFIX")`` adds a file
type the ``wmdp`` and ``mmlu`` formats read (see docs/contributing.md).

Every row is checked where it enters: errors name the file, the row and the fix. Files must be
UTF-8; a row whose question and choices together exceed ``max_chars`` characters (default
``MAX_QUESTION_CHARS``) is refused before anything tokenizes it.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from rmu_lens._text_files import jsonl_records, not_utf8_message
from rmu_lens.errors import RMULensError

N_CHOICES = 4
LETTERS = "ABCD"
BUNDLED_PREFIX = "bundled:"
QUESTION_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
# lm-eval's topic words in the WMDP task descriptions (tasks/wmdp/wmdp_*.yaml).
WMDP_TOPICS = {"wmdp-bio": "biology", "wmdp-cyber": "cybersecurity", "wmdp-chem": "chemistry"}
WMDP_CONFIGS = tuple(WMDP_TOPICS)
MMLU_SPLIT_SUFFIXES = ("_test", "_dev", "_val")
MAX_QUESTION_CHARS = 100_000
"""Longest question + choices accepted (about 25k tokens, beyond the context of the models evaluated
here; WMDP's longest rows are far shorter). Scoring a longer row costs minutes and gigabytes."""


class QuestionError(RMULensError, ValueError):
    """A question set could not be read: the message names the input, the row and the fix."""


@dataclass(frozen=True)
class Question:
    """One multiple-choice question; ``answer`` indexes ``choices``.

    ``task`` names the set (``wmdp-bio``, ``mmlu``, a file's stem); ``subject`` is the MMLU subject
    or a per-row ``subject`` field, else None; ``id`` is unique within a loaded set.
    """

    question: str
    choices: list[str]
    answer: int
    subject: str | None
    task: str
    id: str
    split: str | None = None
    """The row's ``split`` field (``dev`` / ``test`` in the bundled sets), else None."""

    @property
    def topic(self) -> str:
        """The words lm-eval puts in the description: subject (underscores as spaces), WMDP topic, or task."""
        if self.subject:
            return self.subject.replace("_", " ")
        return WMDP_TOPICS.get(_wmdp_key(self.task), self.task.replace("_", " "))

    @property
    def group(self) -> str:
        """The key results are grouped by: the subject, or the task when there is none."""
        return self.subject or self.task

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_question(question: Question) -> None:
    """Raise QuestionError unless ``question`` has N_CHOICES string choices and an answer among them."""
    where = f"question {question.id!r}"
    _check_record({"question": question.question, "choices": question.choices, "answer": question.answer}, where)
    if not isinstance(question.answer, int) or isinstance(question.answer, bool):
        raise QuestionError(f"{where}: 'answer' must be the index of the correct choice, found {question.answer!r}")


def _wmdp_key(task: str) -> str:
    """``wmdp_bio`` / ``WMDP-Bio`` → ``wmdp-bio``; other names pass through lowered."""
    return task.lower().replace("_", "-")


# --- row validation -----------------------------------------------------------------------


def _parse_answer(value: Any, n_choices: int, where: str) -> int:
    if isinstance(value, bool):
        raise QuestionError(f"{where}: 'answer' is a boolean ({value}); give the index of the correct choice (0-{n_choices - 1})")
    if isinstance(value, int):
        index = value
    elif isinstance(value, float) and value.is_integer():
        index = int(value)
    elif isinstance(value, str) and value.strip().upper() in LETTERS[:n_choices] and len(value.strip()) == 1:
        index = LETTERS.index(value.strip().upper())
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        index = int(value.strip())
    else:
        raise QuestionError(
            f"{where}: 'answer' is {value!r}; give the index of the correct choice (0-{n_choices - 1}) "
            f"or its letter ({', '.join(LETTERS[:n_choices])})"
        )
    if not 0 <= index < n_choices:
        raise QuestionError(f"{where}: 'answer' {value!r} is out of range for {n_choices} choices (use 0-{n_choices - 1} or A-{LETTERS[n_choices - 1]})")
    return index


def _check_record(
    record: Any, where: str, max_chars: int | None = MAX_QUESTION_CHARS
) -> tuple[str, list[str], int, str | None, str | None]:
    """(question, choices, answer, subject, id) of one row, or a QuestionError naming what is wrong."""
    if not isinstance(record, dict):
        raise QuestionError(f"{where}: expected an object with 'question', 'choices', 'answer', found {type(record).__name__}")
    missing = [k for k in ("question", "choices", "answer") if k not in record]
    if missing:
        raise QuestionError(
            f"{where}: missing field(s) {missing} (found {sorted(record)}); each row needs 'question' (text), "
            f"'choices' (a list of {N_CHOICES} texts) and 'answer' (an index or a letter)"
        )
    question, choices = record["question"], record["choices"]
    if not isinstance(question, str) or not question.strip():
        raise QuestionError(f"{where}: 'question' must be a non-empty string, found {question!r}")
    if not isinstance(choices, (list, tuple)) or isinstance(choices, str):
        raise QuestionError(f"{where}: 'choices' must be a list of {N_CHOICES} strings, found {type(choices).__name__}")
    choices = list(choices)
    if len(choices) != N_CHOICES:
        raise QuestionError(
            f"{where}: {len(choices)} choices; lm-eval's WMDP/MMLU prompt has exactly {N_CHOICES} (A-D). "
            f"Pad or split the question so it has {N_CHOICES} choices."
        )
    bad = [i for i, c in enumerate(choices) if not isinstance(c, str)]
    if bad:
        raise QuestionError(f"{where}: choice {bad[0]} is {choices[bad[0]]!r} ({type(choices[bad[0]]).__name__}); choices must be strings")
    size = len(question) + sum(len(c) for c in choices)
    if max_chars is not None and size > max_chars:
        raise QuestionError(
            f"{where}: question and choices are {size:,} characters, over the limit of {max_chars:,}; "
            f"shorten the row, or pass max_chars= (load_questions) to raise the limit"
        )
    answer = _parse_answer(record["answer"], len(choices), where)
    subject = record.get("subject")
    if subject is not None and not isinstance(subject, str):
        raise QuestionError(f"{where}: 'subject' must be a string, found {subject!r}")
    row_id = record.get("id")
    return question, choices, answer, (subject or None), (None if row_id is None else str(row_id))


def _build(rows: Iterable[tuple[str, Any]], task: str, max_chars: int | None = MAX_QUESTION_CHARS) -> list[Question]:
    """Questions from (where, record) pairs; ids default to ``task/subject/index``."""
    questions, seen = [], set()
    counters: dict[str | None, int] = {}
    for where, record in rows:
        question, choices, answer, subject, row_id = _check_record(record, where, max_chars)
        index = counters.get(subject, 0)
        counters[subject] = index + 1
        if row_id is None:
            row_id = f"{task}/{subject}/{index}" if subject else f"{task}/{index}"
        if row_id in seen:
            raise QuestionError(f"{where}: id {row_id!r} occurs twice; ids must be unique within a question set")
        seen.add(row_id)
        split = record.get("split")
        if split is not None and (not isinstance(split, str) or not split.strip()):
            raise QuestionError(f"{where}: 'split' must be a name such as 'dev' or 'test', found {split!r}")
        questions.append(Question(question, choices, answer, subject, task, row_id, split))
    return questions


# --- readers ------------------------------------------------------------------------------

Rows = Iterator[tuple[str, Any]]
"""(where, record) pairs: ``where`` names the file and row in error messages."""

ROW_READERS: dict[str, Callable[[Path], Rows]] = {}
"""File suffix → reader of that file's rows (the files the ``wmdp`` and ``mmlu`` formats read)."""


def row_reader(suffix: str) -> Callable[[Callable[[Path], Rows]], Callable[[Path], Rows]]:
    """Register a reader of ``suffix`` files (``.jsonl``): a function ``path -> (where, record) rows``."""

    def register(reader: Callable[[Path], Rows]) -> Callable[[Path], Rows]:
        ROW_READERS[suffix.lower()] = reader
        return reader

    return register


def _not_utf8(path: Path, error: UnicodeDecodeError) -> QuestionError:
    return QuestionError(not_utf8_message(path, error))


@row_reader(".jsonl")
def _jsonl_rows(path: Path) -> Rows:
    for number, record in jsonl_records(path, QuestionError, "; each line must be one JSON object"):
        yield f"{path}:{number}", record


@row_reader(".json")
def _json_rows(path: Path) -> Rows:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise _not_utf8(path, error) from error
    except json.JSONDecodeError as error:
        raise QuestionError(f"{path}: not valid JSON ({error.msg} at line {error.lineno}); for one object per line use .jsonl") from error
    if isinstance(data, dict):
        lists = [k for k in ("data", "questions", "test") if isinstance(data.get(k), list)]
        if lists:
            data = data[lists[0]]
        elif all(k in data for k in ("question", "choices", "answer")) and isinstance(data["question"], list):
            # column layout, as datasets' to_dict() writes it
            data = [dict(zip(data, values)) for values in zip(*data.values())]
        else:
            raise QuestionError(f"{path}: expected a list of question objects (or an object with a 'data' list), found keys {sorted(data)}")
    if not isinstance(data, list):
        raise QuestionError(f"{path}: expected a list of question objects, found {type(data).__name__}")
    for number, record in enumerate(data, start=1):
        yield f"{path}: row {number}", record


@row_reader(".parquet")
def _parquet_rows(path: Path) -> Rows:
    try:
        import pyarrow.parquet as pq
    except ImportError as error:
        raise QuestionError(f"Reading {path} needs pyarrow: pip install pyarrow (or convert the file to .jsonl)") from error
    try:
        table = pq.read_table(path)
    except Exception as error:  # noqa: BLE001 - pyarrow raises several kinds for a damaged file
        raise QuestionError(f"{path}: not a readable parquet file ({error})") from error
    for number, record in enumerate(table.to_pylist(), start=1):
        yield f"{path}: row {number}", record


def _csv_rows(path: Path, subject: str) -> Rows:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            number = 0
            for row in reader:
                if not row or not any(cell.strip() for cell in row):
                    continue
                number += 1
                where = f"{path}: row {number} (line {reader.line_num})"
                if len(row) != 2 + N_CHOICES:
                    raise QuestionError(
                        f"{where}: {len(row)} columns; MMLU CSV rows have {2 + N_CHOICES} without a header: "
                        f"question, A, B, C, D, answer letter"
                    )
                answer = row[-1].strip()
                if answer.upper() not in LETTERS or len(answer) != 1:
                    raise QuestionError(f"{where}: answer column is {row[-1]!r}; MMLU CSV answers are letters A-D")
                yield where, {"question": row[0], "choices": row[1:-1], "answer": answer, "subject": subject}
    except UnicodeDecodeError as error:
        raise _not_utf8(path, error) from error
    except csv.Error as error:  # e.g. a field over csv's size limit, or a NUL byte
        raise QuestionError(f"{path}: not a readable CSV file ({error}); MMLU CSV rows are question, A, B, C, D, answer letter") from error


def csv_subject(path: Path) -> str:
    """MMLU subject of ``<subject>_test.csv`` (also ``_dev``/``_val``); else the file's stem."""
    stem = path.stem
    for suffix in MMLU_SPLIT_SUFFIXES:
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def _csv_directory_files(directory: Path) -> list[Path]:
    files = sorted(directory.glob("*_test.csv"))
    if not files and (directory / "test").is_dir():
        files = sorted((directory / "test").glob("*_test.csv"))
    if not files:
        files = sorted(directory.glob("*.csv"))
    if not files:
        found = sorted(p.name for p in directory.iterdir())[:10]
        raise QuestionError(
            f"{directory}: no MMLU CSV files (<subject>_test.csv) in this directory or its test/ folder "
            f"(found {found}); point the source at the folder holding them, or at one file"
        )
    return files


# --- formats ------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuestionFormat:
    """A ``format=`` of :func:`load_questions`: how its files become rows, and what the rows need.

    ``detects``: file suffixes for which this format is chosen when ``format=None``; ``folders``: it
    reads a directory (and is the format detected for one); ``task``: the set's default task name
    (None: the file's stem); ``needs_subject``: every row must carry a ``subject``.
    """

    name: str
    rows: Callable[[Path], Rows]
    detects: tuple[str, ...] = ()
    folders: bool = False
    task: str | None = None
    needs_subject: bool = False


QUESTION_FORMATS: dict[str, QuestionFormat] = {}


def question_format(
    name: str, *, detects: Sequence[str] = (), folders: bool = False, task: str | None = None, needs_subject: bool = False
) -> Callable[[Callable[[Path], Rows]], Callable[[Path], Rows]]:
    """Register a question format: decorate a function ``path -> (where, record) rows``."""

    def register(rows: Callable[[Path], Rows]) -> Callable[[Path], Rows]:
        QUESTION_FORMATS[name] = QuestionFormat(name, rows, tuple(s.lower() for s in detects), folders, task, needs_subject)
        return rows

    return register


def get_question_format(name: str) -> QuestionFormat:
    """The registered format ``name``, or a QuestionError listing the registered ones."""
    if name not in QUESTION_FORMATS:
        raise QuestionError(f"format={name!r}; choose one of {list(QUESTION_FORMATS)} or None to detect it")
    return QUESTION_FORMATS[name]


def _suffix_rows(path: Path) -> Rows:
    """Rows of a file by its suffix (ROW_READERS)."""
    suffix = path.suffix.lower()
    if suffix not in ROW_READERS:
        others = [f"{s} with format {f.name!r}" for f in QUESTION_FORMATS.values() for s in f.detects if s not in ROW_READERS]
        raise QuestionError(f"{path}: unsupported question file {suffix!r}; use {', '.join([*ROW_READERS, *others])}")
    return ROW_READERS[suffix](path)


@question_format("wmdp", detects=(".jsonl", ".json", ".parquet"))
def wmdp_rows(path: Path) -> Rows:
    """WMDP schema ``{question, choices, answer}`` (optional ``subject``) in any ROW_READERS file."""
    return _suffix_rows(path)


@question_format("mmlu", task="mmlu", needs_subject=True)
def mmlu_rows(path: Path) -> Rows:
    """The ``cais/mmlu`` schema: WMDP's fields and a ``subject`` on every row."""
    return _suffix_rows(path)


@question_format("mmlu-csv", detects=(".csv",), folders=True, task="mmlu")
def mmlu_csv_rows(path: Path) -> Rows:
    """MMLU's original CSV layout: one file, or a folder of ``<subject>_test.csv`` (one subject each)."""
    if path.is_dir():
        return (row for file in _csv_directory_files(path) for row in _csv_rows(file, csv_subject(file)))
    if path.suffix.lower() != ".csv":
        raise QuestionError(f"{path}: format 'mmlu-csv' reads .csv files (question, A, B, C, D, answer), not {path.suffix.lower()!r}")
    return _csv_rows(path, csv_subject(path))


FORMATS = tuple(QUESTION_FORMATS)
"""The built-in format names (``QUESTION_FORMATS`` also holds any registered later)."""


def _detect_format(path: Path) -> QuestionFormat:
    """The format a folder or a file's suffix implies; JSON/parquet rows read as WMDP (a ``subject`` is
    read in either schema)."""
    for spec in QUESTION_FORMATS.values():
        if (path.is_dir() and spec.folders) or (path.is_file() and path.suffix.lower() in spec.detects):
            return spec
    return QUESTION_FORMATS["wmdp"]


def _read_path(path: Path, spec: QuestionFormat | None, task: str | None, max_chars: int | None) -> list[Question]:
    """Questions of a local file or folder in format ``spec`` (detected when None)."""
    if path.is_dir() and spec is not None and not spec.folders:
        readers = [f.name for f in QUESTION_FORMATS.values() if f.folders]
        raise QuestionError(f"{path} is a directory; only format(s) {readers} read a folder (of <subject>_test.csv files)")
    spec = spec or _detect_format(path)
    return _build(spec.rows(path), task or spec.task or path.stem, max_chars)


# --- sources ------------------------------------------------------------------------------


def bundled_question_dir() -> Path:
    """Folder of the question sets shipped with rmu_lens."""
    return Path(str(resources.files("rmu_lens.data"))) / "questions"


def bundled_question_sets() -> list[str]:
    """Names usable as ``bundled:NAME``."""
    folder = bundled_question_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.iterdir() if p.suffix in QUESTION_SUFFIXES and not p.name.startswith("."))


def _bundled_path(name: str) -> Path:
    # Only names listed in the folder: a name like ../x must not reach files outside the package.
    if name not in bundled_question_sets():
        available = ", ".join(BUNDLED_PREFIX + n for n in bundled_question_sets()) or "none installed"
        raise QuestionError(f"No bundled question set {name!r}; available: {available}")
    folder = bundled_question_dir()
    return next(folder / f"{name}{suffix}" for suffix in QUESTION_SUFFIXES if (folder / f"{name}{suffix}").is_file())


def _hf_rows(name: str, config: str | None) -> tuple[list[tuple[str, Any]], str]:
    """Rows of an HF dataset's test split, and the task name (the config for WMDP, ``mmlu`` for MMLU)."""
    if name == "cais/wmdp" and config not in WMDP_CONFIGS:
        raise QuestionError(f"cais/wmdp needs config= one of {list(WMDP_CONFIGS)} (got {config!r})")
    config = config or ("all" if name == "cais/mmlu" else None)
    try:
        import datasets

        dataset = datasets.load_dataset(name, config, split="test")
    except Exception as error:  # noqa: BLE001 - datasets raises many kinds when offline
        example = f"datasets.load_dataset({name!r}, {config!r}, split='test').to_json('questions.jsonl')"
        raise QuestionError(
            f"{name!r} is not a local file or folder, and the dataset could not be loaded (config {config!r}) "
            f"from the HF hub or the local HF cache (no network?). On a machine with network, save it with `{example}` and pass the local file "
            f"(load_questions('questions.jsonl') / --data questions.jsonl). Cause: {type(error).__name__}: {error}"
        ) from error
    task = "mmlu" if name == "cais/mmlu" else (config or name.rsplit("/", 1)[-1])
    return [(f"{name}:{config} row {i + 1}", dict(row)) for i, row in enumerate(dataset)], task


def load_questions(
    source: str | os.PathLike,
    format: str | None = None,  # noqa: A002 - the public keyword users type
    subjects: Sequence[str] | None = None,
    limit: int | None = None,
    config: str | None = None,
    *,
    task: str | None = None,
    max_chars: int | None = MAX_QUESTION_CHARS,
    split: str | None = None,
) -> list[Question]:
    """Load a multiple-choice set as a list of :class:`Question`.

    ``source``: a .jsonl/.json/.parquet file, an MMLU CSV file or folder, ``bundled:NAME``, or an HF
    dataset name (``config`` picks e.g. ``wmdp-bio``). ``format``: a registered format
    (``wmdp`` | ``mmlu`` | ``mmlu-csv``; detected when None). ``subjects`` keeps those subjects (or tasks); ``limit`` keeps the first N
    questions of each subject, like lm-eval's per-task ``--limit``. ``task`` renames the set.
    ``max_chars`` refuses a row whose question and choices are longer (None: no limit).
    ``split`` keeps the rows whose ``split`` field is that name (``bundled:NAME:SPLIT`` does the same).
    """
    spec = None if format is None else get_question_format(format)
    if limit is not None and limit < 1:
        raise QuestionError(f"limit={limit}; give a positive number of questions per subject, or None for all")
    text = os.fspath(source)
    if text.startswith(BUNDLED_PREFIX):
        name, _, named_split = text[len(BUNDLED_PREFIX):].partition(":")
        if named_split:
            if split is not None and split != named_split:
                raise QuestionError(f"{source}: names split {named_split!r} but split={split!r} was passed; give one")
            split = named_split
        questions = _read_path(_bundled_path(name), spec, task or name, max_chars)
    else:
        path = Path(text).expanduser()
        if path.is_dir() or path.is_file():
            questions = _read_path(path, spec, task, max_chars)
        elif path.suffix.lower() in QUESTION_SUFFIXES or text.startswith((".", "/", "~")) or text.count("/") != 1:
            raise QuestionError(f"Question file not found: {path}")
        else:
            rows, hf_task = _hf_rows(text, config)
            questions = _build(rows, task or hf_task, max_chars)
        if spec is not None and spec.needs_subject:
            unlabelled = [q.id for q in questions if not q.subject]
            if unlabelled:
                raise QuestionError(f"{source}: format {spec.name!r} needs a 'subject' on every row; {unlabelled[0]!r} has none")
    if not questions:
        raise QuestionError(f"{source}: no questions found")
    if split is not None:
        questions = _split_of(questions, split, text)
    return select(questions, subjects=subjects, limit=limit, source=text)


def _split_of(questions: Sequence[Question], split: str, source: str) -> list[Question]:
    """The questions of one split, or a QuestionError naming the splits the set has."""
    available = sorted({q.split for q in questions if q.split is not None})
    if split not in available:
        if not available:
            raise QuestionError(f"{source}: no split {split!r}; its rows have no 'split' field, so load it without a split")
        raise QuestionError(f"{source}: no split {split!r}; its splits are {available}. Pass one of those, or no split for every question")
    return [q for q in questions if q.split == split]


def select(
    questions: Sequence[Question], *, subjects: Sequence[str] | None = None, limit: int | None = None, source: str = "questions"
) -> list[Question]:
    """Keep the named subjects (or tasks; spaces and underscores alike) and the first ``limit`` of each."""
    kept = list(questions)
    if subjects:
        wanted = {_normal(s) for s in subjects}
        available = {_normal(q.group) for q in kept} | {_normal(q.task) for q in kept}
        unknown = sorted(wanted - available)
        if unknown:
            names = sorted({q.group for q in kept})
            raise QuestionError(f"{source}: no subject(s) {unknown}; available: {names[:60]}")
        kept = [q for q in kept if _normal(q.group) in wanted or _normal(q.task) in wanted]
    if limit is not None:
        counts: dict[str, int] = {}
        limited = []
        for q in kept:
            counts[q.group] = counts.get(q.group, 0) + 1
            if counts[q.group] <= limit:
                limited.append(q)
        kept = limited
    return kept


def _normal(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")
