"""sweep(): RMU settings searched by an Optuna multi-objective study on one loaded model.

    space ─▶ trial config ─▶ TrialRunner (train, restore) ─▶ evaluate forget / distant / adjacent
          ─▶ (forget_excess ↓, retain_acc ↑) ─▶ study (journal file or RDB) ─▶ outputs in OUT/

Workers claim trials until the study holds ``n_trials`` COMPLETE, PRUNED or RUNNING trials, so a
resumed sweep, or several processes on one study, run ``n_trials`` trials in all (docs/sweep.md).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from rmu_lens.rmu.config import RMUConfig
from rmu_lens.sweep.objectives import DEFAULT_QUESTIONS, DIRECTIONS, OBJECTIVES, chance_level, forget_excess, pareto_front
from rmu_lens.sweep.pruning import PrunedBySignal, PruneRule, SignalWatcher
from rmu_lens.sweep.reuse import TrialRunner
from rmu_lens.sweep.space import SearchSpace
from rmu_lens.sweep.storage import (
    JOURNAL_NAME, SweepStorageError, claim_lock, fail_dead_trials, is_journal, open_storage, worker_identity,
)

FORMAT = "rmu_lens.sweep/1"
QUESTION_ROLES = ("forget", "retain", "adjacent")
CLAIMED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


def _load(role: str, value: Any) -> list[Any]:
    from rmu_lens.eval import load_questions

    if isinstance(value, (str, Path)):
        return list(load_questions(value))
    items = list(value)
    if items and all(isinstance(v, (str, Path)) for v in items):
        return [q for v in items for q in load_questions(v)]
    if not items:
        raise ValueError(f"questions[{role!r}] is empty: give a question set (a list of Questions or a source)")
    return items


def question_sets(questions: Mapping[str, Any]) -> dict[str, list[Any]]:
    """``{"forget": ..., "retain": ..., "adjacent": ...}`` (adjacent optional) as lists of Questions."""
    if not isinstance(questions, Mapping):
        raise ValueError("questions must be a mapping {'forget': ..., 'retain': ..., 'adjacent': ...} "
                         "(retain: a distant set; adjacent is optional)")
    unknown = sorted(set(questions) - set(QUESTION_ROLES))
    missing = [r for r in ("forget", "retain") if questions.get(r) is None]
    if unknown or missing:
        raise ValueError(f"questions: unknown roles {unknown}, missing {missing}; give forget and retain (distant) "
                         f"question sets and optionally adjacent")
    return {role: _load(role, value) for role, value in questions.items() if value is not None}


class AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler for the sweep's ask/tell loop: Optuna's stops the study when the grid is done, which
    only works inside ``study.optimize``; here the claim loop bounds the trials instead."""

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: TrialState, values: Any) -> None:
        pass


