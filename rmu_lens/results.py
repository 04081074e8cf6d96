"""One protocol for every result type: ``to_dict`` / ``from_dict`` / ``save`` / ``load`` / ``figures``.

:class:`Result` is the protocol (collapse, probes, damage, the whole analysis, audits, the layer
study all follow it). :class:`JSONResult` is the shared implementation of the file half: a class
sets ``FORMAT`` (the ``format`` tag its ``to_dict`` writes) and ``WHAT`` (how messages name it),
writes ``to_dict`` / ``from_dict`` / ``figures``, and inherits ``save`` / ``load``:

* ``save`` writes ``to_dict()`` as standard JSON, atomically — NaN and infinities become
  ``{"nan": null}`` / ``{"inf": ±1}`` (``json.dumps`` would write bare ``NaN``, which is not JSON);
* ``load`` reads it back, turns those tags into floats again, checks the format tag and calls
  ``from_dict``; any problem is one error naming the file.

A class with ``FILE_NAME`` set saves into a directory (``path/FILE_NAME``) and loads from the
directory or the file itself.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from rmu_lens.errors import RMULensError


class ResultFormatError(RMULensError, ValueError):
    """A file or dict is not the result it is read as: the message names it, the format found and the one expected."""


class ResultNotFoundError(RMULensError, FileNotFoundError):
    """A result file that does not exist."""


@runtime_checkable
class Result(Protocol):
    """What every result type offers: a JSON-ready dict both ways, files both ways, and its figures."""

    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any: ...

    def save(self, path: str | os.PathLike) -> Path: ...

    @classmethod
    def load(cls, path: str | os.PathLike) -> Any: ...

    def figures(self) -> dict[str, Any]:
        """Name -> matplotlib Figure (built without pyplot); empty when there is nothing to draw."""
        ...


def finite_json(value: Any) -> Any:
    """NaN and infinities as ``{"nan": None}`` / ``{"inf": ±1}``, so the JSON is standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return {"nan": None} if math.isnan(value) else {"inf": 1 if value > 0 else -1}
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def from_finite_json(value: Any) -> Any:
    """The inverse of :func:`finite_json`."""
    if isinstance(value, dict):
        if set(value) == {"nan"}:
            return float("nan")
        if set(value) == {"inf"}:
            return math.inf * value["inf"]
        return {k: from_finite_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_finite_json(v) for v in value]
    return value


class JSONResult:
    """``save`` / ``load`` / ``check_format`` for a result whose ``to_dict`` carries ``"format": FORMAT``."""

    FORMAT: ClassVar[str]
    WHAT: ClassVar[str] = "an rmu_lens result"
    FILE_NAME: ClassVar[str | None] = None
    FORMAT_ERROR: ClassVar[type[Exception]] = ResultFormatError
    MISSING_ERROR: ClassVar[type[Exception]] = ResultNotFoundError

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - every subclass writes its own
        raise NotImplementedError

    def figures(self) -> dict[str, Any]:
        """Name -> matplotlib Figure; none by default."""
        return {}

    def captions(self) -> dict[str, str]:
        """Name -> one-sentence caption for (some of) :meth:`figures`, for the report."""
        return {}

    @classmethod
    def check_format(cls, data: Any, source: str | os.PathLike | None = None) -> None:
        """Raise ``FORMAT_ERROR`` unless ``data`` is a dict tagged ``FORMAT``."""
        if not isinstance(data, Mapping) or data.get("format") != cls.FORMAT:
            found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            where = f"{source}: not" if source is not None else "Not"
            raise cls.FORMAT_ERROR(f"{where} {cls.WHAT} (format {found!r}, expected {cls.FORMAT!r}); "
                                   f"pass what {cls.__name__}.save wrote")

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as standard JSON, atomically (into ``path/FILE_NAME`` for directory results)."""
        from rmu_lens._io import atomic_write_json

        path = Path(path)
        if self.FILE_NAME is None:
            return atomic_write_json(path, finite_json(self.to_dict()))
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(f"{path} exists and is not a directory: {type(self).__name__}.save takes a directory")
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path / self.FILE_NAME, finite_json(self.to_dict()))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Any:
        """Read what :meth:`save` wrote (a directory result: the directory or its file)."""
        path = Path(path)
        file = path / cls.FILE_NAME if cls.FILE_NAME is not None and path.is_dir() else path
        if not file.is_file():
            hint = f" holds no {cls.FILE_NAME}" if cls.FILE_NAME is not None else ": file not found"
            raise cls.MISSING_ERROR(f"{path}{hint}: write one with {cls.__name__}.save")
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as bad:
            raise cls.FORMAT_ERROR(f"{file}: not valid JSON ({bad.msg}); pass what {cls.__name__}.save wrote") from bad
        except UnicodeDecodeError as bad:
            raise cls.FORMAT_ERROR(f"{file}: not UTF-8 text; pass what {cls.__name__}.save wrote") from bad
        cls.check_format(data, file)
        return cls.from_dict(from_finite_json(data))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:  # pragma: no cover - every subclass writes its own
        raise NotImplementedError
