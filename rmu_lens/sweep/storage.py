"""Where a study lives, and what happens to the trials of a process that died.

Default: an Optuna journal file (``OUT/study.journal``, :class:`optuna.storages.JournalStorage` over
``JournalFileBackend``), which several processes on one machine share safely and optuna-dashboard
opens unchanged (``optuna-dashboard OUT/study.journal``). ``storage="sqlite:///..."`` or any
SQLAlchemy URL gives an :class:`optuna.storages.RDBStorage` with Optuna's heartbeat, so processes on
several machines share one study; a path ending in ``.journal`` or ``.log`` is a journal file.

Dead processes. Every trial records its worker (host, pid, process start time) in a user attribute.
On start, and before each new trial, a worker marks FAIL each RUNNING trial whose worker is on this
host and no longer alive, and enqueues the same parameters again (``retry_of`` user attribute), so a
killed sweep resumes where it was. On an RDB storage Optuna's heartbeat does the same for trials of
other machines (``optuna.storages.fail_stale_trials`` after the grace period, with
``RetryHeartbeatStaleTrialCallback`` re-enqueueing them).
"""

from __future__ import annotations

import fcntl
import os
import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from rmu_lens.errors import RMULensError

JOURNAL_NAME = "study.journal"
HEARTBEAT_INTERVAL = 30
GRACE_PERIOD = 120


class SweepStorageError(RMULensError, ValueError):
    """A storage that cannot be opened, or a study in it that does not match the sweep."""


def is_journal(storage: str) -> bool:
    return "://" not in storage and Path(storage).suffix in (".journal", ".log")


def open_storage(storage: str | None, out: Path | None) -> tuple[Any, str | None]:
    """(Optuna storage, a description for users) — in memory when neither ``storage`` nor ``out`` is given."""
    if storage is None and out is None:
        return None, None
    if storage is None:
        storage = str(out / JOURNAL_NAME)
    if is_journal(storage):
        from optuna.storages.journal import JournalFileBackend

        path = Path(storage)
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path))), str(path)
    if "://" not in storage:
        raise SweepStorageError(f"storage {storage!r}: give a journal file (NAME.journal) or an RDB URL such as "
                                f"sqlite:///sweep.db or postgresql://user@host/db")
    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    try:
        with warnings.catch_warnings():  # heartbeat and its retry callback are marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            rdb = optuna.storages.RDBStorage(
                storage, heartbeat_interval=HEARTBEAT_INTERVAL, grace_period=GRACE_PERIOD,
                heartbeat_stale_trial_callback=retry(max_retry=3),
            )
    except ImportError as error:
        raise SweepStorageError(f"storage {storage!r} needs a database driver: {error}") from error
    return rdb, storage


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid from the original."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def worker_identity() -> dict[str, Any]:
    """This process, as recorded on each of its trials."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _start_time(os.getpid())}


def is_alive(worker: dict[str, Any]) -> bool | None:
    """Whether the worker process lives; None when it ran on another host (cannot tell)."""
    if worker.get("host") != socket.gethostname():
        return None
    pid = int(worker.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    start = _start_time(pid)
    return start is None or worker.get("start") in (None, start)


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL the RUNNING trials of dead local workers and enqueue their parameters again; returns their numbers."""
    with warnings.catch_warnings():  # stable in practice; Optuna still labels it experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # heartbeat storages only (RDB); a no-op elsewhere
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        if not worker or is_alive(worker) is not False:
            continue
        try:
            study._storage.set_trial_user_attr(trial._trial_id, "failed_because", "its worker process died")
            study.tell(trial.number, state=TrialState.FAIL)
        except (RuntimeError, ValueError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another worker got there first
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        failed.append(trial.number)
    return failed


@contextmanager
def claim_lock(out: Path | None, storage_path: str | None) -> Iterator[None]:
    """An exclusive file lock beside a journal storage, so local workers claim trials one at a time."""
    if storage_path is None or not is_journal(storage_path):
        yield
        return
    lock_path = Path(storage_path).with_suffix(".claim.lock")
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
