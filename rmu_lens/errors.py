"""The one base class of rmu_lens's own errors.

Every error rmu_lens raises on purpose subclasses :class:`RMULensError` and keeps a builtin base
(``ValueError``, ``FileNotFoundError``, ...), so ``except RMULensError`` catches all of them while
code written against the builtin types keeps working. The command line maps each kind to one
line and an exit code (docs/robustness.md).
"""

from __future__ import annotations


class RMULensError(Exception):
    """Base class of every error rmu_lens raises on purpose (bad input, a refused run, a failed run)."""


class OutputPathError(RMULensError, ValueError):
    """An output path that cannot be used: a file where a directory is needed, a user's folder, a directory as a file."""


class RunDirectoryError(RMULensError, ValueError):
    """A run directory that cannot be resumed as asked: what was found, and what to do."""


class RunLockedError(RMULensError, RuntimeError):
    """Another live process holds the run directory's lock."""
