"""The ``rmu-lens`` command line. Heavy imports (torch, TransformerLens) happen inside the commands."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import importlib
import json
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rmu_lens.audit.commands import register as register_audit_commands
from rmu_lens.devices import add_device_arguments, load_options
from rmu_lens.eval.commands import register as register_eval_commands
from rmu_lens.flags import (
    DeferredArgumentParser,
    add_flags,
    add_when_used,
    config_flags,
    config_overrides,
    eval_flags,
    int_list,
    library_progress_bars,
    log_function,
    model_flag,
    output_flags,
    profile_flag,
    run_flags,
    show_progress,
)

CONFIG_GROUP = "RMU settings (override the profile / config file)"
COMMAND_MODULES: tuple[str, ...] = ("rmu_lens.sweep.cli",)
"""More modules with an ``add_parser(subparsers)`` that adds their subcommands (e.g. ``"rmu_lens.sweep.cli"``)."""

def _add_unlearn(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "unlearn",
        help="run RMU and write a run directory",
        description=(
            "Run RMU on a model. Writes OUT/run.json (config, versions, data hashes, history), "
            "OUT/control_vectors.safetensors and OUT/model/ (the edited model, loadable by transformers). "
            "Defaults are the published Zephyr-7B setting; --profile demo suits the embedded default on a CPU."
        ),
    )
    add_flags(parser, [model_flag()])
    parser.add_argument("--forget", nargs="+", required=True, metavar="CORPUS",
                        help="one corpus per forget topic: bundled:NAME, a .jsonl/.txt/.parquet file, or an HF dataset")
    parser.add_argument("--retain", nargs="+", required=True, metavar="CORPUS",
                        help="one retain corpus for all topics, or one per forget topic")
    parser.add_argument("--out", required=True, type=Path, help="run directory to write")
    parser.add_argument("--config", type=Path, default=None, help="start from an RMUConfig JSON file (e.g. a run.json's config)")
    parser.add_argument("--text-field", default="text", help="JSON/parquet field holding the text [text]")
    add_flags(parser, run_flags())
    add_device_arguments(parser)
    add_flags(parser, output_flags())
    add_when_used(parser, add_config_flags)  # RMUConfig's package imports torch: only when `unlearn` runs
    parser.set_defaults(func=run_unlearn)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per RMUConfig field (rmu_lens.flags), the same as the ``%rmu_unlearn`` magic's."""
    from rmu_lens.rmu.config import PROFILES, RMUConfig

    add_flags(parser, [profile_flag(PROFILES)])
    add_flags(parser, config_flags(RMUConfig), CONFIG_GROUP)


def build_config(args: argparse.Namespace):
    """RMUConfig from --config / --profile, then the explicit flags."""
    from rmu_lens.rmu.config import RMUConfig

    base: dict[str, Any] = {}
    if args.config is not None:
        data = json.loads(Path(args.config).read_text(encoding="utf-8"))
        base = data.get("config", data)
    overrides = config_overrides(args, RMUConfig)
    if args.profile:
        return RMUConfig.profile(args.profile, **{**base, **overrides})
    return RMUConfig.from_dict({**base, **overrides})


def run_unlearn(args: argparse.Namespace) -> int:
    import rmu_lens as rl
    from rmu_lens.rmu.rundir import check_run_output

    check_run_output(args.out, resume=args.resume, overwrite=args.overwrite)  # before minutes of loading
    config = build_config(args)
    forget = [rl.load_corpus(s, text_field=args.text_field, min_chars=args.min_chars) for s in args.forget]
    names = [c.name for c in forget]
    if len(set(names)) != len(names):
        raise SystemExit(f"error: forget corpora need distinct names, got {names}")
    retain = [rl.load_corpus(s, text_field=args.text_field, min_chars=args.min_chars) for s in args.retain]
    log = log_function(args)
    log(f"Loading {args.model} ...", file=sys.stderr)
    model = rl.load_model(args.model, **load_options(args))
    run = rl.unlearn(
        model, forget, retain[0] if len(retain) == 1 else retain, config,
        out=args.out, resume=args.resume, overwrite=args.overwrite, progress=show_progress(args),
    )
    log(summarize_run(run))
    return 0


