"""Data-parallel evaluation: two processes in a torch.distributed group (gloo, set up as torchrun does).

Plain HF models keep the worker start-up short (no TransformerLens import)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from rmu_lens.eval import EvalResult, Question, evaluate
from rmu_lens.models import build_random_model

QUESTIONS = [
    {"question": f"Question number {i}?", "choices": [f"{i}", "two", "three", "four"], "answer": i % 4,
     "subject": "odd" if i % 2 else "even", "task": "demo", "id": f"demo/{i}"}
    for i in range(7)
]

WORKER = textwrap.dedent(
    """
    import json, sys
    import torch.distributed as dist
    from rmu_lens.eval import Question, evaluate
    from rmu_lens.models import build_random_model

    dist.init_process_group("gloo")
    model, tokenizer = build_random_model("llama", n_layers=2, d_model=32, seed=11)
    questions = [Question(**q) for q in json.loads(sys.argv[1])]
    result = evaluate(model, questions, mode="cloze", batch_size=2, progress=False, tokenizer=tokenizer)
    result.save(sys.argv[2] + f".rank{dist.get_rank()}.json")
    dist.destroy_process_group()
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.integration  # two worker processes: ~15 s of start-up on an idle 2-core machine
def test_two_ranks_each_return_the_single_process_result(tmp_path):
    environment = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="2")
    out = str(tmp_path / "result")
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(QUESTIONS), out], env=dict(environment, RANK=str(rank)))
        for rank in range(2)
    ]
    assert [w.wait(timeout=300) for w in workers] == [0, 0]
    model, tokenizer = build_random_model("llama", n_layers=2, d_model=32, seed=11)
    single = evaluate(model, [Question(**q) for q in QUESTIONS], mode="cloze", progress=False, tokenizer=tokenizer)
    for rank in range(2):
        parallel = EvalResult.load(f"{out}.rank{rank}.json")
        assert [r["id"] for r in parallel.records] == [q["id"] for q in QUESTIONS]
        for mine, reference in zip(parallel.records, single.records):
            assert max(abs(a - b) for a, b in zip(mine["loglikelihoods"], reference["loglikelihoods"])) < 1e-5
        assert parallel.meta["world_size"] == 2
