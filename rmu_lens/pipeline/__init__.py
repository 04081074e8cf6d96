"""The end-to-end demo and `rmu-lens analyze` as functions: load → evaluate base → RMU → evaluate → analyze → report.

    from rmu_lens.pipeline import smollm2_plan, run_pipeline
    result = run_pipeline(smollm2_plan(), "runs/demo")        # what `rmu-lens demo --out runs/demo` does

| file        | role                                                                             |
|-------------|----------------------------------------------------------------------------------|
| plans.py    | DemoPlan; smollm2_plan(), testbed_plan(); the bundled question sets and roles    |
| demo.py     | run_pipeline(): the demo's steps (evaluate, RMU, analysis, utility, audit, report) |
| analyze.py  | run_analysis(): `rmu-lens analyze`, a base model against a run or any unlearned model |
| side_by_side.py | run_side_by_side(): several unlearned models of one base in one report          |
| staging.py  | StagedOutput: out written into staging → report → summary.json → rename; steps   |
| summary.py  | format_summary(): the printout that ends both                                    |

A :class:`DemoPlan` says what runs (a model factory, corpora, question sets with roles, the RMU
config, the analysis datasets and sizes); :func:`run_pipeline` runs it and writes

    out/
      run/                  the RMU run directory (run.json, control_vectors.safetensors, model/)
      eval_base.json        EvalResult of the base model
      eval_unlearned.json   EvalResult of the unlearned model
      comparison.json       per-subject change, paired by question
      analysis/             Analysis.save (norms, cosines, probes, damage)
      utility/              perplexity.json (per dataset, both models), generations.json (per role)
      figures/*.png         every figure of the report
      report.html           the self-contained report
      summary.json          headline numbers, roles, step timings, settings

Everything is written into a staging directory beside ``out`` and renamed at the end, so a failed
step leaves nothing half-written; an existing non-empty ``out`` is refused unless ``overwrite``.
"""

from rmu_lens.pipeline.analyze import (
    default_analysis_datasets,
    default_subject_roles,
    plain_model_datasets,
    run_analysis,
    run_corpora,
)
from rmu_lens.pipeline.demo import N_STEPS, run_pipeline
from rmu_lens.pipeline.plans import (
    SMOLLM2_ANALYSIS_LAYERS,
    SMOLLM2_QUESTION_SETS,
    DemoPlan,
    bundled_question_sets,
    question_set_datasets,
    question_texts,
    smollm2_plan,
    testbed_plan,
)
from rmu_lens.pipeline.side_by_side import run_side_by_side
from rmu_lens.pipeline.staging import SUMMARY_FORMAT, DemoResult, StagedOutput, check_output_dir
from rmu_lens.pipeline.summary import format_summary

__all__ = [
    "N_STEPS", "SMOLLM2_ANALYSIS_LAYERS", "SMOLLM2_QUESTION_SETS", "SUMMARY_FORMAT", "DemoPlan", "DemoResult",
    "StagedOutput", "bundled_question_sets", "check_output_dir", "default_analysis_datasets", "default_subject_roles",
    "format_summary", "plain_model_datasets", "question_set_datasets", "question_texts", "run_analysis", "run_corpora",
    "run_pipeline", "run_side_by_side",
    "smollm2_plan", "testbed_plan",
]
