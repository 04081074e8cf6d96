"""A sweep worker on a tiny model, for tests/test_sweep_workers.py.

    python -m tests.sweep_child OUT N_TRIALS [--hang-at-step K]

Runs ``rmu_lens.sweep`` on the tiny random llama of the sweep tests with the journal storage in OUT.
``--hang-at-step K``: at the K-th RMU step of this process, write OUT/hanging and sleep, so the test can
kill the worker in the middle of a trial.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tests.sweep_setup import QUESTIONS, SPACE, sweep_inputs


def main(argv: list[str]) -> None:
    out, n_trials = Path(argv[0]), int(argv[1])
    hang_at = int(argv[argv.index("--hang-at-step") + 1]) if "--hang-at-step" in argv else None
    steps = {"n": 0}

    def on_step(record: dict) -> None:
        steps["n"] += 1
        if steps["n"] == hang_at:
            (out / "hanging").write_text("1")
            time.sleep(600)

    import rmu_lens as rl
    from rmu_lens.sweep import PruneRule

    model, forget, retain, config = sweep_inputs()
    rl.sweep(model, forget, retain, QUESTIONS, SPACE, n_trials, out, config=config, prune=PruneRule(enabled=False),
             trainer_callbacks=[on_step], progress=False)


if __name__ == "__main__":
    main(sys.argv[1:])
