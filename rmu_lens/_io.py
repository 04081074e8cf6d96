"""Atomic, durable file writes: a reader never sees a half-written file, a crash leaves the old one.

Staging files and directories get a per-process name (``.NAME.<pid>.<random>``) beside their
target, are fsynced, then renamed over it; the parent directory is fsynced after the rename so
the rename itself survives a power cut. Files are created with the permissions of any ordinary
file (``0o666`` / ``0o777`` minus the umask), not the private ``0o600`` of ``tempfile``: outputs
of one run are all readable alike, and a user who wants them private sets the umask
(docs/robustness.md).
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


def staging_name(target: Path, separator: str = ".") -> Path:
    """A fresh sibling name for staging ``target``: ``.NAME<sep><pid>.<random>`` (hidden, per process)."""
    return target.parent / f".{target.name}{separator}{os.getpid()}.{secrets.token_hex(4)}"


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a written file's data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(path: str | os.PathLike) -> None:
    """Flush a directory's entries (creations, renames) to the disk; a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.EBADF):  # file systems without directory fsync
            raise
    finally:
        os.close(fd)


def fsync_tree(path: str | os.PathLike) -> None:
    """fsync every file and directory under ``path`` (a staged directory, before it is renamed in)."""
    for root, _, files in os.walk(path):
        for name in files:
            fsync_file(os.path.join(root, name))
        fsync_directory(root)


def _ordinary_modes(directory: Path) -> None:
    """Give every file in a staged tree an ordinary file's mode (libraries such as safetensors write 0o600)."""
    file_mode = ordinary_file_mode()
    for root, _, files in os.walk(directory):
        for name in files:
            os.chmod(os.path.join(root, name), file_mode)


def replace_durably(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """``os.replace`` then fsync the parent directory, so the rename survives a crash."""
    os.replace(source, target)
    fsync_directory(Path(target).parent)


def ordinary_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 minus the process umask."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:  # Linux: read without changing it
            umask = next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def _staging_path(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return staging_name(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a fsynced temporary sibling and a rename."""
    path = Path(path)
    staging = _staging_path(path)
    try:
        with open(staging, "x", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        replace_durably(staging, path)
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
        staging.chmod(ordinary_file_mode())  # safetensors creates its files private (0o600)
        fsync_file(staging)
        replace_durably(staging, path)
    finally:
        staging.unlink(missing_ok=True)
    return path


def check_output_file(path: str | os.PathLike, what: str = "out") -> Path:
    """Refuse an output file path that is a directory or cannot be created, before any work is done."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(21, f"{what}={path} is a directory: give a file path, e.g. {path / 'results.json'}", str(path))
    base = path.absolute().parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise NotADirectoryError(20, f"{what}={path}: {base} is a file, so {path} cannot be created", str(base))
    if not os.access(base, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise PermissionError(13, f"{what}={path} cannot be written by this user; choose a writable path", str(path))
    return path


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a safetensors file onto the CPU."""
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu")


@contextmanager
def atomic_directory(target: str | os.PathLike, keep_existing: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield an empty staging directory ``.NAME-<pid>.<random>`` beside ``target``; on success it replaces ``target``.

    An exception leaves ``target`` as it was and removes the staging directory. When
    ``keep_existing(target)`` is true at the end (another process finished the same work first),
    the existing ``target`` is kept and the staged copy discarded.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_name(target, separator="-")
    staging.mkdir()
    try:
        yield staging
        _ordinary_modes(staging)
        fsync_tree(staging)
        if target.exists():
            if keep_existing is not None and keep_existing(target):
                return
            shutil.rmtree(target)
        replace_durably(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_format_json(path: str | os.PathLike, expected: str, error: type[Exception], what: str, hint: str) -> dict[str, Any]:
    """Read a JSON file that an rmu_lens ``save`` wrote, checking its ``format`` tag.

    Any problem raises ``error`` naming the file; ``what`` says what was expected ("an rmu_lens
    evaluation"), ``hint`` how to make a valid file ("pass a file written by EvalResult.save").
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


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


class DirectoryLock:
    """An exclusive lock on a directory, held by one live process: ``DIR/.lock`` holding its PID.

    The lock is an ``fcntl.flock`` on that file, which the kernel releases when the process dies
    (even by kill -9), so a lock file left by a dead process is simply taken over. The PID written
    inside names the holder in the error a second process gets. POSIX only; elsewhere the PID file
    alone is used (a lock whose PID is not alive is taken over).
    """

    NAME = ".lock"

    def __init__(self, directory: str | os.PathLike) -> None:
        self.path = Path(directory) / self.NAME
        self._handle: Any = None

    def acquire(self, on_held: Callable[[int | None], Exception]) -> None:
        """Take the lock or raise ``on_held(pid of the holder)``."""
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            import fcntl
        except ImportError:  # no flock: trust a live PID in the file
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip()
                handle.close()
                raise on_held(int(holder) if holder.isdigit() else None) from None
        else:
            handle.seek(0)
            holder = handle.read().strip()
            if holder.isdigit() and int(holder) != os.getpid() and pid_alive(int(holder)):
                handle.close()
                raise on_held(int(holder))
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    @property
    def held(self) -> bool:
        return self._handle is not None

    def release(self) -> None:
        """Give the lock up (the file stays: removing it would race with a process about to lock it)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
