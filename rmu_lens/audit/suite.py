"""audit(): how robust is this unlearning? Direction ablation, few-shot fine-tuning and probes in one call.

    result = audit(base, unlearned_run, forget_questions=..., retain_questions=...,
                   forget_texts=..., retain_texts=..., out="audit/")
    print("\\n".join(result.headline()))
    # removed 72.2 points of forget accuracy (0.972 -> 0.250)
    # ablation recovers 64% [55%, 73%] (mean_diff @ layers 0,1,2,3); a random direction 0% [0%, 3%]
    # 10-shot fine-tuning recovers 35% [...] on unrelated text, 52% [...] on forget-domain text

``AuditResult`` holds every condition with its recovery and interval, serialises to JSON
(``save``/``load``) and draws its figures (``figures()``: name -> matplotlib Figure).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rmu_lens.errors import RMULensError
from rmu_lens.results import JSONResult, finite_json, from_finite_json

if TYPE_CHECKING:  # the audits import torch; this module stays light so the CLI starts fast
    from rmu_lens.audit.ablation import AblationResult
    from rmu_lens.audit.finetune import FinetuneConfig, FinetuneResult
    from rmu_lens.audit.probing import ProbeAuditResult

FORMAT = "rmu_lens.audit/1"
HEADLINE_N = 10
"""The fine-tuning N quoted in the headline when it was run ("10-shot fine-tuning recovers Z%")."""


class AuditFileError(RMULensError, ValueError):
    """A file is not an rmu_lens audit: the message names the file and what is wrong."""


@dataclass
class AuditResult(JSONResult):
    """The outcome of :func:`audit`: baseline accuracies and each audit's recovery of the removed accuracy."""

    baseline: dict[str, Any]
    ablation: AblationResult | None = None
    finetune: FinetuneResult | None = None
    probe: ProbeAuditResult | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    FORMAT = FORMAT
    WHAT = "an rmu_lens audit"
    FORMAT_ERROR = AuditFileError
    MISSING_ERROR = AuditFileError

    @property
    def removed(self) -> float:
        """Forget accuracy points removed by unlearning (base - unlearned)."""
        return self.baseline["removed"]

    def headline(self) -> list[str]:
        """The robustness summary: what was removed and how much each audit brings back, one line each."""
        return list(self.headlines().values())

    def headlines(self) -> dict[str, str]:
        """:meth:`headline` by audit: ``removed``, then ``ablation``, ``finetune``, ``probe`` for those that ran."""
        b = self.baseline
        lines = {"removed": (
            f"removed {100 * self.removed:.1f} points of forget accuracy "
            f"({b['base_forget_acc']:.3f} -> {b['unlearned_forget_acc']:.3f}, {b['n_forget']} questions, {b['mode']})"
        )}
        if "base_retain_acc" in b:
            lines["removed"] += f"; retain {b['base_retain_acc']:.3f} -> {b['unlearned_retain_acc']:.3f}"
        if self.ablation is not None:
            best, control = self.ablation.best(), self.ablation.control()
            if best is None:
                note = self.ablation.conditions[0].recovery.note if self.ablation.conditions else ""
                lines["ablation"] = f"ablation recovery undefined: {note}"
            else:
                text = f"ablation recovers {best.recovery.describe()} ({best.label})"
                if control is not None:
                    text += f"; a random direction {control.recovery.describe()}"
                lines["ablation"] = text
        if self.finetune is not None:
            n = HEADLINE_N if any(c.n_examples == HEADLINE_N for c in self.finetune.conditions) else min(
                c.n_examples for c in self.finetune.conditions)
            parts = []
            for source in self.finetune.sources:
                condition = self.finetune.at(source, n)
                if condition is not None:
                    label = {"retain": "unrelated text", "forget": "forget-domain text"}.get(source, f"{source} text")
                    parts.append(f"{condition.recovery.describe()} on {label}")
            lines["finetune"] = f"{n}-shot fine-tuning recovers " + ", ".join(parts)
        if self.probe is not None:
            lines["probe"] = self.probe.headline()
        return lines

    def figures(self) -> dict[str, Any]:
        """Name -> matplotlib Figure (Agg; no pyplot state) for each audit that ran."""
        from rmu_lens.plots.audit import ablation_figure, finetune_figure, probe_figure

        figures = {}
        if self.ablation is not None and self.ablation.conditions:
            figures["ablation"] = ablation_figure(self.ablation)
        if self.finetune is not None and self.finetune.conditions:
            figures["finetune"] = finetune_figure(self.finetune)
        if self.probe is not None and self.probe.layers:
            figures["probe"] = probe_figure(self.probe)
        return figures

    def report_section(self) -> dict[str, Any]:
        """The report's robustness section: ``{"headlines": {name: sentence}, "figures": [(name, Figure, caption)]}``."""
        captions = {
            "ablation": "Forget accuracy recovered by projecting the estimated RMU direction out of the residual stream, per layer set (random direction of the same norm as control).",
            "finetune": "Forget accuracy recovered by fine-tuning a copy of the unlearned model on N examples of unrelated or forget-domain text.",
            "probe": "How much of the base model's linear decodability of the forget answers survives in the unlearned model, per layer.",
        }
        return {
            "headlines": self.headlines(),
            "figures": [(f"audit_{name}", figure, captions[name]) for name, figure in self.figures().items()],
        }

    # -- files ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "headline": self.headline(),
            "baseline": self.baseline,
            "ablation": self.ablation.to_dict() if self.ablation else None,
            "finetune": self.finetune.to_dict() if self.finetune else None,
            "probe": self.probe.to_dict() if self.probe else None,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditResult:
        """The inverse of :meth:`to_dict` (the ``headline`` it writes is recomputed, not read)."""
        from rmu_lens.audit.ablation import AblationResult
        from rmu_lens.audit.finetune import FinetuneResult
        from rmu_lens.audit.probing import ProbeAuditResult

        cls.check_format(data)
        return cls(
            baseline=data["baseline"],
            ablation=AblationResult.from_dict(data["ablation"]) if data.get("ablation") else None,
            finetune=FinetuneResult.from_dict(data["finetune"]) if data.get("finetune") else None,
            probe=ProbeAuditResult.from_dict(data["probe"]) if data.get("probe") else None,
            meta=data.get("meta") or {},
        )

    def write(self, directory: str | os.PathLike) -> dict[str, Path]:
        """Write ``audit.json`` and one PNG per figure into ``directory``; returns name -> path."""
        from rmu_lens._io import atomic_directory

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = {"audit": self.save(directory / "audit.json")}
        figures = self.figures()
        if figures:
            with atomic_directory(directory / "figures") as staging:
                for name, figure in figures.items():
                    figure.savefig(staging / f"{name}.png", dpi=120, bbox_inches="tight")
            paths |= {name: directory / "figures" / f"{name}.png" for name in figures}
        return paths


