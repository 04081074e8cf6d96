"""Text corpora for RMU: bundled sets, jsonl / txt / parquet files, and HF datasets when online.

A corpus is a named list of texts in file order (the official code chunks texts into batches in
file order, without shuffling); its sha256 goes into every run directory. docs/corpora.md describes
each file format and what is refused or dropped.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from rmu_lens._text_files import jsonl_records, not_utf8_message
from rmu_lens.errors import RMULensError

BUNDLED_PREFIX = "bundled:"
BUNDLED = {
    "virology": "Introductory virology and microbiology (forget topic, stands in for WMDP bio).",
    "cybersecurity": "Introductory computer security (forget topic, stands in for WMDP cyber).",
    "retain": "General knowledge: history, geography, the arts, everyday science (stands in for WikiText).",
}


class CorpusError(RMULensError, ValueError):
    """A corpus could not be read: the message names the file, the line and the fix."""


@dataclass
class Corpus:
    """A named list of texts and where they came from."""

    name: str
    texts: list[str]
    source: str

    def __post_init__(self) -> None:
        if not self.texts:
            raise CorpusError(f"Corpus {self.name!r} from {self.source} is empty (after length filters)")
        for index, text in enumerate(self.texts):
            if not isinstance(text, str):
                raise CorpusError(f"Corpus {self.name!r}: text {index} is {type(text).__name__} {text!r}, not a string")
            if not text.strip():
                raise CorpusError(
                    f"Corpus {self.name!r}: text {index} is empty or whitespace only, so it has no tokens to "
                    f"train on; remove it (load_corpus drops such texts from files)"
                )

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def sha256(self) -> str:
        """Hash of the texts in order (identifies the data a run saw)."""
        digest = hashlib.sha256()
        for text in self.texts:
            digest.update(text.encode("utf-8"))
            digest.update(b"\x00")
        return digest.hexdigest()

    def summary(self) -> dict:
        return {"name": self.name, "source": self.source, "n_texts": len(self.texts), "sha256": self.sha256}


def bundled_path(name: str) -> Path:
    """Path of a bundled corpus file."""
    if name not in BUNDLED:
        raise CorpusError(f"No bundled corpus {name!r}; bundled corpora: {', '.join(sorted(BUNDLED))}")
    return Path(str(resources.files("rmu_lens.data") / "corpora" / f"{name}.jsonl"))


def _text_value(value: Any, where: str, field: str) -> str:
    """A record's text, or a CorpusError: None or a non-string is a broken row, not the text "None"."""
    if not isinstance(value, str):
        raise CorpusError(
            f"{where}: field {field!r} is {'null' if value is None else type(value).__name__ + ' ' + repr(value)[:40]}, "
            f"not a string; fix or remove the row"
        )
    return value


def _not_utf8(path: Path, error: UnicodeDecodeError) -> CorpusError:
    return CorpusError(not_utf8_message(path, error))


def _read_jsonl(path: Path, field: str) -> list[tuple[str, str]]:
    texts = []
    for number, record in jsonl_records(path, CorpusError):
        if not isinstance(record, dict) or field not in record:
            keys = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise CorpusError(
                f"{path}:{number}: no field {field!r} (found {keys}); pass the text field's name "
                f"(text_field=)"
            )
        texts.append((f"{path}:{number}", _text_value(record[field], f"{path}:{number}", field)))
    return texts


