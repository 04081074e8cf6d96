"""``rmu-lens sweep``: search RMU settings for the forget/retain trade-off (heavy imports inside the command).

    rmu-lens sweep --model smollm2-135m --space space.yaml --trials 24 --out sweeps/s1 [--storage URL]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rmu_lens.devices import add_device_arguments, load_options


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``sweep`` subcommand."""
    from rmu_lens.sweep.objectives import DEFAULT_QUESTIONS

    parser = subparsers.add_parser(
        "sweep", help="search RMU settings (Optuna) for the forget/retain Pareto front",
        description=(
            "Run an Optuna multi-objective study over RMU settings on one loaded model: minimize forget accuracy "
            "above chance, maximize distant retain accuracy (adjacent accuracy recorded). Writes OUT/study.journal "
            "(open with optuna-dashboard; a killed sweep resumes from it), OUT/trials.csv, OUT/trials.json, "
            "OUT/pareto.png, OUT/front/trial_NNNN.json (configs for `rmu-lens unlearn --config`) and OUT/sweep.html "
            "(docs/sweep.md)."
        ),
    )
    parser.add_argument("--model", default="smollm2-135m", help="smollm2-135m (default), a local HF directory, or a hub name")
    parser.add_argument("--space", type=Path, default=None, help="search space file (.yaml/.yml/.json) [the default space]")
    parser.add_argument("--trials", type=int, default=24, help="trials in the study, all workers together [24]")
    parser.add_argument("--out", required=True, type=Path, help="sweep directory (resumed when it holds the same study)")
    parser.add_argument("--storage", default=None,
                        help="an RDB URL (sqlite:///s.db, postgresql://...) or a .journal file shared by several workers "
                             "[OUT/study.journal]")
    parser.add_argument("--study-name", default="rmu-sweep", help="study name inside the storage [rmu-sweep]")
    parser.add_argument("--profile", default="demo", help="template RMUConfig preset for settings not searched [demo]")
    parser.add_argument("--config", type=Path, default=None, help="template RMUConfig JSON instead of --profile")
    parser.add_argument("--forget", nargs="+", default=["bundled:virology", "bundled:cybersecurity"], metavar="CORPUS",
                        help="forget corpora, one per topic [bundled:virology bundled:cybersecurity]")
    parser.add_argument("--retain", nargs="+", default=["bundled:retain"], metavar="CORPUS", help="retain corpus [bundled:retain]")
    parser.add_argument("--forget-questions", nargs="+", default=DEFAULT_QUESTIONS["forget"], metavar="SOURCE",
                        help=f"forget question sets [{' '.join(DEFAULT_QUESTIONS['forget'])}]")
    parser.add_argument("--retain-questions", nargs="+", default=DEFAULT_QUESTIONS["retain"], metavar="SOURCE",
                        help=f"distant question sets, the retain objective [{' '.join(DEFAULT_QUESTIONS['retain'])}]")
    parser.add_argument("--adjacent-questions", nargs="*", default=DEFAULT_QUESTIONS["adjacent"], metavar="SOURCE",
                        help=f"adjacent question sets, recorded per trial [{' '.join(DEFAULT_QUESTIONS['adjacent'])}]")
    parser.add_argument("--mode", choices=("letter", "cloze"), default="cloze", help="evaluation mode [cloze]")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed [0]")
    parser.add_argument("--no-prune", action="store_true", help="record the checkpoint signals but never prune")
    parser.add_argument("--color-by", default=None, help="searched setting that colours the front figure [layer]")
    add_device_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run_sweep)


def run_sweep(args: argparse.Namespace) -> int:
    import rmu_lens as rl
    from rmu_lens.rmu.config import RMUConfig
    from rmu_lens.sweep.pruning import PruneRule
    from rmu_lens.sweep.space import SearchSpace
    from rmu_lens.sweep.study import sweep

    space = SearchSpace.parse(args.space)  # a bad space fails before minutes of loading
    if args.trials < 1:
        raise ValueError(f"--trials {args.trials}: give a positive number")
    if args.config is not None:
        import json

        data = json.loads(args.config.read_text(encoding="utf-8"))
        template = RMUConfig.from_dict(data.get("config", data))
    else:
        template = RMUConfig.profile(args.profile)
    questions = {"forget": args.forget_questions, "retain": args.retain_questions,
                 "adjacent": args.adjacent_questions or None}
    forget = [rl.load_corpus(s) for s in args.forget]
    retain = [rl.load_corpus(s) for s in args.retain]
    print(f"Loading {args.model} ...", file=sys.stderr)
    model = rl.load_model(args.model, **load_options(args))
    result = sweep(model, forget, retain[0] if len(retain) == 1 else retain, questions, space, args.trials, args.out,
                   args.storage, config=template, study_name=args.study_name, seed=args.seed,
                   prune=PruneRule(enabled=not args.no_prune), mode=args.mode, color_by=args.color_by,
                   progress=not args.no_progress)
    print(result.table())
    print(f"wrote {args.out} (trials.csv, trials.json, pareto.png, front/, sweep.html)", file=sys.stderr)
    return 0
