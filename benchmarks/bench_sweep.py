"""Sweep trials: one model reused (restored tensors, shared batches and prefixes) vs the model reloaded per trial.

Both sides run the same trial configs (drawn once from the space with a seeded random sampler),
interleaved trial by trial in one process (alternating which goes first) so machine load hits both alike. A trial is what the sweep
does: train RMU with the trial's config, then evaluate the forget, distant and adjacent question sets.

    python benchmarks/bench_sweep.py                         # a tiny random llama (seconds)
    python benchmarks/bench_sweep.py --model smollm2-135m    # the embedded default, demo template, ~100 questions/set

Prints per-trial seconds of each side (median), their ratio, and an estimate of a 24-trial sweep
(base evaluation + 24 reused trials) from the measured trials.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def inputs(args: argparse.Namespace, workdir: Path):
    """(model source, forget, retain, questions, space, template config)."""
    import rmu_lens as rl
    from rmu_lens.models import build_random_model, embedded_model_dir, load_model, save_hf_model
    from rmu_lens.rmu import RMUConfig

    if args.model == "tiny":
        from tests.helpers import texts
        from tests.sweep_setup import QUESTIONS, SPACE, tiny_config

        model, tokenizer = build_random_model("llama", n_layers=4, d_model=64, seed=0)
        source = save_hf_model(load_model(model, tokenizer=tokenizer), workdir / "tiny")
        return source, texts("bio", 16), texts("retain", 16), QUESTIONS, {**SPACE, "layer": {"choices": [1, 2, 3]}}, \
            tiny_config(max_batches=args.steps or 8)
    source = embedded_model_dir(args.model) if args.model == "smollm2-135m" else args.model
    limit = args.questions
    questions = {
        "forget": rl.load_questions("bundled:virology")[: limit // 2] + rl.load_questions("bundled:cybersecurity")[: limit - limit // 2],
        "retain": rl.load_questions("bundled:geography")[:limit],
        "adjacent": rl.load_questions("bundled:biology")[:limit],
    }
    forget = [rl.load_corpus("bundled:virology"), rl.load_corpus("bundled:cybersecurity")]
    from rmu_lens.sweep.space import DEFAULT_SPACE

    space = {k: v for k, v in DEFAULT_SPACE.items() if k != "max_batches"}  # every trial the same length
    template = RMUConfig.profile("demo", **({"max_batches": args.steps} if args.steps else {}))
    return source, forget, rl.load_corpus("bundled:retain"), questions, space, template


def trial_configs(space_spec: dict, template, n: int):
    import optuna

    from rmu_lens.sweep.space import SearchSpace

    space = SearchSpace.parse(space_spec)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    return [space.suggest(study.ask(), template) for _ in range(n)]


def evaluate_all(model, questions) -> dict:
    from rmu_lens.eval import evaluate

    return {role: evaluate(model, qs, progress=False).accuracy for role, qs in questions.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny (default), smollm2-135m, or an HF directory")
    parser.add_argument("--trials", type=int, default=3, help="trials per side [3]")
    parser.add_argument("--steps", type=int, default=None, help="RMU steps per trial [the template's: demo 40, tiny 8]")
    parser.add_argument("--questions", type=int, default=100, help="questions per set for a real model [100]")
    args = parser.parse_args()

    import torch

    from rmu_lens.models import load_model
    from rmu_lens.rmu import unlearn
    from rmu_lens.sweep.reuse import TrialRunner

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        source, forget, retain, questions, space, template = inputs(args, Path(tmp))
        configs = trial_configs(space, template, args.trials)
        started = time.perf_counter()
        model = load_model(source)
        load_seconds = time.perf_counter() - started
        started = time.perf_counter()
        base = evaluate_all(model, questions)
        base_seconds = time.perf_counter() - started
        runner = TrialRunner(model, forget, retain)
        reuse, reload = [], []
        for i, config in enumerate(configs):
            def reused_trial():
                started = time.perf_counter()
                with runner.trained(config) as run:
                    accuracies = evaluate_all(model, questions)
                reuse.append(time.perf_counter() - started)
                return run, accuracies

            def reloaded_trial():
                started = time.perf_counter()
                fresh = load_model(source)
                unlearn(fresh, forget, retain, config, progress=False)
                accuracies = evaluate_all(fresh, questions)
                reload.append(time.perf_counter() - started)
                return accuracies

            # Alternate which side goes first, so warm-up and load changes do not favour one side.
            if i % 2 == 0:
                run, reused = reused_trial()
                reloaded = reloaded_trial()
            else:
                reloaded = reloaded_trial()
                run, reused = reused_trial()
            same = "same accuracies" if reused == reloaded else f"DIFFERENT accuracies {reused} vs {reloaded}"
            print(f"trial {i}: layer {config.layer}, update {config.update_layers}, lr {config.lr:.3g}, "
                  f"{len(run.history)} steps: reuse {reuse[-1]:.1f} s, reload {reload[-1]:.1f} s ({same})", flush=True)
    cache = runner.prefix_cache
    r, f = statistics.median(reuse), statistics.median(reload)
    print(f"\nmodel {args.model}: load {load_seconds:.1f} s, base evaluation {base_seconds:.1f} s, base {base}")
    print(f"per trial (median of {len(configs)}): reuse + shared prefix {r:.1f} s, reload per trial {f:.1f} s, "
          f"ratio reload/reuse {f / r:.2f}x; prefix cache hits {cache.hits}, misses {cache.misses}")
    print(f"estimated 24-trial sweep: {(load_seconds + base_seconds + 24 * r) / 60:.1f} min with reuse, "
          f"{(base_seconds + 24 * f) / 60:.1f} min reloading")


if __name__ == "__main__":
    main()
