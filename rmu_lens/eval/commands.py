"""`rmu-lens eval` and `rmu-lens compare`: argparse subcommands (heavy imports happen inside them).

    rmu-lens eval --model smollm2-135m --data wmdp-bio.jsonl --mode letter --out base.json
    rmu-lens eval --model runs/bio/ --data wmdp-bio.jsonl --mode letter --out rmu.json
    rmu-lens compare base.json rmu.json --forget-subjects wmdp-bio
    rmu-lens eval --model runs/bio/ --metric perplexity --data bundled:retain --out ppl.json
"""

from __future__ import annotations

import argparse
import sys

from rmu_lens.devices import add_device_arguments, load_options
from rmu_lens.flags import add_flags, eval_flags, log_function, model_flag, output_flags, show_progress

FORMAT_CHOICES = ("wmdp", "mmlu", "mmlu-csv")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval`` and ``compare`` subcommands; each sets ``func`` taking the parsed args."""
    evaluate_parser = subparsers.add_parser(
        "eval",
        help="score a model on multiple-choice questions (lm-eval compatible)",
        description="Score a model on WMDP / MMLU-style questions as lm-evaluation-harness does (0-shot), "
        "and write per-question records and per-subject accuracy with 95% Wilson intervals.",
    )
    add_flags(evaluate_parser, [model_flag(required=True)])
    evaluate_parser.add_argument("--data", required=True, help="question file (.jsonl/.json/.parquet/.csv), MMLU CSV folder, bundled:NAME, or HF dataset name")
    evaluate_parser.add_argument("--format", choices=FORMAT_CHOICES, default=None, help="data format (detected when omitted)")
    evaluate_parser.add_argument("--config", default=None, help="HF dataset config, e.g. wmdp-bio for cais/wmdp")
    evaluate_parser.add_argument("--subjects", nargs="+", default=None, help="keep only these subjects (or tasks)")
    add_flags(evaluate_parser, eval_flags(limit="first N questions of each subject (perplexity: first N texts)"))
    add_device_arguments(evaluate_parser)
    evaluate_parser.add_argument("--out", required=True, help="results JSON to write")
    add_flags(evaluate_parser, output_flags())
    evaluate_parser.add_argument(
        "--metric", choices=("accuracy", "perplexity"), default="accuracy",
        help="accuracy: multiple-choice questions (default); perplexity: lm-eval's rolling-window word/byte perplexity "
        "and bits per byte of the texts in --data (a corpus: .jsonl/.txt/.parquet or bundled:NAME)",
    )
    evaluate_parser.add_argument("--text-field", default="text", help="perplexity: the text field of a .jsonl/.parquet corpus")
    evaluate_parser.add_argument("--max-length", type=int, default=None, help="perplexity: window length [the model's maximum length]")
    evaluate_parser.set_defaults(func=run_eval)

    compare_parser = subparsers.add_parser(
        "compare",
        help="per-subject accuracy change between two eval results",
        description="Compare two `rmu-lens eval` results question by question: per-subject change with "
        "95% intervals (Newcombe, paired), forget targets flagged against collateral subjects.",
    )
    compare_parser.add_argument("base", help="results JSON of the original model")
    compare_parser.add_argument("new", help="results JSON of the edited model")
    compare_parser.add_argument("--forget-subjects", nargs="+", default=None, help="subjects or tasks that were meant to be forgotten")
    compare_parser.add_argument("--metric", choices=("acc", "acc_norm"), default="acc", help="acc_norm needs cloze results")
    compare_parser.add_argument("--out", default=None, help="also write the comparison as JSON")
    compare_parser.set_defaults(func=run_compare)


def run_eval(args: argparse.Namespace) -> int:
    from rmu_lens._io import check_output_file
    from rmu_lens.distributed import init_distributed
    from rmu_lens.eval import evaluate, load_questions
    from rmu_lens.eval.evaluate import resolve_model_source
    from rmu_lens.models import load_model

    check_output_file(args.out, "--out")  # before scoring, so the results are never lost
    # Under torchrun: one process group, each rank on its own GPU, scoring its share of the questions.
    launch = init_distributed()
    if args.metric == "perplexity":
        return run_perplexity(args)
    questions = load_questions(args.data, format=args.format, subjects=args.subjects, limit=args.limit, config=args.config)
    model = load_model(resolve_model_source(args.model), **load_options(args))
    result = evaluate(model, questions, mode=args.mode, batch_size=args.batch_size, progress=show_progress(args))
    result.meta["model"] = args.model
    result.meta["data"] = args.data
    if not launch.is_main:
        return 0  # every rank holds the gathered result; rank 0 writes it
    path = result.save(args.out)
    log = log_function(args)
    log(result.table())
    log(f"wrote {path}", file=sys.stderr)
    return 0


def run_perplexity(args: argparse.Namespace) -> int:
    """`rmu-lens eval --metric perplexity`: lm-eval's loglikelihood_rolling metrics of a corpus."""
    from rmu_lens.data.corpora import load_corpus
    from rmu_lens.eval.evaluate import resolve_model_source
    from rmu_lens.eval.results import format_table
    from rmu_lens.models import load_model
    from rmu_lens.utility.perplexity import METRICS, perplexity

    from rmu_lens.distributed import launch

    if launch().world_size > 1:
        raise ValueError("--metric perplexity is not sharded across torchrun processes: run it in one process (without torchrun)")
    for name in ("limit", "max_length"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} {value}: give a positive number")
    corpus = load_corpus(args.data, text_field=args.text_field)
    model = load_model(resolve_model_source(args.model), **load_options(args))
    result = perplexity(model, corpus, max_length=args.max_length, max_texts=args.limit,
                        batch_size=args.batch_size, progress=show_progress(args))
    result.meta["model"] = args.model
    result.meta["data"] = args.data
    path = result.save(args.out)
    log = log_function(args)
    log(format_table(["texts", "tokens", *METRICS],
                     [[str(len(result.loglikelihoods)), str(sum(result.n_tokens)), *(f"{v:.4f}" for v in result.metrics().values())]]))
    log(f"wrote {path}", file=sys.stderr)
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from rmu_lens._io import check_output_file
    from rmu_lens.eval import compare

    if args.out:
        check_output_file(args.out, "--out")
    comparison = compare(args.base, args.new, forget_subjects=args.forget_subjects, metric=args.metric)
    print(comparison.table())
    if args.out:
        path = comparison.save(args.out)
        print(f"wrote {path}", file=sys.stderr)
    return 0