def _read_txt(path: Path) -> list[tuple[str, str]]:
    """Documents separated by blank lines; a file of several lines without one is refused.

    Without a blank line the whole file would be one text, truncated to the first ``max_length``
    tokens: almost never what was meant, so the error says how to split it.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise _not_utf8(path, error) from error
    documents, current, first_line = [], [], 0
    for number, line in enumerate(lines, start=1):
        if line.strip():
            if not current:
                first_line = number
            current.append(line.rstrip())
        elif current:
            documents.append((f"{path}:{first_line}", "\n".join(current)))
            current = []
    if current:
        documents.append((f"{path}:{first_line}", "\n".join(current)))
    if len(documents) == 1 and len(documents[0][1].splitlines()) > 1:
        raise CorpusError(
            f"{path}: {len(documents[0][1].splitlines())} lines and no blank line between them, so the file "
            f"would be one text. In a .txt corpus documents are separated by blank lines: add a blank line "
            f"between documents (for one text per line, separate the lines with blank lines or write a .jsonl file "
            f"with one {{\"text\": ...}} object per line)"
        )
    return documents


def _read_parquet(path: Path, field: str) -> list[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError as error:
        raise CorpusError(f"Reading {path} needs pyarrow: pip install pyarrow") from error
    table = pq.read_table(path)
    if field not in table.column_names:
        raise CorpusError(f"{path}: no column {field!r} (columns: {table.column_names}); pass text_field=")
    return [
        (f"{path}: row {number}", _text_value(value, f"{path}: row {number}", field))
        for number, value in enumerate(table.column(field).to_pylist(), start=1)
    ]


def _read_hf_dataset(spec: str, field: str) -> list[tuple[str, str]]:
    """``NAME[:CONFIG[:SPLIT]]`` from the HF hub (split defaults to train)."""
    name, config, split = (spec.split(":") + [None, None])[:3]
    try:
        import datasets

        dataset = datasets.load_dataset(name, config, split=split or "train")
    except Exception as error:  # noqa: BLE001 - the datasets library raises many kinds when offline
        raise CorpusError(
            f"Could not load the dataset {spec!r}: it is not a local file and the HF hub could not "
            f"provide it (no network?). Save it as .jsonl/.parquet on a machine with network and pass "
            f"the file, or use a bundled corpus ({', '.join(BUNDLED_PREFIX + n for n in BUNDLED)}). "
            f"Cause: {error}"
        ) from error
    if field not in dataset.column_names:
        raise CorpusError(f"Dataset {spec!r} has no column {field!r} (columns: {dataset.column_names})")
    return [(f"{spec} row {number}", _text_value(value, f"{spec} row {number}", field))
            for number, value in enumerate(dataset[field], start=1)]


def load_corpus(
    source: str | Path,
    *,
    text_field: str = "text",
    min_chars: int = 0,
    max_chars: int | None = None,
    name: str | None = None,
) -> Corpus:
    """Load texts from ``bundled:NAME``, a .jsonl/.txt/.parquet file, or an HF dataset ``NAME[:CONFIG[:SPLIT]]``.

    Texts of ``min_chars`` characters or fewer are dropped (the official code keeps ``len > 50``);
    texts longer than ``max_chars`` are dropped too. Empty and whitespace-only texts hold no tokens
    to train on: they are dropped with a warning that counts them and names the first.
    """
    source = str(source)
    if source.startswith(BUNDLED_PREFIX):
        bundled = source[len(BUNDLED_PREFIX):]
        path = bundled_path(bundled)
        texts, name = _read_jsonl(path, "text"), name or bundled
    else:
        path = Path(source).expanduser()
        suffix = path.suffix.lower()
        if path.is_file():
            if suffix == ".jsonl":
                texts = _read_jsonl(path, text_field)
            elif suffix == ".parquet":
                texts = _read_parquet(path, text_field)
            elif suffix in (".txt", ".md"):
                texts = _read_txt(path)
            else:
                raise CorpusError(f"{path}: unsupported corpus format {suffix!r}; use .jsonl, .txt or .parquet")
        elif suffix in (".jsonl", ".txt", ".parquet", ".md") or path.parent != Path("."):
            raise CorpusError(f"Corpus file not found: {path}")
        else:
            texts = _read_hf_dataset(source, text_field)
        name = name or path.stem
    blank = [where for where, text in texts if not text.strip()]
    if blank:
        warnings.warn(
            f"Corpus {source}: dropped {len(blank)} empty or whitespace-only text(s) (first at {blank[0]})",
            stacklevel=2,
        )
    kept = [t for _, t in texts if t.strip() and len(t) > min_chars and (max_chars is None or len(t) <= max_chars)]
    if not kept:
        raise CorpusError(
            f"Corpus {source} has no texts left ({len(texts)} read, {len(blank)} of them blank, "
            f"min_chars={min_chars}, max_chars={max_chars})"
        )
    return Corpus(name=name, texts=kept, source=source)


def batch_texts(texts: list[str], batch_size: int) -> list[list[str]]:
    """Consecutive chunks of ``batch_size`` texts in order; the last may be shorter (as officially)."""
    return [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