_finite = finite_json  # older names, kept for callers
_nan_back = from_finite_json


# --- the entry point -----------------------------------------------------------------------------


def _run_settings(unlearned: Any, run: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(bridge, run facts, control vectors) from a bridge plus an optional RMURun / run directory / run.json dict."""
    from rmu_lens.rmu.record import RMURun, hook_block

    if isinstance(unlearned, RMURun):
        run, unlearned = unlearned, unlearned.model
        if unlearned is None:
            raise TypeError(f"unlearned: the RMURun read from {run.out} holds no model; load {run.model_dir} and pass it")
    if isinstance(run, (str, os.PathLike)):
        run = RMURun.load(run)
    facts: dict[str, Any] = {}
    vectors: dict[str, Any] = {}
    if isinstance(run, RMURun):
        facts = {"layer": run.layer, "update_layers": list(run.config.update_layers),
                 "steering_coeffs": dict(run.steering_coeffs), "out": os.fspath(run.out) if run.out else None}
        vectors = dict(run.control_vectors)
    elif hasattr(run, "topics") and hasattr(run, "control_inputs"):  # a Recovery: estimated from the two models
        inputs = run.control_inputs()  # raises NoCollapseError when no topic collapsed: nothing to ablate
        facts = {"layer": inputs["layer"], "update_layers": (run.weights.changed_blocks if run.weights else None)
                 or [inputs["layer"]], "steering_coeffs": inputs["steering_coeffs"], "out": None, "estimated": True}
        vectors = dict(inputs["control_vectors"])
    elif isinstance(run, Mapping):
        config = run.get("config", run)
        hook = config.get("hook_point") or f"blocks.{config['layer']}.hook_resid_post"
        facts = {"layer": hook_block(hook), "update_layers": config.get("update_layers") or
                 list(range(max(0, config["layer"] - 2), config["layer"] + 1))}
    elif run is not None:
        raise TypeError(f"run: expected an RMURun, a run directory, a run.json dict or a Recovery "
                        f"(rmu_lens.analysis.recover for a model without a run directory), not {type(run).__name__}")
    return unlearned, facts, vectors


def audit(
    base: Any,
    unlearned: Any,
    *,
    forget_questions: Sequence[Any],
    retain_questions: Sequence[Any] | None = None,
    forget_texts: Sequence[str],
    retain_texts: Sequence[str] | None = None,
    run: Any = None,
    layer: int | None = None,
    update_layers: Sequence[int] | None = None,
    layer_sets: Sequence[Sequence[int]] | None = None,
    ablation: bool = True,
    finetune: FinetuneConfig | bool | None = True,
    probe: bool = True,
    mode: str = "cloze",
    batch_size: int = 16,
    direction_texts: int = 64,
    max_length: int = 128,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    progress: bool = True,
) -> AuditResult:
    """Run the recovery audits on an unlearned model and summarise how much of the removed accuracy comes back.

    ``base``: the model before unlearning (a bridge). ``unlearned``: a bridge or an ``RMURun``; ``run``
    (an RMURun, a run directory, a run.json dict, or a ``Recovery`` — estimated from the two models with
    forget and retain texts when no run and no layer is given) supplies the RMU layer, update layers and control
    vectors when ``unlearned`` is a bare bridge, else give ``layer``/``update_layers``. Forget/retain
    questions are scored with :func:`rmu_lens.eval.evaluate`; ``forget_texts`` feed the direction
    estimate (first ``direction_texts``) and the forget-domain fine-tunes, ``retain_texts`` the
    unrelated ones. Neither model is modified: ablation hooks are removed afterwards and each
    fine-tune works on a fresh copy. With ``out``, writes ``audit.json``, ``directions.safetensors``
    and ``figures/*.png`` there.
    """
    from rmu_lens._io import atomic_save_tensors
    from rmu_lens.audit.ablation import ablation_audit, default_layer_sets, estimate_directions
    from rmu_lens.audit.finetune import FinetuneConfig, finetune_audit
    from rmu_lens.audit.recovery_stats import Baseline
    from rmu_lens.eval import evaluate

    started = time.perf_counter()
    if run is None and not hasattr(unlearned, "control_vectors") and layer is None and layer_sets is None and ablation \
            and forget_texts and retain_texts:
        from rmu_lens.analysis.recover import recover  # no run record: estimate l, u and the trained blocks

        run = recover(base, unlearned, {"forget": list(forget_texts)}, list(retain_texts), progress=progress)
    unlearned, facts, control_vectors = _run_settings(unlearned, run)
    layer = layer if layer is not None else facts.get("layer")
    update_layers = list(update_layers) if update_layers is not None else facts.get("update_layers")
    if ablation and layer_sets is None and layer is None:
        raise ValueError("audit needs the RMU layer for the ablation: pass run= (an RMURun or run directory), layer=, or layer_sets=")
    if not forget_questions:
        raise ValueError("audit needs forget_questions: the multiple-choice questions the unlearning was meant to remove")
    forget_texts = [t for t in forget_texts or [] if isinstance(t, str) and t.strip()]
    if (ablation or finetune) and not forget_texts:
        raise ValueError("audit needs forget_texts (forget-domain text) for the direction estimate and the fine-tunes")
    finetune_config = FinetuneConfig() if finetune is True else (finetune or None)
    if finetune_config is not None and not retain_texts:
        raise ValueError("the fine-tuning audit needs retain_texts (unrelated text); pass them or finetune=False")

    def score(model: Any, questions: Sequence[Any] | None):
        return evaluate(model, questions, mode=mode, batch_size=batch_size, progress=False) if questions else None

    baseline = Baseline(score(base, forget_questions), score(unlearned, forget_questions),
                        score(base, retain_questions), score(unlearned, retain_questions))
    result = AuditResult(baseline=baseline.summary(), meta={
        "run": facts, "mode": mode, "n_forget_texts": len(forget_texts), "n_retain_texts": len(retain_texts or []),
        "seed": seed, "recovery": "(acc_audited - acc_unlearned) / (acc_base - acc_unlearned) on the forget questions; "
        "95% paired bootstrap interval over questions; raw values kept, display clamped to 0..100%",
    })
    directions = None
    if ablation:
        sets = [list(s) for s in layer_sets] if layer_sets is not None else default_layer_sets(
            layer, update_layers or [layer], unlearned.cfg.n_layers)
        layers = sorted({l for s in sets for l in s})
        directions = estimate_directions(base, unlearned, forget_texts[:direction_texts], layers, max_length=max_length,
                                         control_vectors=control_vectors, progress=progress)
        result.ablation = ablation_audit(unlearned, directions, baseline, forget_questions, retain_questions,
                                         layer_sets=sets, batch_size=batch_size, seed=seed, progress=progress)
    if finetune_config is not None:
        sources = {"retain": list(retain_texts), "forget": forget_texts}
        result.finetune = finetune_audit(unlearned, baseline, forget_questions, retain_questions, sources,
                                         finetune_config, batch_size=batch_size, progress=progress)
    if probe:
        from rmu_lens.audit.probing import probe_audit

        result.probe = probe_audit(base, unlearned, forget_questions, mode=mode, progress=progress)
    result.meta["seconds"] = round(time.perf_counter() - started, 1)
    if out is not None:
        paths = result.write(out)
        if directions is not None:
            atomic_save_tensors(Path(out) / "directions.safetensors", directions.tensors(),
                                metadata={"hook_template": directions.hook_template})
        result.meta["paths"] = {k: str(v) for k, v in paths.items()}
    return result
