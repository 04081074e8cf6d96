"""Atomic file writes: a reader never sees a half-written file, a crash leaves the old one."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


def _staging_path(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    return Path(name)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary sibling and a rename."""
    path = Path(path)
    staging = _staging_path(path)
    try:
        staging.write_text(text, encoding="utf-8")
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
    return path


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def atomic_save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Save tensors as safetensors (contiguous CPU copies), atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    staging = _staging_path(path)
    try:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(staging), metadata=metadata)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
    return path


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a safetensors file onto the CPU."""
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu")


@contextmanager
def atomic_directory(target: str | os.PathLike, keep_existing: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield an empty staging directory beside ``target``; on success it replaces ``target``.

    An exception leaves ``target`` as it was and removes the staging directory. When
    ``keep_existing(target)`` is true at the end (another process finished the same work first),
    the existing ``target`` is kept and the staged copy discarded.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield staging
        staging.chmod(0o755)  # mkdtemp makes it private; the result is readable like any directory
        if target.exists():
            if keep_existing is not None and keep_existing(target):
                return
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_format_json(path: str | os.PathLike, expected: str, error: type[Exception], what: str, hint: str) -> dict[str, Any]:
    """Read a JSON file that an rmu_lens ``save`` wrote, checking its ``format`` tag.

    Any problem raises ``error`` naming the file; ``what`` says what was expected ("an rmu_lens
    evaluation"), ``hint`` how to make a valid file ("pass a file written by `rmu-lens eval --out`").
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as missing:
        raise error(f"File not found: {path}") from missing
    except json.JSONDecodeError as bad:
        raise error(f"{path}: not valid JSON ({bad.msg}); {hint}") from bad
    if not isinstance(data, dict) or data.get("format") != expected:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise error(f"{path}: not {what} (format {found!r}, expected {expected!r}); {hint}")
    return data
