"""torchrun support: the process group and the device each rank works on.

Under ``torchrun`` every process gets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` in its environment.
:func:`init_distributed` starts the process group from them (NCCL on GPUs, gloo on CPUs) once, and
:func:`rank_device` gives each rank its own GPU (``cuda:LOCAL_RANK``) where a plain ``cuda`` was asked
for — without it every rank would load its model on ``cuda:0``. Outside torchrun both do nothing.
Evaluation (:func:`rmu_lens.eval.evaluate`) then scores every world_size-th question per rank and
gathers the records, so every rank returns the whole result; only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Launch:
    """Where this process sits in a torchrun launch (rank 0 of 1 outside one)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launch() -> Launch:
    """This process's rank, local rank and world size from torchrun's environment variables."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as error:
        raise ValueError(f"RANK/LOCAL_RANK/WORLD_SIZE must be integers (as torchrun sets them): {error}") from error
    return Launch(rank=rank, local_rank=local, world_size=max(world, 1))


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of an initialised torch.distributed group, else (0, 1): how work is sharded."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> Launch:
    """Start the torch.distributed process group when launched by torchrun with more than one process.

    Idempotent; NCCL when CUDA is visible (after pinning this rank's GPU), gloo otherwise.
    """
    where = launch()
    if where.world_size == 1:
        return where
    import torch.distributed as dist

    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(where.local_rank % torch.cuda.device_count())
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return where


def rank_device(device: str | torch.device | None) -> str | torch.device | None:
    """``cuda`` (no index) → ``cuda:LOCAL_RANK`` under a multi-process launch; anything else unchanged."""
    where = launch()
    if where.world_size > 1 and device is not None and str(device) == "cuda" and torch.cuda.is_available():
        return f"cuda:{where.local_rank % torch.cuda.device_count()}"
    return device