@dataclass
class SweepResult:
    """A sweep's trials, base point and Pareto front, read back from its study."""

    study: optuna.Study
    base: dict[str, float | None]
    chance: float
    out: Path | None = None
    paths: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def load(cls, out: str | os.PathLike | None = None, *, storage: str | None = None,
             study_name: str = "rmu-sweep") -> SweepResult:
        """A finished (or running) sweep read back from ``out`` (its ``study.journal``) or ``storage``,
        to re-plot or re-tabulate it without a model: ``SweepResult.load("sweeps/s1").figure(color_by="lr")``."""
        out = Path(out) if out is not None else None
        if storage is None and (out is None or not (out / JOURNAL_NAME).is_file()):
            raise SweepStorageError(f"{out} holds no sweep ({JOURNAL_NAME} missing): give the sweep's --out "
                                    f"directory, or storage= for an RDB URL")
        backend, _ = open_storage(storage, out)
        try:
            study = optuna.load_study(study_name=study_name, storage=backend)
        except KeyError as error:
            raise SweepStorageError(f"no study named {study_name!r} in {storage or out}: pass study_name=") from error
        meta = study.user_attrs.get("sweep")
        if meta is None:
            raise SweepStorageError(f"the study {study_name!r} in {storage or out} was not written by rmu_lens.sweep")
        return cls(study, dict(study.user_attrs.get("base", {})), float(meta["chance"]), out)

    def rows(self) -> list[dict[str, Any]]:
        """Every trial as a flat record (number, state, parameters, accuracies, signals)."""
        return [trial_row(t) for t in self.study.get_trials(deepcopy=False)]

    def complete(self) -> list[dict[str, Any]]:
        return [r for r in self.rows() if r["state"] == "COMPLETE"]

    def front(self) -> list[dict[str, Any]]:
        """COMPLETE trials no other complete trial dominates on (forget_excess ↓, retain_acc ↑)."""
        done = self.complete()
        return [done[i] for i in pareto_front([[r[k] for k in OBJECTIVES] for r in done], DIRECTIONS)]

    def figure(self, color_by: str | None = None) -> Any:
        from rmu_lens.sweep.outputs import front_figure

        return front_figure(self, color_by)

    def html(self, color_by: str | None = None) -> str:
        from rmu_lens.sweep.outputs import sweep_html

        return sweep_html(self, color_by)

    def table(self) -> str:
        from rmu_lens.sweep.outputs import front_table

        return front_table(self)

    def _repr_html_(self) -> str:
        return self.html()


