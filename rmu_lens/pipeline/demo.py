"""The demo: load → evaluate base → RMU → evaluate → analyze → (audit) → report, into one staged ``out``."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rmu_lens.pipeline.plans import DemoPlan
from rmu_lens.pipeline.staging import DemoResult, StagedOutput, Steps, stderr_log

N_STEPS = 6


def run_pipeline(
    plan: DemoPlan,
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    progress: bool = True,
    analysis: bool = True,
    audit: bool | Mapping[str, Any] = False,
    log: Callable[[str], None] = stderr_log,
) -> DemoResult:
    """Run the demo described by ``plan`` and write ``out`` (layout in :mod:`rmu_lens.pipeline`).

    ``analysis=False`` skips the representation analysis (the report then shows accuracy and training
    only). ``audit=True`` adds the recovery audits (:func:`rmu_lens.audit.audit`: direction ablation,
    few-shot fine-tuning, probes) on the forget questions, with the distant ones as retain questions,
    written to ``audit/`` and shown as the report's robustness section; a mapping instead of True
    passes its items to :func:`~rmu_lens.audit.audit` as keyword options (e.g. a smaller ``finetune``). Step headers and the final summary go to ``log``; progress bars to stderr.
    """
    from rmu_lens.eval import compare, evaluate
    from rmu_lens.report import build_report
    from rmu_lens.rmu import unlearn

    output = StagedOutput(out, overwrite, log, N_STEPS + int(bool(audit)))
    steps = output.steps
    n_sets = len({q.group for q in plan.questions})
    with output.staging() as staging:
        steps.start("load", f"loading {plan.name} (base and a copy for RMU)")
        base_model = plan.load_model()
        unlearned_model = plan.load_model()

        steps.start("eval_base", f"evaluating base model on {n_sets} question sets ({len(plan.questions)} questions, {plan.mode} mode)")
        base_eval = evaluate(base_model, plan.questions, mode=plan.mode, batch_size=plan.eval_batch_size, progress=progress)
        base_eval.meta["model"] = plan.name
        base_eval.save(staging / "eval_base.json")

        cfg = plan.config
        steps.start("rmu", f"RMU on {', '.join(c.name for c in plan.forget)}: up to {cfg.max_batches} steps, "
                           f"reading {cfg.read_hook}, training layers {cfg.update_layers}")
        run = unlearn(unlearned_model, plan.forget, plan.retain, cfg, out=staging / "run", progress=progress)

        steps.start("eval_unlearned", f"evaluating unlearned model on the same {len(plan.questions)} questions")
        new_eval = evaluate(unlearned_model, plan.questions, mode=plan.mode, batch_size=plan.eval_batch_size, progress=progress)
        new_eval.meta["model"] = f"{plan.name} after RMU (run/model)"
        new_eval.save(staging / "eval_unlearned.json")
        comparison = compare(base_eval, new_eval, forget_subjects=plan.forget_subjects)
        comparison.save(staging / "comparison.json")

        result_analysis = None
        if analysis:
            from rmu_lens.analysis import analyze

            steps.start("analysis", f"analyzing representations: {len(plan.analysis_datasets)} datasets, "
                                    f"up to {plan.analysis_max_texts} texts each, base vs unlearned")
            result_analysis = analyze(
                base_model, unlearned_model, plan.analysis_datasets,
                control_vectors=run.control_vectors, steering_coeffs=run.steering_coeffs, layer=run.layer,
                questions=plan.questions if plan.analysis_questions else None, comparison=comparison,
                layers=plan.analysis_layers,
                max_texts=plan.analysis_max_texts, subjects=plan.analysis_subjects or None, progress=progress,
            )
            result_analysis.save(staging / "analysis")
        else:
            steps.start("analysis", "representation analysis skipped")

        utility = None
        if plan.utility:
            utility = _utility_step(plan, base_model, unlearned_model, staging / "utility", steps, progress)

        robustness = None
        if audit:
            options = dict(audit) if isinstance(audit, Mapping) else {}
            robustness = _audit_step(plan, base_model, run, staging / "audit", steps, progress, options)

        steps.start("report", "writing figures and report")
        report = build_report(
            title=f"RMU on {plan.name}", base_eval=base_eval, unlearned_eval=new_eval,
            subject_roles=plan.subject_roles, run=run, comparison=comparison, analysis=result_analysis,
            robustness=robustness, utility=utility,
            meta={
                "model": plan.name,
                "forget": ", ".join(c.name for c in plan.forget),
                "retain": plan.retain.name,
                "read hook": cfg.read_hook,
                "steering coefficients": ", ".join(f"{t}: {c:.4g}" for t, c in run.steering_coeffs.items()),
                "steps": f"{len(run.history)} ({run.status})",
                "questions": f"{len(plan.questions)} ({plan.mode} mode)",
            },
        )
        result = output.finish(
            staging, report, plan.describe(),
            run_status=run.status,
            steering_coeffs=run.steering_coeffs,
            utility=utility.summary() if utility is not None else None,
            files={
                "run": "run", "eval_base": "eval_base.json", "eval_unlearned": "eval_unlearned.json",
                "comparison": "comparison.json", "analysis": "analysis" if result_analysis is not None else None,
                "audit": "audit" if audit else None, "utility": "utility" if utility is not None else None,
                "figures": "figures", "report": "report.html",
            },
        )
    return result


def _utility_step(plan: DemoPlan, base_model: Any, unlearned_model: Any, out: Path, steps: Steps, progress: bool) -> Any:
    """Perplexity of both models on the analysis datasets and their completions of question prompts per role."""
    from rmu_lens.utility.section import question_prompts, utility_section

    datasets = plan.analysis_datasets or {c.name: (c, "forget") for c in plan.forget} | {"retain": (plan.retain, "retain")}
    prompts = question_prompts(plan.questions, plan.subject_roles, plan.utility_prompts_per_role)
    steps.substep("utility", f"utility: perplexity on {len(datasets)} datasets ({plan.utility_max_texts} texts each), "
                             f"{sum(map(len, prompts.values()))} prompts completed by both models")
    section = utility_section(base_model, unlearned_model, datasets, prompts, max_texts=plan.utility_max_texts,
                              generation=plan.generation, progress=progress)
    if plan.judge is not None and section.generations is not None:
        from rmu_lens.utility.judge import judge_generations

        judge_generations(section.generations, plan.judge)
    section.save(out)
    return section


def _audit_step(
    plan: DemoPlan, base_model: Any, run: Any, out: Path, steps: Steps, progress: bool, options: dict[str, Any]
) -> dict[str, Any]:
    """Recovery audits of the demo's run: forget questions against the distant ones; the report section."""
    from rmu_lens.audit import audit

    forget_questions = [q for q in plan.questions if plan.subject_roles.get(q.subject) == "forget"]
    retain_questions = [q for q in plan.questions if plan.subject_roles.get(q.subject) == "distant"]
    steps.start("audit", f"recovery audits: ablation, few-shot fine-tuning, probes ({len(forget_questions)} forget questions)")
    result = audit(
        base_model, run, forget_questions=forget_questions, retain_questions=retain_questions or None,
        forget_texts=[text for corpus in plan.forget for text in corpus.texts], retain_texts=plan.retain.texts,
        mode=plan.mode, out=out, progress=progress, **options,
    )
    return result.report_section()
