"""A `rmu-lens unlearn` run that kills itself at a point the test names (for tests/test_fault_injection.py).

    python -m tests.crash_child FAULT MODEL_DIR DATA_DIR OUT [--resume]

FAULT is ``none`` or ``KIND:N``, acting at the N-th occurrence in this process:
  update:N           SIGKILL right after the N-th optimizer update (before the step is counted)
  sigint-update:N    SIGINT (Ctrl-C) right after the N-th optimizer update
  checkpoint-write:N SIGKILL inside the N-th checkpoint write, after its tensors are staged
  checkpoint-swap:N  SIGKILL in the N-th checkpoint swap, between its two renames
  final-save:N       SIGKILL in the final save, with the model staged but not yet renamed in
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

SETTINGS = ["--layer", "2", "--steering-coeff", "8", "--alpha", "5", "--lr", "1e-3", "--batch-size", "2",
            "--max-batches", "10", "--max-length", "24", "--retain-max-length", "24", "--checkpoint-every", "2",
            "--min-chars", "0", "--no-progress", "--device", "cpu"]


def kill(sig: int = signal.SIGKILL) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), sig)


def install(fault: str) -> None:
    """Wrap the function where ``fault`` acts so it signals this process at the N-th call."""
    if fault == "none":
        return
    import rmu_lens._io as io
    import rmu_lens.rmu.rundir as rundir
    from rmu_lens.rmu.optim import LegacyAdamW

    kind, n = fault.split(":")
    count = {"n": 0}

    def hit() -> bool:
        count["n"] += 1
        return count["n"] == int(n)

    if kind in ("update", "sigint-update"):
        step = LegacyAdamW.step

        def patched_step(self, *args, **kwargs):
            result = step(self, *args, **kwargs)
            if hit():
                kill(signal.SIGKILL if kind == "update" else signal.SIGINT)
            return result

        LegacyAdamW.step = patched_step
    elif kind == "checkpoint-write":
        save = rundir.atomic_save_tensors

        def patched_save(path, *args, **kwargs):
            result = save(path, *args, **kwargs)
            if Path(path).name == "trained.safetensors" and hit():
                kill()
            return result

        rundir.atomic_save_tensors = patched_save
    elif kind == "checkpoint-swap":
        replace = rundir.replace_durably

        def patched_replace(source, target):
            replace(source, target)
            if Path(target).name == "checkpoint.old" and hit():
                kill()

        rundir.replace_durably = patched_replace
    elif kind == "final-save":
        replace = io.replace_durably

        def patched_replace(source, target):
            if Path(source).name.startswith(".model-") and hit():
                kill()
            replace(source, target)

        io.replace_durably = patched_replace
    else:
        raise SystemExit(f"unknown fault {fault!r}")


def main(argv: list[str]) -> int:
    fault, model_dir, data_dir, out, *rest = argv
    install(fault)
    from rmu_lens.cli import main as cli

    data = Path(data_dir)
    return cli(["unlearn", "--model", model_dir, "--forget", str(data / "bio.txt"), str(data / "cyber.txt"),
                "--retain", str(data / "retain.txt"), "--out", out, *SETTINGS, *rest])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
