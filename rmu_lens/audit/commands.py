"""`rmu-lens audit` and `rmu-lens layer-study`: argparse subcommands (heavy imports happen inside them).

    rmu-lens audit --base smollm2-135m --unlearned runs/bio/ --forget-data bundled:virology \\
        --retain-data bundled:geography --forget-corpus bundled:virology --retain-corpus bundled:retain --out audit/
    rmu-lens audit --testbed --unlearned runs/testbed/ --out audit/
    rmu-lens layer-study --testbed --layers 0,1,2,3 --out layer-study/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rmu_lens.devices import add_device_arguments, load_options
from rmu_lens.flags import (
    add_flags,
    add_when_used,
    config_flags,
    config_overrides,
    eval_flags,
    int_list,
    log_function,
    model_flag,
    output_flags,
    show_progress,
)


def _layer_sets(text: str) -> list[list[int]]:
    return [int_list(part) for part in text.split(";") if part.strip()]


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data (or --testbed)")
    data.add_argument("--testbed", action="store_true",
                      help="use the ground-truth testbed: its model as base, its forget/distant-domain questions and corpora")
    data.add_argument("--testbed-seed", type=int, default=0, help="testbed seed [0]")
    data.add_argument("--testbed-overlap", type=float, default=0.5, help="testbed overlap [0.5]")
    data.add_argument("--forget-data", help="forget questions: file, bundled:NAME or HF dataset (as `rmu-lens eval --data`)")
    data.add_argument("--retain-data", nargs="+", default=None, help="retain questions, one or more sources")
    data.add_argument("--forget-corpus", help="forget-domain text: bundled:NAME, .jsonl/.txt/.parquet, or HF dataset")
    data.add_argument("--retain-corpus", help="unrelated text for the fine-tuning audit (e.g. bundled:retain)")
    add_flags(parser, eval_flags(), "evaluation")
    add_device_arguments(parser)
    add_flags(parser, output_flags())


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``audit`` and ``layer-study`` subcommands; each sets ``func`` taking the parsed args."""
    parser = subparsers.add_parser(
        "audit", help="how robust is an unlearning run? direction ablation, few-shot fine-tuning, probes",
        description="Audit an RMU run: project the estimated RMU direction out of the residual stream, fine-tune "
        "copies on a few examples, and probe the forget answers per layer; report the share of the removed forget "
        "accuracy each recovers (95% paired bootstrap intervals). Writes OUT/audit.json, OUT/directions.safetensors "
        "and OUT/figures/*.png.",
    )
    add_flags(parser, [model_flag(name="--base", default=None,
                                  help="the model before unlearning (smollm2-135m, an HF dir); --testbed sets it")])
    parser.add_argument("--unlearned", required=True, type=Path, help="the rmu_lens run directory (run.json, model/)")
    parser.add_argument("--out", required=True, type=Path, help="directory for audit.json and figures")
    parser.add_argument("--layer-sets", type=_layer_sets, default=None,
                        help="ablation layer sets, e.g. '7;5,6,7' [the read layer; the trained layers; first trained to last]")
    add_when_used(parser, add_finetune_flags)  # FinetuneConfig's module imports torch: only when `audit` runs
    parser.add_argument("--no-ablation", action="store_true", help="skip the direction-ablation audit")
    parser.add_argument("--no-finetune", action="store_true", help="skip the fine-tuning audit")
    parser.add_argument("--no-probe", action="store_true", help="skip the probe audit")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap, control directions and example draws [0]")
    _add_data_arguments(parser)
    parser.set_defaults(func=run_audit)

    study = subparsers.add_parser(
        "layer-study", help="sweep the RMU layer for plain and adaptive coefficients",
        description="Run RMU at each layer l (update layers l-2..l) with a fixed c (plain) and with the adaptive "
        "coefficient, and measure forget/retain accuracy and ablation recovery per layer. Writes "
        "OUT/layer_study.json and OUT/figures/layer_study.png.",
    )
    add_flags(study, [model_flag(default=None, help="model to unlearn (smollm2-135m, an HF dir); --testbed sets it")])
    study.add_argument("--layers", type=int_list, required=True, help="comma-separated RMU layers to try")
    study.add_argument("--modes", default="plain,adaptive", help="plain, adaptive or both [plain,adaptive]")
    study.add_argument("--profile", default=None, help="RMUConfig preset for everything but the layer [testbed preset / demo]")
    study.add_argument("--steering-coeff", type=float, default=None, help="plain RMU's fixed c [adaptive c at the profile's layer]")
    study.add_argument("--adaptive-beta", type=float, default=None, help="adaptive beta [the profile's, else 5]")
    study.add_argument("--no-ablation", action="store_true", help="skip the ablation recovery per run")
    study.add_argument("--out", required=True, type=Path, help="directory for layer_study.json and the figure")
    _add_data_arguments(study)
    study.set_defaults(func=run_layer_study)


FINETUNE_FLAGS = ("n_examples", "method", "layers", "steps", "lr")
"""FinetuneConfig fields with an ``--finetune-*`` flag (the seed is the audit's ``--seed``)."""


