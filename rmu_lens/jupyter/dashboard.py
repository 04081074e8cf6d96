"""The live training dashboard: a trainer callback that draws RMU's progress into ipywidgets.

    dashboard = TrainingDashboard()
    job = start_training(model, forget, retain, config, out="runs/x", dashboard=dashboard)
    dashboard          # shows: losses, norms at layer l vs c, cos(updated, frozen), progress, ETA, Stop
    run = job.result() # waits for the end (or the Stop button) and returns the RMURun

Widget updates travel kernel → browser while a cell runs, but browser → kernel events (a button
click) wait until the running cell ends. So the Stop button works when training runs in a
background thread (:func:`start_training`, ``%rmu_unlearn --background``); Stop asks the trainer to
end after the current step, and a run directory then keeps its checkpoint for ``resume=True``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from rmu_lens.jupyter.display import figure_png, format_number, html_status, html_table, html_title, new_figure
from rmu_lens.plots.text import plain

if TYPE_CHECKING:
    from rmu_lens.rmu.config import RMUConfig
    from rmu_lens.rmu.trainer import RMURun, RMUTrainer

PANELS = ("loss", "norm", "cos")


def history_series(history: Sequence[dict[str, Any]], topics: Sequence[str]) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """What each dashboard panel plots: ``{panel: {label: (steps, values)}}`` from step records.

    Forget metrics are split by topic (each topic sees only its own steps); retain metrics use
    every step. Cosines of the forget set exist only on ``metrics_every`` steps.
    """
    def series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
        kept = [r for r in records if r.get(key) is not None]
        return [int(r["step"]) for r in kept], [float(r[key]) for r in kept]

    panels: dict[str, dict[str, tuple[list[int], list[float]]]] = {name: {} for name in PANELS}
    for topic in topics:
        mine = [r for r in history if r.get("topic") == topic]
        panels["loss"][f"forget: {topic}"] = series(mine, "forget_loss")
        panels["norm"][f"forget: {topic}"] = series(mine, "forget_norm")
        panels["cos"][f"forget: {topic}"] = series(mine, "forget_cos")
    panels["loss"]["retain (×alpha)"] = series(history, "retain_loss")
    panels["norm"]["retain"] = series(history, "retain_norm")
    panels["cos"]["retain"] = series(history, "retain_cos")
    return panels


class TrainingDashboard:
    """Live view of an RMU run; pass it in ``callbacks=[...]`` (or to :func:`start_training`).

    Widgets (for tests and layouts): ``title``, ``progress`` (steps done), ``stats`` (speed, ETA,
    last losses), ``image`` (the three panels as PNG), ``stop_button``, ``status``; ``widget`` is
    the whole box. The figure is redrawn at most every ``refresh_seconds``, no more often than keeps
    drawing under ``max_draw_share`` of the time, and at the end (``refresh_seconds=0,
    max_draw_share=1`` redraws after every step).
    ``stoppable=False`` hides the Stop button (for training in the cell's own thread, where a click
    would only arrive after the cell ends; interrupt the kernel instead: the run checkpoints).
    """

    def __init__(
        self, *, refresh_seconds: float = 1.0, max_draw_share: float = 0.2, width: float = 11.0, height: float = 3.0,
        stoppable: bool = True,
    ) -> None:
        if refresh_seconds < 0:
            raise ValueError(f"refresh_seconds={refresh_seconds} must be >= 0")
        if not 0 < max_draw_share <= 1:
            raise ValueError(f"max_draw_share={max_draw_share} must be in (0, 1]")
        self.refresh_seconds = refresh_seconds
        self.max_draw_share = max_draw_share
        self.size = (width, height)
        self.trainer: RMUTrainer | None = None
        self.history: list[dict[str, Any]] = []
        self.topics: list[str] = []
        self.steering_coeffs: dict[str, float] = {}
        self.read_hook = ""
        self.n_steps = 0
        self.redraws = 0
        self._started = 0.0
        self._first_step = 0
        self._last_draw = 0.0
        self._draw_seconds = 0.0
        self._lock = threading.Lock()

        self.title = widgets.HTML(html_title("RMU", "waiting for training to start"))
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="steps", bar_style="info")
        self.stats = widgets.HTML("")
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self.stop_button = widgets.Button(
            description="Stop", icon="stop", button_style="danger", disabled=True,
            tooltip="End training after the current step; a run directory keeps its checkpoint",
        )
        if not stoppable:
            self.stop_button.layout.display = "none"
        self.stoppable = stoppable
        self.status = widgets.HTML("")
        self.stop_button.on_click(self._on_stop_clicked)
        self.widget = widgets.VBox(
            [self.title, widgets.HBox([self.progress, self.stop_button, self.status]), self.stats, self.image]
        )
        self.widget.add_class("rmu-lens-dashboard")

    # -- display ------------------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    # -- the callback protocol ------------------------------------------------------------------

    def on_train_start(self, trainer: RMUTrainer) -> None:
        """Remember the trainer (for Stop) and what the panels need: topics, c per topic, step count."""
        with self._lock:
            self.trainer = trainer
            self.history = list(trainer.history)
            self.topics = list(trainer.topics)
            self.steering_coeffs = dict(trainer.steering_coeffs)
            self.read_hook = trainer.config.read_hook
            self.n_steps = trainer.n_steps
            self._started = time.perf_counter()
            self._first_step = trainer.step
        coeffs = ", ".join(f"{t}: c = {format_number(c)}" for t, c in self.steering_coeffs.items())
        self.title.value = html_title("RMU", f"{self.read_hook} · {coeffs}")
        self.progress.max = max(1, self.n_steps)
        self.progress.value = trainer.step
        self.progress.bar_style = "info"
        self.stop_button.disabled = not self.stoppable
        self.status.value = "running"
        self.redraw()

    def on_step(self, record: dict[str, Any]) -> None:
        """Record the step; update progress and statistics; redraw when ``refresh_seconds`` have passed."""
        with self._lock:
            self.history.append(record)
        done = int(record["step"]) + 1
        self.progress.value = done
        self.stats.value = self._stats_html(record, done)
        # Drawing takes ~0.3 s on a slow CPU: space redraws so that they cost training at most
        # max_draw_share of the time (by default a fifth: wait 4x the last draw).
        pause = self._draw_seconds * (1 / self.max_draw_share - 1)
        if time.perf_counter() - self._last_draw >= max(self.refresh_seconds, pause):
            self.redraw()

    def on_train_end(self, run: RMURun) -> None:
        """Final redraw; show how the run ended and where it was saved."""
        self.stop_button.disabled = True
        self.redraw()
        where = f" · saved in {run.out}" if run.out else ""
        kept = " (checkpoint kept: resume with resume=True)" if run.status == "stopped" and run.out else ""
        self.status.value = html_status(run.status, kept)
        self.title.value = html_title("RMU", f"{run.status} after {len(run.history)} steps{where}")
        self.progress.bar_style = "success" if run.status == "finished" else "warning"

    def on_error(self, error: BaseException) -> None:
        """Show a training error (the exception itself is kept by the job that ran the training)."""
        self.stop_button.disabled = True
        self.progress.bar_style = "danger"
        self.status.value = html_status("failed", f": {type(error).__name__}: {error}")
        self.redraw()

    # -- controls -----------------------------------------------------------------------------

    def _on_stop_clicked(self, _button: Any = None) -> None:
        self.request_stop()

    def request_stop(self) -> None:
        """What the Stop button does: the trainer ends after the current step."""
        if self.trainer is None:
            return
        self.trainer.request_stop()
        self.stop_button.disabled = True
        self.status.value = "stopping after the current step…"

    # -- drawing ------------------------------------------------------------------------------

    def _stats_html(self, record: dict[str, Any], done: int) -> str:
        steps_here = done - self._first_step
        elapsed = time.perf_counter() - self._started
        per_step = elapsed / steps_here if steps_here > 0 else float("nan")
        remaining = max(0, self.n_steps - done)
        eta = per_step * remaining
        rows = [[
            f"{done}/{self.n_steps}", record.get("topic", ""), record.get("forget_loss"), record.get("retain_loss"),
            record.get("forget_norm"), record.get("retain_cos"), f"{per_step:.2f} s", _duration(eta),
        ]]
        return html_table(["step", "topic", "forget loss", "retain loss", "forget norm", "retain cos", "per step", "ETA"], rows)

    def figure(self) -> Any:
        """The three panels as a matplotlib Figure: losses, norms at the read hook vs c, cos(updated, frozen)."""
        with self._lock:
            history = list(self.history)
        figure, (loss_axes, norm_axes, cos_axes) = new_figure(*self.size, n_axes=3)
        panels = history_series(history, self.topics)
        for axes, name in zip((loss_axes, norm_axes, cos_axes), PANELS):
            for label, (steps, values) in panels[name].items():
                axes.plot(steps, values, label=plain(label), color="grey" if label.startswith("retain") else None)
        for topic in self.topics:
            if topic in self.steering_coeffs:
                norm_axes.axhline(self.steering_coeffs[topic], linestyle=":", color="black", linewidth=0.8)
        if any(values for _, values in panels["loss"].values()):
            loss_axes.set_yscale("log")
        loss_axes.set(title="loss", xlabel="step")
        norm_axes.set(title="mean token norm (dotted: c)", xlabel="step")
        cos_axes.set(title="cos(updated, frozen)", xlabel="step")
        for axes in (loss_axes, norm_axes, cos_axes):
            if axes.lines:
                axes.legend(fontsize="small")
        return figure

    def redraw(self) -> None:
        """Render the figure into the image widget now."""
        started = time.perf_counter()
        self.image.value = figure_png(self.figure())
        self.redraws += 1
        self._last_draw = time.perf_counter()
        # The first draw of a process also loads fonts (seconds): it says nothing about the next ones.
        self._draw_seconds = self._last_draw - started if self.redraws > 1 else 0.0


def _duration(seconds: float) -> str:
    if seconds != seconds:  # nan
        return "–"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


class TrainingJob:
    """RMU running in a background thread, so the notebook stays responsive (Stop button, other cells).

    ``result()`` waits and returns the :class:`~rmu_lens.rmu.trainer.RMURun` (or raises the
    training's error); ``stop()`` ends training after the current step. Do not use the model in
    other cells until the job is done: training edits it in place.
    """

    def __init__(self, trainer: RMUTrainer, run_dir: Any = None, dashboard: TrainingDashboard | None = None) -> None:
        self.trainer = trainer
        self.run_dir = run_dir
        self.dashboard = dashboard
        self.run: RMURun | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._train, name="rmu-lens-training", daemon=True)

    def start(self) -> TrainingJob:
        """Start the training thread (once); returns the job."""
        self._thread.start()
        return self

    def _train(self) -> None:
        try:
            self.run = self.trainer.train(self.run_dir, progress=False)
        except BaseException as error:  # noqa: BLE001 - kept and re-raised by result()
            self.error = error
            if self.dashboard is not None:
                self.dashboard.on_error(error)

    @property
    def done(self) -> bool:
        """True once training has ended (finished, stopped or failed)."""
        return not self._thread.is_alive() and (self.run is not None or self.error is not None)

    @property
    def status(self) -> str:
        """``running``, then the run's status (``finished``/``stopped``) or ``failed``."""
        if self.error is not None:
            return "failed"
        if self.run is not None:
            return self.run.status
        return "running" if self._thread.is_alive() else "not started"

    def stop(self) -> None:
        """End training after the current step (as the Stop button does)."""
        self.trainer.request_stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds (forever if None); True when training has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def result(self, timeout: float | None = None) -> RMURun:
        """The finished (or stopped) run; waits for it. Raises the training's error if it failed."""
        if not self.wait(timeout):
            raise TimeoutError(f"RMU is still running after {timeout} s (step {self.trainer.step}/{self.trainer.n_steps})")
        if self.error is not None:
            raise self.error
        assert self.run is not None
        return self.run

    def _repr_html_(self) -> str:
        detail = f"step {self.trainer.step}/{self.trainer.n_steps}"
        if self.run_dir is not None:
            detail += f" · {self.run_dir.path}"
        hint = "" if self.done else " <span style='color:#666'>(job.result() waits for the run)</span>"
        return html_title(f"RMU job: {self.status}", detail) + hint


def start_training(
    model: Any,
    forget: Any,
    retain: Any,
    config: RMUConfig | None = None,
    *,
    control_vectors: Any = None,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    dashboard: TrainingDashboard | bool = True,
    callbacks: Sequence[Any] = (),
) -> TrainingJob:
    """Start :func:`rmu_lens.unlearn` in a background thread, with a live dashboard; returns the job.

    Arguments are those of ``unlearn``. ``dashboard=True`` makes a :class:`TrainingDashboard`
    (``job.dashboard``; display it to watch and stop the run). Errors in the arguments (bad config,
    an existing run directory) are raised here, before the thread starts.
    """
    from rmu_lens.rmu.trainer import RMUTrainer, open_run_directory

    board = TrainingDashboard() if dashboard is True else (dashboard or None)
    all_callbacks = [*callbacks, *([board] if board is not None else [])]
    trainer = RMUTrainer(model, forget, retain, config, control_vectors=control_vectors, callbacks=all_callbacks)
    run_dir = open_run_directory(trainer, out, resume=resume, overwrite=overwrite)
    return TrainingJob(trainer, run_dir, board).start()
