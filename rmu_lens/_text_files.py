"""Reading text files users give (corpora, question sets): one JSON-lines reader, one not-UTF-8 message.

Kept free of torch so the command line's light paths can import it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def not_utf8_message(path: Path, error: UnicodeDecodeError) -> str:
    """One line naming a file that is not UTF-8, where its first bad byte is, and how to re-save it."""
    return (
        f"{path}: not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset {error.start}); "
        f"re-save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 IN > OUT` for a Latin-1 file"
    )


def jsonl_records(path: Path, error: type[Exception], hint: str = "") -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) of each non-blank line; bad JSON or non-UTF-8 text raise ``error`` naming path:line."""
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as bad:
                    raise error(f"{path}:{number}: not valid JSON ({bad.msg}){hint}") from bad
                yield number, record
    except UnicodeDecodeError as bad:
        raise error(not_utf8_message(path, bad)) from bad