def summarize_run(run) -> str:
    """A few lines: status, coefficients, first/last norms and cosines per topic, where things are."""
    lines = [f"RMU {run.status}: {len(run.history)} steps, read {run.config.read_hook}, trained {', '.join(run.trained_parameters)}"]
    for topic in run.topics:
        steps = [h for h in run.history if h["topic"] == topic]
        if not steps:
            continue
        first, last = steps[0], steps[-1]
        lines.append(
            f"  {topic}: c={run.steering_coeffs[topic]:.4g}  forget norm {first['forget_norm']:.4g} -> {last['forget_norm']:.4g}"
            f"  cos(updated, frozen) forget {last.get('forget_cos', float('nan')):.3f}, retain {last['retain_cos']:.3f}"
        )
    if run.out:
        lines.append(f"  run directory: {run.out} (model/ is the edited model)")
    return "\n".join(lines)


def _add_convert(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("convert", help="convert the embedded default model into the cache now")
    parser.add_argument("--name", default="smollm2-135m")

    def convert(args: argparse.Namespace) -> int:
        from rmu_lens.models import embedded_model_dir

        print(embedded_model_dir(args.name))
        return 0

    parser.set_defaults(func=convert)


def _add_corpora(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("corpora", help="list the bundled corpora")

    def show(args: argparse.Namespace) -> int:
        from rmu_lens.data.corpora import BUNDLED, load_corpus

        for name, description in BUNDLED.items():
            print(f"bundled:{name:<14} {len(load_corpus('bundled:' + name)):>4} texts  {description}")
        return 0

    parser.set_defaults(func=show)


def _add_testbed(subparsers: argparse._SubParsersAction) -> None:
    from rmu_lens.testbed.__main__ import add_arguments, run

    parser = subparsers.add_parser(
        "testbed", help="build (or load) the ground-truth testbed, run RMU on it, print accuracy per domain"
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def _add_demo(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the main job end to end: evaluate, RMU, evaluate, analyze, report",
        description=(
            "Load the embedded default model (SmolLM2-135M-Instruct), evaluate it on the six bundled question "
            "sets (cloze mode), run RMU with the demo profile (forget bundled:virology + bundled:cybersecurity, "
            "retain bundled:retain), evaluate again, analyze the representations and write an HTML report. "
            "--testbed does the same on the ground-truth testbed world. Writes OUT/run/, OUT/eval_base.json, "
            "OUT/eval_unlearned.json, OUT/comparison.json, OUT/analysis/, OUT/figures/, OUT/report.html, "
            "OUT/summary.json (docs/report.md)."
        ),
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory (must be new or empty)")
    parser.add_argument("--testbed", action="store_true", help="run on the ground-truth testbed (trained once and cached)")
    parser.add_argument("--limit", type=int, default=None,
                        help="questions per bundled set [30 of 105-130; the testbed always uses all]")
    parser.add_argument("--max-batches", type=int, default=None, help="RMU steps [the profile's]")
    parser.add_argument("--max-texts", type=int, default=None, help="texts per analysis dataset [16; testbed 48]")
    parser.add_argument("--no-analysis", action="store_true", help="skip the representation analysis")
    parser.add_argument("--no-utility", action="store_true", help="skip perplexity per dataset and the generations (utility section)")
    parser.add_argument(
        "--audit", action="store_true",
        help="also run the recovery audits (direction ablation, few-shot fine-tuning, probes): the report's robustness section",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out (only once the demo succeeds)")
    add_flags(parser, output_flags())
    add_device_arguments(parser)
    parser.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from rmu_lens.pipeline import check_output_dir, run_pipeline, smollm2_plan, testbed_plan

    check_output_dir(args.out, args.overwrite)  # before minutes of loading
    for name in ("limit", "max_batches", "max_texts"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} {value}: give a positive number")
    sizes = {"analysis_max_texts": args.max_texts} if args.max_texts else {}
    if args.testbed:
        plan = testbed_plan(**sizes, load_options=load_options(args))
        if args.max_batches:
            plan.config = dataclasses.replace(plan.config, max_batches=args.max_batches)
    else:
        plan = smollm2_plan(**({"question_limit": args.limit} if args.limit else {}), max_batches=args.max_batches,
                            load_options=load_options(args), **sizes)
    plan.utility = not args.no_utility
    run_pipeline(plan, args.out, overwrite=args.overwrite, progress=show_progress(args), analysis=not args.no_analysis,
                 audit=args.audit, log=log_function(args))
    return 0


def _add_analyze(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "analyze",
        help="compare a base model and an RMU run's model inside: norms, directions, probes, damage; write a report",
        description=(
            "Analyze what an RMU run changed inside the model, against the base model. Datasets default to the "
            "run's own forget and retain corpora plus the bundled question sets as text (biology, computing: "
            "adjacent; geography, history: distant). Writes OUT/analysis/, OUT/figures/, OUT/report.html and "
            "OUT/summary.json; give --base-eval and --unlearned-eval (`rmu-lens eval` results) to add accuracy. "
            "Several --unlearned models give one side-by-side report: the base is evaluated and read once, each "
            "model on the same datasets and --questions (default with --base smollm2-135m: the bundled sets' test halves)."
        ),
    )
    add_flags(parser, [model_flag(name="--base", required=True, help="the original model: smollm2-135m, an HF directory or a hub name")])
    parser.add_argument("--unlearned", required=True, nargs="+",
                        help="one or more unlearned models: RMU run directories (run.json, control vectors, model/), HF "
                             "folders or hub names (u, c and l are then estimated); several give one side-by-side report")
    parser.add_argument("--out", required=True, type=Path, help="output directory (must be new or empty)")
    parser.add_argument("--data", nargs="+", default=None, metavar="NAME=SOURCE:ROLE",
                        help="datasets instead of the defaults: a corpus source (bundled:NAME, .jsonl/.txt/.parquet) "
                             "and a role (forget, retain, adjacent, distant); a forget set's NAME is its topic")
    parser.add_argument("--max-texts", type=int, default=32, help="texts per dataset [32]")
    parser.add_argument("--layers", type=int_list, default=None, help="comma-separated layers to read [every layer]")
    parser.add_argument("--base-eval", type=Path, default=None, help="`rmu-lens eval` result of the base model")
    parser.add_argument("--unlearned-eval", type=Path, default=None, help="`rmu-lens eval` result of the unlearned model")
    parser.add_argument("--forget-subjects", nargs="+", default=None, help="subjects of the evaluations that were to be forgotten")
    evaluation = parser.add_argument_group(
        "evaluation of several --unlearned models (the base once, each model on the same questions)")
    evaluation.add_argument("--questions", nargs="+", default=None, metavar="SOURCE[:ROLE]",
                            help="question sets (a file, MMLU CSV folder, bundled:NAME[:SPLIT] or HF dataset) and their "
                                 "role (forget, adjacent, distant; known for bundled sets) [with --base smollm2-135m: "
                                 "the bundled sets' test halves; else none]")
    add_flags(evaluation, eval_flags(limit="first N questions of each subject [all]"))
    evaluation.add_argument("--no-eval", action="store_true", help="no evaluation, not even the default question sets")
    parser.set_defaults(mode=None, batch_size=None)  # None: not given (they apply to several --unlearned models only)
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    add_flags(parser, output_flags())
    add_device_arguments(parser)
    parser.set_defaults(func=run_analyze)


def parse_dataset(text: str) -> tuple[str, str, str]:
    """``NAME=SOURCE:ROLE`` -> (name, source, role); the role is after the last colon.

    Names and paths may both contain ``=``: the split is at the ``=`` after which the source is a
    bundled corpus or an existing file, else at the first ``=``.
    """
    from rmu_lens.analysis.collapse import ROLES

    rest, colon, role = text.rpartition(":")
    splits = [(rest[:i], rest[i + 1:]) for i, char in enumerate(rest) if char == "="]
    found = [(n, s) for n, s in splits if s.startswith("bundled:") or Path(s).expanduser().exists()]
    name, source = (found or splits or [("", "")])[0]
    if not colon or not name or not source or role not in ROLES:
        raise ValueError(f"--data {text!r}: write NAME=SOURCE:ROLE, e.g. virology=bundled:virology:forget; roles: {', '.join(ROLES)}")
    return name, source, role


def run_analyze(args: argparse.Namespace) -> int:
    from rmu_lens.data.corpora import load_corpus
    from rmu_lens.eval import EvalResult
    from rmu_lens.pipeline import check_output_dir, run_analysis

    check_output_dir(args.out, args.overwrite)
    if (args.base_eval is None) != (args.unlearned_eval is None):
        raise ValueError("give both --base-eval and --unlearned-eval (results of `rmu-lens eval`), or neither")
    datasets = None
    if args.data:
        datasets = {}
        for text in args.data:
            name, source, role = parse_dataset(text)
            datasets[name] = (load_corpus(source, name=name), role)
    several = {"--questions": args.questions, "--mode": args.mode, "--batch-size": args.batch_size,
               "--limit": args.limit, "--no-eval": args.no_eval or None}
    if len(args.unlearned) > 1:
        from rmu_lens.pipeline import run_side_by_side

        if args.base_eval or args.forget_subjects:
            raise ValueError("--base-eval/--unlearned-eval/--forget-subjects take one --unlearned model; several "
                             "models are evaluated on the same questions with --questions (and --mode, --limit)")
        if args.no_eval and args.questions:
            raise ValueError("--no-eval and --questions contradict each other: give one")
        run_side_by_side(args.base, args.unlearned, args.out, datasets=datasets, questions=side_by_side_questions(args),
                         question_limit=args.limit, mode=args.mode or "cloze", batch_size=args.batch_size or 16,
                         max_texts=args.max_texts, layers=args.layers, overwrite=args.overwrite,
                         progress=show_progress(args), log=log_function(args), load_options=load_options(args))
        return 0
    given = [flag for flag, value in several.items() if value is not None]
    if given:
        raise ValueError(f"{', '.join(given)} apply to several --unlearned models; for one model evaluate both with "
                         f"`rmu-lens eval` and pass --base-eval and --unlearned-eval")
    evaluations = (EvalResult.load(args.base_eval), EvalResult.load(args.unlearned_eval)) if args.base_eval else None
    run_analysis(
        args.base, args.unlearned[0], args.out, datasets=datasets, max_texts=args.max_texts, layers=args.layers,
        evaluations=evaluations, forget_subjects=args.forget_subjects, overwrite=args.overwrite,
        progress=show_progress(args), log=log_function(args), load_options=load_options(args),
    )
    return 0


def side_by_side_questions(args: argparse.Namespace) -> dict[str, tuple[str, str]] | None:
    """``--questions SOURCE[:ROLE] ...`` as {name: (source, role)} (a bundled set is named after it, so it pairs
    with the dataset of that name); without it the bundled sets' test halves when --base is the embedded
    default (and not --no-eval), else None (no evaluation)."""
    from rmu_lens.models import EMBEDDED_MODELS
    from rmu_lens.pipeline.plans import REPORT_SPLIT, SMOLLM2_QUESTION_SETS
    from rmu_lens.pipeline.side_by_side import QUESTION_ROLES, bundled_role

    if args.no_eval:
        return None
    if not args.questions:
        if args.base not in EMBEDDED_MODELS:
            return None
        return {name: (f"bundled:{name}:{REPORT_SPLIT}", role) for name, role in SMOLLM2_QUESTION_SETS.items()}
    questions = {}
    for text in args.questions:
        source, colon, role = text.rpartition(":")
        if not (colon and source and role in QUESTION_ROLES):
            source, role = text, bundled_role(text)
        name = source.removeprefix("bundled:").partition(":")[0] if source.startswith("bundled:") else source
        questions[name] = (source, role)
    return questions


def build_parser() -> argparse.ArgumentParser:
    parser = DeferredArgumentParser(prog="rmu-lens", description="RMU unlearning on TransformerLens hook points.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add in (_add_unlearn, register_eval_commands, _add_convert, _add_corpora, _add_testbed,
                register_audit_commands, _add_demo, _add_analyze):
        add(subparsers)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


# Exit codes of ``main``, one per kind of failure (docs/robustness.md).
EXIT_INVALID = 2        # a bad setting or input file (also argparse's usage errors)
EXIT_OUTPUT = 3         # an output path that cannot be used, or a run that is already there
EXIT_NOT_FOUND = 4      # a file, folder or model that does not exist
EXIT_PERMISSION = 5     # permission denied
EXIT_DISK_FULL = 6      # no space left on the device (or over quota)
EXIT_LOCKED = 7         # the run directory is in use by another live process
EXIT_DIVERGED = 8       # training produced a NaN/inf loss
EXIT_OS = 9             # any other operating-system error
EXIT_UNSUPPORTED = 10   # a model, layer kind or device rmu_lens does not support
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)


def exit_code(error: BaseException) -> int | None:
    """The exit code for an error ``main`` reports in one line, or None for an unexpected one (a bug)."""
    from rmu_lens.errors import OutputPathError, RMULensError, RunLockedError
    from rmu_lens.rmu.trainer import NonFiniteLossError

    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, RunLockedError):
        return EXIT_LOCKED
    if isinstance(error, NonFiniteLossError):
        return EXIT_DIVERGED
    if isinstance(error, (OutputPathError, FileExistsError, IsADirectoryError, NotADirectoryError)):
        return EXIT_OUTPUT
    if isinstance(error, FileNotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(error, PermissionError):
        return EXIT_PERMISSION
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return EXIT_DISK_FULL
    if isinstance(error, OSError):
        return EXIT_OS
    if isinstance(error, NotImplementedError):
        return EXIT_UNSUPPORTED
    if isinstance(error, (RMULensError, ValueError)):
        return EXIT_INVALID
    return None


def error_line(error: BaseException) -> str:
    """One line for the user: what failed, with the path for OS errors and a word on a full disk."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {error.filename}" if error.filename else ""
        return f"disk full{where}: free some space (or choose another output directory) and run again"
    text = str(error) or type(error).__name__
    if isinstance(error, OSError) and error.strerror:  # without the "[Errno N]" prefix
        text = error.strerror
        if error.filename and str(error.filename) not in text:
            text = f"{text}: {error.filename}"
    return " ".join(text.split())


def _subcommand(parser: argparse.ArgumentParser, name: str | None) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(name)
    return None


def cli_wording(text: str, parser: argparse.ArgumentParser | None) -> str:
    """A library message in the command's own terms: a parameter it names (``overwrite=True``,
    ``text_field=``) becomes the command's flag (``--overwrite``, ``--text-field``) when it has one.

    The library speaks of its parameters only; this is where they are translated for the command line.
    """
    for action in parser._actions if parser is not None else ():
        flags = [option for option in action.option_strings if option.startswith("--")]
        if not flags or not action.dest.isidentifier():
            continue
        flag, dest = flags[0], re.escape(action.dest)
        text = re.sub(rf"(?<![\w.-]){dest}=True(?: \({re.escape(flag)}\))?", flag, text)
        text = re.sub(rf"(?<![\w.-]){dest}=(?=[\s),;]|$)", flag, text)
    return text


def resume_hint(args: argparse.Namespace, argv: Sequence[str]) -> str | None:
    """For ``unlearn``: the command that resumes the run in --out, when it holds a resumable run."""
    if getattr(args, "command", None) != "unlearn":
        return None
    try:
        from rmu_lens.rmu.record import RMURun

        record = RMURun.load(args.out).record
    except Exception:  # no run there, or an unreadable one: nothing to resume
        return None
    if record.get("status") in (None, "finished"):
        return None
    words = [w for w in argv if w not in ("--overwrite", "--resume")]
    return (f"the run in {args.out} keeps its checkpoint at step {record.get('steps_done', 0)}; resume with: "
            f"rmu-lens {shlex.join(words)} --resume")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every expected failure is one line on stderr and a distinct exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with library_progress_bars(show_progress(args)):
            return int(args.func(args) or 0)
    except (Exception, KeyboardInterrupt) as error:
        code = exit_code(error)
        if code is None:
            raise
        line = "interrupted" if code == EXIT_INTERRUPTED else f"error: {cli_wording(error_line(error), _subcommand(parser, args.command))}"
        print(line, file=sys.stderr)
        hint = resume_hint(args, argv) if code in (EXIT_INTERRUPTED, EXIT_DISK_FULL, EXIT_PERMISSION, EXIT_OS) else None
        if hint:
            print(hint, file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
