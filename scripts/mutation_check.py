"""A small mutation check: plant realistic one-line bugs in a copy of the package and see which tests catch them.

Each mutation replaces one exact line fragment in one source file (it must occur exactly once) and
names the fast tests that should fail on it. The script copies ``rmu_lens/``, ``tests/`` and
``pyproject.toml`` to a temporary directory, first runs every named test on the unmutated copy
(they must pass), then applies one mutation at a time, runs its tests there and restores the file.
A mutation is *killed* when its tests fail, *survived* when they pass. Not part of CI (minutes)::

    python scripts/mutation_check.py            # every mutation
    python scripts/mutation_check.py --list     # names only
    python scripts/mutation_check.py --only probe-fit-on-every-row metrics-every-off-by-one

Exit status: 0 if every mutation was killed, 1 if any survived, 2 if the unmutated tests fail.
docs/testing.md lists the mutations and what the last run found.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    """A one-line bug: ``old`` becomes ``new`` in ``path``; ``tests`` are pytest node ids or ``file::-k expr``."""

    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS = [
    Mutation("retain-cache-keyed-without-retain-set", "rmu_lens/rmu/trainer.py",
             "self._frozen_retain((retain_set, retain_index), retain_batch)",
             "self._frozen_retain((0, retain_index), retain_batch)",
             ("tests/test_rmu_parity.py::-k per_topic",)),
    Mutation("probe-fit-on-every-row", "rmu_lens/analysis/probes.py",
             "probe = LinearProbe(C=C, random_state=seed).fit(X_base[hook][train], y[train])",
             "probe = LinearProbe(C=C, random_state=seed).fit(X_base[hook], y)",
             ("tests/test_analysis_probes.py",)),
    Mutation("forget-cosine-over-pads-and-position-0", "rmu_lens/rmu/trainer.py",
             'record["forget_cos"] = mean_token_cosine(updated_forget, frozen_forget, forget_tokens)',
             'record["forget_cos"] = mean_token_cosine(updated_forget, frozen_forget, torch.ones_like(forget_tokens))',
             ("tests/test_rmu_history_metrics.py",)),
    Mutation("metric-mask-keeps-the-first-token", "rmu_lens/rmu/trainer.py",
             "    return attention_mask.bool() & ~first",
             "    return attention_mask.bool()",
             ("tests/test_rmu_history_metrics.py",)),
    Mutation("metrics-every-off-by-one", "rmu_lens/rmu/trainer.py",
             "if self.step % cfg.metrics_every == 0:",
             "if (self.step + 1) % cfg.metrics_every == 0:",
             ("tests/test_rmu_history_metrics.py",)),
    Mutation("recovery-interval-at-90-percent", "rmu_lens/audit/recovery_stats.py",
             "np.percentile(ratios, [2.5, 97.5])",
             "np.percentile(ratios, [5, 95])",
             ("tests/test_audit_recovery.py",)),
    Mutation("compare-ignores-the-metric", "rmu_lens/eval/compare.py",
             "base_outcomes, new_outcomes = base_result.outcomes(metric), new_result.outcomes(metric)",
             "base_outcomes, new_outcomes = base_result.outcomes(), new_result.outcomes()",
             ("tests/test_eval_compare_metric.py",)),
    Mutation("compare-command-swaps-base-and-new", "rmu_lens/eval/commands.py",
             "comparison = compare(args.base, args.new,",
             "comparison = compare(args.new, args.base,",
             ("tests/test_eval_commands.py::-k compare_command",)),
    Mutation("legacy-adamw-decay-without-lr", "rmu_lens/rmu/optim.py",
             'p.add_(p, alpha=-group["lr"] * group["weight_decay"])',
             'p.add_(p, alpha=-group["weight_decay"])',
             ("tests/test_rmu_optim.py",)),
    Mutation("truncation-one-shared-cut-for-all-choices", "rmu_lens/eval/scoring.py",
             "own_rows = not packed or (",
             "own_rows = not packed and (",
             ("tests/test_eval_truncation.py",)),
    Mutation("truncation-cuts-one-token-too-many", "rmu_lens/eval/scoring.py",
             "context = context[len(context) + longest - 1 - max_length:]",
             "context = context[len(context) + longest - max_length:]",
             ("tests/test_eval_truncation.py",)),
    Mutation("config-file-overrides-flags", "rmu_lens/cli.py",
             "return RMUConfig.profile(args.profile, **{**base, **overrides})",
             "return RMUConfig.profile(args.profile, **{**overrides, **base})",
             ("tests/test_cli_commands.py::-k override",)),
    Mutation("figure-plots-unlearned-as-base", "rmu_lens/plots/representations.py",
             'ax.plot(collapse.layers, collapse.metrics[name]["base"][metric], color',
             'ax.plot(collapse.layers, collapse.metrics[name]["unlearned"][metric], color',
             ("tests/test_plots_data.py::-k norm_figure",)),
    Mutation("pca-panels-swapped", "rmu_lens/plots/representations.py",
             'for ax, model in zip(axes, ("base", "unlearned")):',
             'for ax, model in zip(axes, ("unlearned", "base")):',
             ("tests/test_plots_data.py::-k pca",)),
    Mutation("training-curve-frozen-norm-is-forget-norm", "rmu_lens/plots/training.py",
             'frozen_steps, frozen = _series(history, "frozen_forget_norm", topic)',
             'frozen_steps, frozen = _series(history, "forget_norm", topic)',
             ("tests/test_plots_data.py::-k training_curves",)),
    Mutation("layer-study-update-layers-l-1", "rmu_lens/audit/layers.py",
             "update = list(range(max(0, layer - 2), layer + 1))",
             "update = list(range(max(0, layer - 1), layer + 1))",
             ("tests/test_layer_study.py::-k settings_describe",)),
    Mutation("audit-baseline-retain-from-base-twice", "rmu_lens/audit/suite.py",
             "score(base, retain_questions), score(unlearned, retain_questions))",
             "score(base, retain_questions), score(base, retain_questions))",
             ("tests/test_audit_cli_paths.py::-k audit_on_a_local_model",)),
]


def pytest_args(test: str) -> list[str]:
    """``file::-k expr`` selects by keyword inside a file; anything else is a node id or file."""
    if "::-k " in test:
        path, expression = test.split("::-k ", 1)
        return [path, "-k", expression]
    return [test]


def run_tests(copy_root: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, float]:
    env = dict(os.environ, PYTHONPATH=str(copy_root))
    started = time.perf_counter()
    code = 0
    for test in tests:
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                   "-m", "not integration and not browser", *pytest_args(test)]
        try:
            done = subprocess.run(command, cwd=copy_root, env=env, capture_output=True, text=True, timeout=timeout)
            code = max(code, done.returncode)
        except subprocess.TimeoutExpired:
            code = max(code, 124)
        if code:
            break
    return code, time.perf_counter() - started


def make_copy(destination: Path) -> Path:
    for name in ("rmu_lens", "tests"):
        shutil.copytree(ROOT / name, destination / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(ROOT / "pyproject.toml", destination / "pyproject.toml")
    return destination


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=None, help="run only these mutations (by name)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per test run [900]")
    args = parser.parse_args(argv)
    if args.list:
        for m in MUTATIONS:
            print(f"{m.name:45} {m.path}")
        return 0
    chosen = [m for m in MUTATIONS if args.only is None or m.name in args.only]
    unknown = sorted(set(args.only or []) - {m.name for m in MUTATIONS})
    if unknown:
        parser.error(f"unknown mutation(s) {unknown}; see --list")
    for m in chosen:  # every mutation must apply to the current source
        count = (ROOT / m.path).read_text(encoding="utf-8").count(m.old)
        if count != 1:
            parser.error(f"{m.name}: {m.old!r} occurs {count} times in {m.path} (need exactly once); update the mutation")

    with tempfile.TemporaryDirectory(prefix="rmu_lens_mutation_") as temp:
        copy_root = make_copy(Path(temp))
        baseline = sorted({t for m in chosen for t in m.tests})
        code, seconds = run_tests(copy_root, tuple(baseline), args.timeout)
        print(f"unmutated: {'pass' if code == 0 else 'FAIL'} ({seconds:.0f} s)", flush=True)
        if code:
            print("The named tests fail without any mutation: fix them first.")
            return 2
        survived = []
        for m in chosen:
            target = copy_root / m.path
            original = target.read_text(encoding="utf-8")
            target.write_text(original.replace(m.old, m.new), encoding="utf-8")
            try:
                code, seconds = run_tests(copy_root, m.tests, args.timeout)
            finally:
                target.write_text(original, encoding="utf-8")
            verdict = "killed" if code == 1 else ("survived" if code == 0 else f"error (pytest exit {code})")
            if code == 0:
                survived.append(m.name)
            print(f"{verdict:9} {m.name:45} ({seconds:.0f} s) {' '.join(m.tests)}", flush=True)
    print(f"{len(chosen) - len(survived)} of {len(chosen)} killed" + (f"; survived: {', '.join(survived)}" if survived else ""))
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