def add_finetune_flags(parser: argparse.ArgumentParser) -> None:
    """``--finetune-n``, ``--finetune-method`` ...: flags from FinetuneConfig's fields (rmu_lens.flags)."""
    from rmu_lens.audit.finetune import FinetuneConfig

    add_flags(parser, config_flags(FinetuneConfig, prefix="finetune", names=FINETUNE_FLAGS), "fine-tuning audit")


def _load_data(args: argparse.Namespace):
    """(base model source or bridge, forget questions, retain questions, forget corpus, retain corpus, testbed)."""
    from rmu_lens.data.corpora import load_corpus
    from rmu_lens.eval import load_questions

    if args.testbed:
        from rmu_lens.testbed import load_testbed

        testbed = load_testbed(seed=args.testbed_seed, overlap=args.testbed_overlap, progress=show_progress(args))
        retain_questions = [q for domain in testbed.distant_domains for q in testbed.questions(domain)]
        return (testbed.model_dir, testbed.questions(testbed.forget_domain), retain_questions,
                testbed.forget_corpus(), testbed.retain_corpus(), testbed)
    missing = [flag for flag, value in (("--forget-data", args.forget_data), ("--forget-corpus", args.forget_corpus)) if not value]
    if missing:
        raise ValueError(f"{' and '.join(missing)} required (or pass --testbed to use the ground-truth testbed)")
    forget_questions = load_questions(args.forget_data, limit=args.limit)
    retain_questions = [q for source in args.retain_data or [] for q in load_questions(source, limit=args.limit)]
    retain_corpus = load_corpus(args.retain_corpus) if args.retain_corpus else None
    return None, forget_questions, retain_questions or None, load_corpus(args.forget_corpus), retain_corpus, None


def run_audit(args: argparse.Namespace) -> int:
    from rmu_lens.audit.suite import audit
    from rmu_lens.audit.finetune import FinetuneConfig
    from rmu_lens.models import load_model
    from rmu_lens.rmu.record import RMURun
    from rmu_lens.rmu.rundir import check_writable_directory

    check_writable_directory(args.out, "--out")
    run = RMURun.load(args.unlearned)  # the whole record checked, a clear error before any model is loaded
    if not run.model_dir.is_dir():
        raise FileNotFoundError(f"{args.unlearned} has no model/ directory: the run did not finish; resume it first")
    base_source, forget_questions, retain_questions, forget_corpus, retain_corpus, _ = _load_data(args)
    base_source = args.base or base_source
    if base_source is None:
        raise ValueError("--base is required: the model the run started from (or pass --testbed)")
    finetune = None if args.no_finetune else FinetuneConfig(
        **config_overrides(args, FinetuneConfig, prefix="finetune"), seed=args.seed)
    if finetune is not None and retain_corpus is None:
        raise ValueError("the fine-tuning audit needs --retain-corpus (unrelated text), or pass --no-finetune")
    base = load_model(base_source, **load_options(args))
    unlearned = load_model(run.model_dir, **load_options(args))
    result = audit(
        base, unlearned, run=run, forget_questions=forget_questions, retain_questions=retain_questions,
        forget_texts=forget_corpus.texts, retain_texts=retain_corpus.texts if retain_corpus else None,
        layer_sets=args.layer_sets, ablation=not args.no_ablation, finetune=finetune, probe=not args.no_probe,
        mode=args.mode, batch_size=args.batch_size, seed=args.seed, out=args.out, progress=show_progress(args),
    )
    log = log_function(args)
    log("\n".join(result.headline()))
    log(f"wrote {args.out / 'audit.json'}", file=sys.stderr)
    return 0


def run_layer_study(args: argparse.Namespace) -> int:
    from rmu_lens.audit.layers import layer_study
    from rmu_lens.models import load_model
    from rmu_lens.rmu.config import RMUConfig
    from rmu_lens.rmu.rundir import check_writable_directory

    check_writable_directory(args.out, "--out")  # before any model is loaded
    model_source, forget_questions, retain_questions, forget_corpus, retain_corpus, testbed = _load_data(args)
    model_source = args.model or model_source
    if model_source is None:
        raise ValueError("--model is required (or pass --testbed)")
    if retain_corpus is None:
        raise ValueError("--retain-corpus is required: RMU needs retain text")
    if args.profile:
        config = RMUConfig.profile(args.profile)
    elif testbed is not None:
        from rmu_lens.testbed import testbed_rmu_config

        config = testbed_rmu_config()
    else:
        config = RMUConfig.profile("demo")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    model = load_model(model_source, **load_options(args))
    study = layer_study(
        model, forget_corpus, retain_corpus, forget_questions, retain_questions, layers=args.layers, config=config,
        modes=modes, steering_coeff=args.steering_coeff, adaptive_beta=args.adaptive_beta, ablation=not args.no_ablation,
        mode=args.mode, batch_size=args.batch_size, progress=show_progress(args), out=args.out,
    )
    log = log_function(args)
    log(study.table())
    log(f"wrote {args.out / 'layer_study.json'}", file=sys.stderr)
    return 0