def trial_row(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    attrs = trial.user_attrs
    row: dict[str, Any] = {"number": trial.number, "state": trial.state.name}
    values = trial.values or [math.nan, math.nan]
    row.update(dict(zip(OBJECTIVES, values)))
    for key in ("forget_acc", "retain_acc", "adjacent_acc", "steering_coeff", "final_forget_norm", "final_retain_cos",
                "steps", "seconds", "pruned_at", "pruned_because", "retry_of"):
        row.setdefault(key, attrs.get(key))
    row["params"] = dict(trial.params)
    row["config"] = attrs.get("config")
    row["checkpoints"] = attrs.get("checkpoints", [])
    return row


def _check_space(space: SearchSpace, template: RMUConfig) -> None:
    """Configs at the low and high end of every dimension must be valid RMUConfigs (errors name the key)."""
    for end in (0, -1):
        values = {}
        for name, dim in space.dimensions.items():
            if dim.kind == "fixed":
                values[name] = dim.value
            elif dim.kind == "categorical":
                values[name] = dim.choices[end]
            else:
                values[name] = dim.low if end == 0 else dim.high
        try:
            space.config(values, template)
        except ValueError as error:
            raise type(error)(f"search space {values} gives an invalid config: {error}") from error


def _matching_study(study: optuna.Study, meta: dict[str, Any]) -> None:
    stored = study.user_attrs.get("sweep")
    if stored is None:
        study.set_user_attr("sweep", meta)
        return
    for key in ("space", "template", "objectives"):
        if stored.get(key) != meta.get(key):
            raise SweepStorageError(
                f"study {study.study_name!r} in this storage was started with another {key} ({stored.get(key)!r}); "
                f"resume with the same settings, or give another --out / study name"
            )


def _accuracy(model: Any, questions: Sequence[Any] | None, mode: str, batch_size: int) -> float | None:
    from rmu_lens.eval import evaluate

    return evaluate(model, questions, mode=mode, batch_size=batch_size, progress=False).accuracy if questions else None


SWEEP_MARKERS = ("study.journal", "study.claim.lock", "trials.json")
"""Files only a sweep writes: a non-empty ``out`` without one of them is a user's folder and is refused."""


def sweep(
    model: Any,
    forget: Any,
    retain: Any,
    questions: Mapping[str, Any],
    space: Mapping[str, Any] | SearchSpace | str | Path | None = None,
    n_trials: int = 24,
    out: str | Path | None = None,
    storage: str | None = None,
    *,
    config: RMUConfig | None = None,
    study_name: str = "rmu-sweep",
    sampler: optuna.samplers.BaseSampler | None = None,
    seed: int = 0,
    prune: PruneRule | None = None,
    mode: str = "cloze",
    batch_size: int = 16,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
    trainer_callbacks: Sequence[Any] = (),
    color_by: str | None = None,
    share_prefix: bool = True,
    progress: bool = True,
) -> SweepResult:
    """Search RMU settings for the forget/retain trade-off; returns the trials and their Pareto front.

    ``model`` (a bridge from :func:`rmu_lens.load_model`) is trained by every trial and restored
    bit-exactly after each. ``questions``: ``{"forget": ..., "retain": ..., "adjacent": ...}``
    (retain is a distant set; adjacent is recorded, not optimized). ``space``: a dict, a YAML/JSON
    file or None (the default space, docs/sweep.md); ``config``: the template every trial starts
    from (default the ``demo`` profile). ``out``: the sweep directory (study journal and outputs);
    ``storage``: a journal file or an RDB URL shared by several processes. ``callbacks`` are Optuna
    callbacks called after each trial (:class:`rmu_lens.sweep.LiveFront` draws the front as it grows).
    """
    if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
        raise ValueError(f"n_trials={n_trials!r}: give a positive number of trials")
    space = SearchSpace.parse(space)
    space.check_model(model.cfg.n_layers)
    template = config or RMUConfig.profile("demo")
    _check_space(space, template)
    sets = question_sets(questions)
    prune = prune or PruneRule()
    out = Path(out) if out is not None else None
    if out is not None:
        if out.is_dir() and any(out.iterdir()) and not any((out / name).exists() for name in SWEEP_MARKERS):
            raise FileExistsError(f"out={out} is not empty and holds no sweep (no {' or '.join(SWEEP_MARKERS)}): "
                                  f"choose a new directory, or the directory of the sweep to resume")
        out.mkdir(parents=True, exist_ok=True)
    backend, where = open_storage(storage, out)
    grid = space.grid()
    if grid and sampler is None:
        size = math.prod(len(v) for v in grid.values())
        if n_trials > size:
            raise ValueError(f"n_trials={n_trials}, but the space is a grid of {size} points (every searched setting "
                             f"has choices): give {size} trials or fewer, or a range for some setting")
        sampler = AskTellGridSampler(grid, seed=seed)
    # TPE is re-seeded per trial with seed + the trial's number (see claim()): a fixed-seed sampler would
    # suggest the same settings again after a resume, and in every worker that shares the study.
    reseed = sampler is None
    sampler = sampler or optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(storage=backend, study_name=study_name, directions=list(DIRECTIONS),
                                sampler=sampler, load_if_exists=True)
    with warnings.catch_warnings():  # experimental in Optuna, and what optuna-dashboard labels the axes with
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(OBJECTIVES))
    chance = chance_level(sets["forget"])
    _matching_study(study, {"format": FORMAT, "space": space.to_dict(), "template": template.to_dict(),
                            "objectives": dict(zip(OBJECTIVES, DIRECTIONS)), "chance": chance,
                            "prune": prune.to_dict(), "mode": mode})
    base = study.user_attrs.get("base")
    if base is None:
        base = {f"{role}_acc": _accuracy(model, sets.get(role), mode, batch_size) for role in QUESTION_ROLES}
        study.set_user_attr("base", base)
    runner = TrialRunner(model, forget, retain, share_prefix=share_prefix)
    locked = where is not None and is_journal(where)

    def claim() -> optuna.Trial | None:
        with claim_lock(out, where):
            fail_dead_trials(study)
            claimed = len(study.get_trials(deepcopy=False, states=CLAIMED))
            if claimed >= n_trials:
                return None
            with warnings.catch_warnings():  # the sweep runs the heartbeat itself (heartbeat() below)
                warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
                if reseed:
                    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.get_trials(deepcopy=False)))
                trial = study.ask()
            trial.set_user_attr("worker", worker_identity())
            return trial

    result = SweepResult(study, base, chance, out)
    try:
        while (trial := claim()) is not None:
            if not locked:  # shared RDB: the lowest-numbered claims win, later ones step aside
                earlier = [t for t in study.get_trials(deepcopy=False, states=CLAIMED) if t.number < trial.number]
                if len(earlier) >= n_trials:
                    trial.set_user_attr("failed_because", "surplus: the study already had n_trials claimed")
                    study.tell(trial, state=TrialState.FAIL)
                    break
            with heartbeat(study, trial):
                _run_trial(study, trial, runner, space, template, sets, chance, prune, mode, batch_size,
                           trainer_callbacks, progress)
            frozen = study.get_trials(deepcopy=False)[trial.number]
            for callback in callbacks:
                callback(study, frozen)
    finally:
        runner.restore()
        if out is not None and result.rows():
            from rmu_lens.sweep.outputs import write_outputs

            with claim_lock(out, where):  # workers of one study take turns rewriting the outputs
                result.paths = write_outputs(result, out, color_by)
    return result


