"""Activation collection under torchrun: two gloo ranks each return what one process collects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from rmu_lens.analysis.activations import collect_activations
from rmu_lens.models import build_random_model, load_model
from tests.test_eval_distributed import free_port

TEXTS = [f"Text {i}: " + "cells and proteins " * (1 + i % 4) for i in range(7)]
HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]

WORKER = textwrap.dedent(
    """
    import json, sys
    import torch.distributed as dist
    from safetensors.torch import save_file
    from rmu_lens.analysis.activations import collect_activations
    from rmu_lens.models import build_random_model, load_model

    dist.init_process_group("gloo")
    model, tokenizer = build_random_model("llama", n_layers=2, d_model=32, seed=5)
    bridge = load_model(model, tokenizer=tokenizer)
    texts, hooks, out, limit = json.loads(sys.argv[1])
    with collect_activations(bridge, texts, hooks, batch_size=2, memory_limit_mb=limit, progress=False) as acts:
        save_file({h: acts[h].contiguous() for h in hooks} | {"mask": acts.mask.to(float)},
                  f"{out}.rank{dist.get_rank()}.safetensors")
        dist.barrier()  # rank 0 owns a temporary spill folder: keep it until every rank has read
    dist.destroy_process_group()
    """
)


@pytest.mark.integration  # two worker processes import TransformerLens: ~30 s on an idle 2-core machine
@pytest.mark.parametrize("memory_limit_mb", [1024.0, 0.0], ids=["in-memory", "spilled"])
def test_two_ranks_each_collect_what_one_process_collects(tmp_path, memory_limit_mb):
    environment = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="2",
                       PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    out = str(tmp_path / "acts")
    argument = json.dumps([TEXTS, HOOKS, out, memory_limit_mb])
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, argument], env=dict(environment, RANK=str(rank)))
               for rank in range(2)]
    assert [w.wait(timeout=300) for w in workers] == [0, 0]
    model, tokenizer = build_random_model("llama", n_layers=2, d_model=32, seed=5)
    single = collect_activations(load_model(model, tokenizer=tokenizer), TEXTS, HOOKS, batch_size=2, progress=False)
    for rank in range(2):
        parallel = load_file(f"{out}.rank{rank}.safetensors")
        assert torch.equal(parallel["mask"].bool(), single.mask)
        for hook in HOOKS:
            torch.testing.assert_close(parallel[hook], single[hook], rtol=1e-6, atol=1e-6)
