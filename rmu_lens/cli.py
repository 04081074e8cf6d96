"""The ``rmu-lens`` command line. Heavy imports (torch, TransformerLens) happen inside the commands."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rmu_lens.eval.commands import register as register_eval_commands

# RMUConfig field -> (flag, help). Every field has a flag (a test checks it).
CONFIG_FLAGS: dict[str, tuple[str, str]] = {
    "layer": ("--layer", "layer l whose output (blocks.{l}.hook_resid_post) RMU steers [7]"),
    "update_layers": ("--update-layers", "comma-separated layers whose parameters are trained [l-2,l-1,l]"),
    "param_names": ("--param-names", "comma-separated trained tensors by bridge or HF name; {layer} expands to "
                    "each update layer; globs allowed [blocks.{layer}.mlp.out.weight = HF down_proj]"),
    "hook_point": ("--hook-point", "hook point the losses read [blocks.{layer}.hook_resid_post]"),
    "steering_coeff": ("--steering-coeff", "c, the norm of the forget target c·u; one value or one per topic "
                       "(comma-separated) [6.5]"),
    "alpha": ("--alpha", "retain-loss weight; one value or one per topic [1200]"),
    "adaptive_beta": ("--adaptive", "Adaptive RMU: c = BETA x mean token norm of the frozen layer-l "
                      "activations on each topic's first batch (overrides --steering-coeff; paper: 5)"),
    "lr": ("--lr", "learning rate [5e-5]"),
    "batch_size": ("--batch-size", "texts per batch [4]"),
    "max_batches": ("--max-batches", "total steps, topics alternating; capped by the data unless --cycle [150]"),
    "max_length": ("--max-length", "forget-text token limit, one value or one per topic [512]"),
    "retain_max_length": ("--retain-max-length", "retain-text token limit [512]"),
    "cycle": ("--cycle", "cycle through the corpora so a run can be longer than the data"),
    "seed": ("--seed", "seed of the control vectors [42]"),
    "reference": ("--reference", "reproduce the official code: left padding, positions 0..T-1 with pads, "
                  "losses over every position, legacy AdamW"),
    "optimizer": ("--optimizer", "legacy_adamw (transformers 4.x AdamW, as the official code) or adamw (torch) "
                  "[legacy_adamw]"),
    "adam_eps": ("--adam-eps", "optimizer eps [1e-6]"),
    "weight_decay": ("--weight-decay", "optimizer weight decay [0]"),
    "checkpoint_every": ("--checkpoint-every", "steps between checkpoints; 0 = only on interruption [50]"),
    "metrics_every": ("--metrics-every", "steps between frozen forget passes for the cosine metric [1]"),
}


def _floats(text: str) -> float | list[float]:
    values = [float(v) for v in text.split(",") if v.strip()]
    return values[0] if len(values) == 1 else values


def _ints(text: str) -> int | list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    return values[0] if len(values) == 1 else values


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _str_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


CONFIG_TYPES: dict[str, Any] = {
    "layer": int, "update_layers": _int_list, "param_names": _str_list, "hook_point": str,
    "steering_coeff": _floats, "alpha": _floats, "adaptive_beta": float, "lr": float, "batch_size": int,
    "max_batches": int, "max_length": _ints, "retain_max_length": int, "seed": int, "optimizer": str,
    "adam_eps": float, "weight_decay": float, "checkpoint_every": int, "metrics_every": int,
}
BOOLEAN_FIELDS = ("cycle", "reference")


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
    parser.add_argument("--model", default="smollm2-135m", help="smollm2-135m (default), a local HF directory, or a hub name")
    parser.add_argument("--forget", nargs="+", required=True, metavar="CORPUS",
                        help="one corpus per forget topic: bundled:NAME, a .jsonl/.txt/.parquet file, or an HF dataset")
    parser.add_argument("--retain", nargs="+", required=True, metavar="CORPUS",
                        help="one retain corpus for all topics, or one per forget topic")
    parser.add_argument("--out", required=True, type=Path, help="run directory to write")
    parser.add_argument("--profile", default=None, help="start from a named preset: zephyr, yi-34b, demo")
    parser.add_argument("--config", type=Path, default=None, help="start from an RMUConfig JSON file (e.g. a run.json's config)")
    parser.add_argument("--text-field", default="text", help="JSON/parquet field holding the text [text]")
    parser.add_argument("--min-chars", type=int, default=50, help="drop texts of this many characters or fewer [50, as the official code]")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    parser.add_argument("--device", default=None, help="torch device, e.g. cuda or cpu [auto]")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"], help="model dtype [float32]")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    group = parser.add_argument_group("RMU settings (override the profile / config file)")
    for field, (flag, text) in CONFIG_FLAGS.items():
        if field in BOOLEAN_FIELDS:
            group.add_argument(flag, dest=field, action="store_true", default=None, help=text)
        else:
            group.add_argument(flag, dest=field, type=CONFIG_TYPES[field], default=None, help=text)
    parser.set_defaults(func=run_unlearn)


def build_config(args: argparse.Namespace):
    """RMUConfig from --config / --profile, then the explicit flags."""
    from rmu_lens.rmu.config import RMUConfig

    base: dict[str, Any] = {}
    if args.config is not None:
        data = json.loads(Path(args.config).read_text(encoding="utf-8"))
        base = data.get("config", data)
    overrides = {field: getattr(args, field) for field in CONFIG_FLAGS if getattr(args, field) is not None}
    if args.profile:
        return RMUConfig.profile(args.profile, **{**base, **overrides})
    return RMUConfig.from_dict({**base, **overrides})


def run_unlearn(args: argparse.Namespace) -> int:
    import torch

    import rmu_lens as rl

    config = build_config(args)
    forget = [rl.load_corpus(s, text_field=args.text_field, min_chars=args.min_chars) for s in args.forget]
    names = [c.name for c in forget]
    if len(set(names)) != len(names):
        raise SystemExit(f"error: forget corpora need distinct names, got {names}")
    retain = [rl.load_corpus(s, text_field=args.text_field, min_chars=args.min_chars) for s in args.retain]
    dtype = getattr(torch, args.dtype) if args.dtype else None
    print(f"Loading {args.model} ...", file=sys.stderr)
    model = rl.load_model(args.model, device=args.device, dtype=dtype)
    run = rl.unlearn(
        model, forget, retain[0] if len(retain) == 1 else retain, config,
        out=args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress,
    )
    print(summarize_run(run))
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rmu-lens", description="RMU unlearning on TransformerLens hook points.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_unlearn(subparsers)
    register_eval_commands(subparsers)
    _add_convert(subparsers)
    _add_corpora(subparsers)
    _add_testbed(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, NotImplementedError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