def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Any:
    """Optuna's heartbeat thread for a trial on an RDB storage with a heartbeat (a no-op elsewhere), as
    ``study.optimize`` runs one; ask/tell loops must start it themselves."""
    from optuna.storages._heartbeat import get_heartbeat_thread

    return get_heartbeat_thread(trial._trial_id, study._storage)


def _run_trial(study, trial, runner, space, template, sets, chance, prune, mode, batch_size, trainer_callbacks, progress) -> None:
    started = time.perf_counter()
    try:
        config = space.suggest(trial, template)
    except ValueError as error:
        trial.set_user_attr("failed_because", " ".join(str(error).split()))
        study.tell(trial, state=TrialState.FAIL)
        raise
    trial.set_user_attr("config", config.to_dict())
    watcher = SignalWatcher(prune)
    try:
        with runner.trained(config, [watcher, *trainer_callbacks], progress=progress) as run:
            last = run.history[-1] if run.history else {}
            accuracies = {f"{role}_acc": _accuracy(runner.model, sets.get(role), mode, batch_size) for role in QUESTION_ROLES}
    except PrunedBySignal as pruned:
        _finish_attrs(trial, watcher, started, pruned_at=pruned.step, pruned_because=pruned.reason)
        study.tell(trial, state=TrialState.PRUNED)
        return
    except FloatingPointError as error:  # NonFiniteLossError: the settings diverge
        _finish_attrs(trial, watcher, started, pruned_because=f"diverged: {' '.join(str(error).split())[:200]}")
        study.tell(trial, state=TrialState.PRUNED)
        return
    except BaseException as error:
        interrupted = isinstance(error, KeyboardInterrupt)
        trial.set_user_attr("failed_because", "interrupted" if interrupted else " ".join(str(error).split())[:500])
        study.tell(trial, state=TrialState.FAIL)
        if interrupted:  # the next run of the sweep trains these settings again
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        raise
    for key, value in accuracies.items():
        trial.set_user_attr(key, value)
    coefficient = sum(run.steering_coeffs.values()) / len(run.steering_coeffs)
    trial.set_user_attr("steering_coeff", float(coefficient))
    trial.set_user_attr("final_forget_norm", _finite(last.get("forget_norm")))
    trial.set_user_attr("final_retain_cos", _finite(last.get("retain_cos")))
    trial.set_user_attr("steps", len(run.history))
    _finish_attrs(trial, watcher, started)
    study.tell(trial, [forget_excess(accuracies["forget_acc"], chance), accuracies["retain_acc"]])


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _finish_attrs(trial: optuna.Trial, watcher: SignalWatcher, started: float, **extra: Any) -> None:
    trial.set_user_attr("checkpoints", [{k: _finite(v) if isinstance(v, float) else v for k, v in c.items()}
                                        for c in watcher.checkpoints])
    trial.set_user_attr("seconds", round(time.perf_counter() - started, 2))
    for key, value in extra.items():
        trial.set_user_attr(key, value)
