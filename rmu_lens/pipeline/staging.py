"""Staged output: an output directory written into a staging directory beside it and renamed at the end.

Both the demo and `rmu-lens analyze` end the same way — figures and report, then summary.json,
then the rename, then the printed summary — so a failed step leaves nothing half-written and an
existing non-empty ``out`` is refused unless ``overwrite``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUMMARY_FORMAT = "rmu_lens.demo/1"


@dataclass
class DemoResult:
    """Where the demo wrote its files and what it found (``summary`` is summary.json)."""

    out: Path
    summary: dict[str, Any]

    @property
    def report(self) -> Path:
        return self.out / "report.html"


def check_output_dir(out: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse a non-empty ``out`` unless ``overwrite`` (then it is replaced only when the demo succeeds)."""
    from rmu_lens.rmu.rundir import check_writable_directory

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"out={out} exists and is not a directory: choose a directory path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"out={out} is not empty: choose a new directory, or pass overwrite=True to replace it")
    return check_writable_directory(out, "out")


class Steps:
    """Prints ``[i/N] what`` headers and records each step's wall time."""

    def __init__(self, log: Callable[[str], None], total: int) -> None:
        self.log, self.seconds, self._index, self.total = log, {}, 0, total
        self._name: str | None = None
        self._started = 0.0

    def start(self, name: str, header: str) -> None:
        self.stop()
        self._index += 1
        self._name, self._started = name, time.perf_counter()
        self.log(f"[{self._index}/{self.total}] {header}")

    def substep(self, name: str, header: str) -> None:
        """A timed part of the current step, logged indented and not numbered."""
        self.stop()
        self._name, self._started = name, time.perf_counter()
        self.log(f"      {header}")

    def stop(self) -> None:
        if self._name is not None:
            self.seconds[self._name] = round(time.perf_counter() - self._started, 1)
            self._name = None


def stderr_log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class StagedOutput:
    """One output directory written through a staging directory, with numbered, timed steps.

        output = StagedOutput(out, overwrite, log, total_steps)      # refuses a bad ``out`` at once
        with output.staging() as staging:
            output.steps.start(...); ...write into staging...
            result = output.finish(staging, report, plan)            # report, summary.json
        return result                                                # renamed into place, summary printed
    """

    def __init__(self, out: str | os.PathLike, overwrite: bool, log: Callable[[str], None], total_steps: int) -> None:
        self.out = check_output_dir(out, overwrite)
        self.log = log
        self.steps = Steps(log, total_steps)
        self.started = time.perf_counter()
        self.summary: dict[str, Any] | None = None

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """The staging directory; on a clean exit after :meth:`finish` it replaces ``out`` and the summary is printed."""
        from rmu_lens._io import atomic_directory

        self.started = time.perf_counter()
        with atomic_directory(self.out) as staging:
            yield staging
            if self.summary is None:
                raise RuntimeError("StagedOutput.finish() was not called: the output has no summary.json")
        from rmu_lens.pipeline.summary import format_summary

        self.log(format_summary(self.summary, self.out))

    def finish(self, staging: Path, report: Any, plan: Mapping[str, Any], **fields: Any) -> DemoResult:
        """Write the figures, report.html and summary.json (format, plan, headline, ``fields``, figures, seconds)."""
        from rmu_lens._io import atomic_write_json

        report.save_figures(staging / "figures")
        report.save(staging / "report.html")
        self.steps.stop()
        self.summary = {
            "format": SUMMARY_FORMAT,
            "plan": dict(plan),
            "headline": report.headline.to_dict(),
            **fields,
            "figures": [f"figures/{f.name}.png" for f in report.all_figures()],
            "seconds": {**self.steps.seconds, "total": round(time.perf_counter() - self.started, 1)},
        }
        atomic_write_json(staging / "summary.json", self.summary)
        return DemoResult(out=self.out, summary=self.summary)
