"""EvalResult: per-question records, accuracies with 95% Wilson intervals, JSON round trip, a table.

The JSON file keeps every record (id, task, subject, the four log-likelihoods, prediction, answer,
correct; cloze adds the length-normalised prediction) beside the summaries, so any metric can be
recomputed and two results can be compared question by question.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rmu_lens.eval.stats import wilson_interval
from rmu_lens.errors import RMULensError

FORMAT = "rmu_lens.eval/1"
RECORD_FIELDS = ("id", "task", "subject", "loglikelihoods", "prediction", "answer", "correct")


class ResultFileError(RMULensError, ValueError):
    """A results file is not an rmu_lens evaluation: the message names the file and what is wrong."""


def accuracy_summary(outcomes: Iterable[bool]) -> dict[str, float | int]:
    """``{"acc", "ci_low", "ci_high", "n"}`` of a list of right/wrong outcomes (Wilson 95%)."""
    outcomes = list(outcomes)
    n, right = len(outcomes), sum(bool(o) for o in outcomes)
    low, high = wilson_interval(right, n)
    return {"acc": right / n if n else float("nan"), "ci_low": low, "ci_high": high, "n": n}


@dataclass
class EvalResult:
    """The outcome of :func:`rmu_lens.eval.evaluate` on one model and one question set.

    ``records`` holds one dict per question; ``meta`` says what was evaluated and how (model, data,
    mode, prompt, package versions).
    """

    mode: str
    records: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)

    # --- metrics ---------------------------------------------------------------------------

    @property
    def metrics(self) -> tuple[str, ...]:
        from rmu_lens.eval.prompts import get_prompt_mode

        return ("acc", "acc_norm") if get_prompt_mode(self.mode).acc_norm else ("acc",)

    def _outcome_key(self, metric: str) -> str:
        if metric not in self.metrics:
            raise ValueError(f"metric {metric!r} is not available in {self.mode} mode; available: {list(self.metrics)}")
        return "correct" if metric == "acc" else "correct_norm"

    def outcomes(self, metric: str = "acc") -> dict[str, bool]:
        """Right/wrong per question id under ``metric``."""
        key = self._outcome_key(metric)
        return {r["id"]: bool(r[key]) for r in self.records}

    @property
    def accuracy(self) -> float:
        """Share of questions whose highest-likelihood choice is the answer (lm-eval's ``acc``)."""
        return self.summary()["acc"]

    @property
    def accuracy_norm(self) -> float:
        """Cloze only: the same with log-likelihoods divided by the choice's length in characters (``acc_norm``)."""
        return self.summary("acc_norm")["acc"]

    def summary(self, metric: str = "acc", records: list[dict[str, Any]] | None = None) -> dict[str, float | int]:
        """Accuracy, Wilson 95% interval and count over ``records`` (all by default)."""
        key = self._outcome_key(metric)
        return accuracy_summary(r[key] for r in (self.records if records is None else records))

    def _grouped(self, field_name: str) -> dict[str, dict[str, float | int]]:
        groups: dict[str, list[dict[str, Any]]] = {}
        for record in self.records:
            groups.setdefault(record[field_name], []).append(record)
        table = {}
        for name in sorted(groups):
            row = self.summary("acc", groups[name])
            if "acc_norm" in self.metrics:
                norm = self.summary("acc_norm", groups[name])
                row |= {"acc_norm": norm["acc"], "acc_norm_ci_low": norm["ci_low"], "acc_norm_ci_high": norm["ci_high"]}
            table[name] = row
        return table

    def by_subject(self) -> dict[str, dict[str, float | int]]:
        """``{subject: {"acc", "ci_low", "ci_high", "n"}}`` (cloze adds ``acc_norm`` and its interval).

        A question without a subject is grouped under its task.
        """
        return self._grouped("subject")

    def by_task(self) -> dict[str, dict[str, float | int]]:
        """The same grouped by task (``wmdp-bio``, ``mmlu``, a file's stem)."""
        return self._grouped("task")

    def overall(self) -> dict[str, float | int]:
        row = self.summary("acc")
        if "acc_norm" in self.metrics:
            norm = self.summary("acc_norm")
            row |= {"acc_norm": norm["acc"], "acc_norm_ci_low": norm["ci_low"], "acc_norm_ci_high": norm["ci_high"]}
        return row

    # --- files -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "mode": self.mode,
            "meta": self.meta,
            "overall": self.overall(),
            "by_task": self.by_task(),
            "by_subject": self.by_subject(),
            "records": self.records,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the result as JSON, atomically (a crash leaves no half-written file)."""
        from rmu_lens._io import atomic_write_json

        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> EvalResult:
        """Read a file written by :meth:`save`; summaries are recomputed from the records."""
        from rmu_lens._io import read_format_json

        path = Path(path)
        data = read_format_json(
            path, FORMAT, ResultFileError, "an rmu_lens evaluation", "pass a file written by EvalResult.save (rmu-lens eval)"
        )
        from rmu_lens.eval.prompts import PromptModeError, get_prompt_mode

        mode, records = data.get("mode"), data.get("records")
        try:
            prompt = get_prompt_mode(mode) if isinstance(mode, str) else None
        except PromptModeError:
            prompt = None
        if prompt is None or not isinstance(records, list):
            raise ResultFileError(f"{path}: needs 'mode' (a registered prompt mode: letter or cloze) and a 'records' list")
        needed = RECORD_FIELDS + (("pred_norm", "correct_norm") if prompt.acc_norm else ())
        for number, record in enumerate(records, start=1):
            missing = [k for k in needed if not isinstance(record, dict) or k not in record]
            if missing:
                raise ResultFileError(f"{path}: record {number} lacks {missing}")
        return cls(mode=mode, records=records, meta=data.get("meta") or {})

    # --- display ---------------------------------------------------------------------------

    def table(self) -> str:
        """A plain-text table: one row per subject, then per task, then overall."""
        headers = ["group", "n", "acc", "95% CI"] + (["acc_norm", "95% CI (norm)"] if "acc_norm" in self.metrics else [])

        def cells(name: str, row: dict[str, Any]) -> list[str]:
            out = [name, str(row["n"]), f"{row['acc']:.3f}", f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]"]
            if "acc_norm" in self.metrics:
                out += [f"{row['acc_norm']:.3f}", f"[{row['acc_norm_ci_low']:.3f}, {row['acc_norm_ci_high']:.3f}]"]
            return out

        subjects, tasks = self.by_subject(), self.by_task()
        rows = [cells(name, row) for name, row in subjects.items()]
        if set(tasks) != set(subjects):
            rows += [cells(f"task {name}", row) for name, row in tasks.items()]
        rows.append(cells("overall", self.overall()))
        model = self.meta.get("model", "?")
        title = f"{self.mode} mode, model {model}, {len(self.records)} questions"
        return title + "\n" + format_table(headers, rows)


    def _repr_html_(self) -> str:
        """Notebook summary: accuracy per subject with 95% intervals (subject and model names escaped)."""
        from rmu_lens._templates import macro

        norm = "acc_norm" in self.metrics
        headers = ["subject", "n", "acc", "95% CI"] + (["acc_norm"] if norm else [])

        def cells(name: str, row: dict[str, Any]) -> list[str]:
            values = [name, str(row["n"]), f"{row['acc']:.3f}", f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]"]
            return values + ([f"{row['acc_norm']:.3f}"] if norm else [])

        rows = [cells(name, row) for name, row in self.by_subject().items()]
        return macro("widgets.html", "eval_result", self.mode, str(self.meta.get("model", "?")), len(self.records),
                     headers, rows, cells("overall", self.overall())).strip()


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned first column, right-aligned others, a rule under the header."""
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]

    def line(values: list[str]) -> str:
        first = str(values[0]).ljust(widths[0])
        return "  ".join([first] + [str(v).rjust(w) for v, w in zip(values[1:], widths[1:])])

    return "\n".join([line(headers), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])
