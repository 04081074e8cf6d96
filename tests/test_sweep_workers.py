"""Sweep workers as separate processes on one journal file: a killed worker's sweep resumes with every
trial done once, and two workers share a study without running any trial twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parent.parent


def worker(out: Path, n_trials: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "tests.sweep_child", str(out), str(n_trials), *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def load(out: Path) -> optuna.Study:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "study.journal")))
    return optuna.load_study(study_name="rmu-sweep", storage=storage)


def finish(process: subprocess.Popen, limit: float = 600) -> str:
    output, _ = process.communicate(timeout=limit)
    assert process.returncode == 0, output
    return output


def test_a_killed_sweep_resumes_with_every_trial_done_once(tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    # Trials have 4 steps: step 7 of the process is inside trial 1, after trial 0 completed.
    process = worker(out, 4, "--hang-at-step", "7")
    deadline = time.monotonic() + 600
    while not (out / "hanging").exists():
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "the worker never reached the step it hangs at"
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    study = load(out)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.RUNNING]
    completed_before = {t.number: t.datetime_complete for t in study.trials if t.state == TrialState.COMPLETE}
    killed_params = study.trials[1].params

    finish(worker(out, 4))
    trials = load(out).trials
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == 4 and states.count(TrialState.FAIL) == 1
    assert trials[1].state == TrialState.FAIL and trials[1].user_attrs["failed_because"] == "its worker process died"
    retry = [t for t in trials if t.user_attrs.get("retry_of") == 1]
    assert len(retry) == 1 and retry[0].params == killed_params and retry[0].state == TrialState.COMPLETE
    assert {t.number: t.datetime_complete for t in trials if t.number in completed_before} == completed_before
    assert len(trials) == 5  # 4 complete (trial 0 not redone) + the killed one


def test_two_workers_on_one_journal_run_each_trial_once(tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    workers = [worker(out, 6), worker(out, 6)]
    outputs = [finish(w) for w in workers]
    trials = load(out).trials
    assert [t.number for t in trials] == list(range(6))
    assert all(t.state == TrialState.COMPLETE for t in trials), [t.state for t in trials]
    pids = {t.user_attrs["worker"]["pid"] for t in trials}
    assert pids <= {w.pid for w in workers}, outputs
    assert (out / "trials.csv").read_text().count("\n") == 7  # header + 6 trials, written by the last worker
