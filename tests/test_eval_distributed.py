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


def run_ranks(command: list[str], world: int, timeout: int = 300) -> list[subprocess.CompletedProcess]:
    """Start ``command`` once per rank with the environment torchrun gives its workers."""
    environment = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(world))
    workers = [
        subprocess.Popen(command, env=dict(environment, RANK=str(rank), LOCAL_RANK=str(rank)),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for rank in range(world)
    ]
    return [subprocess.CompletedProcess(w.args, w.wait(timeout=timeout), *w.communicate()) for w in workers]


@pytest.mark.integration  # two CLI processes import TransformerLens: ~30 s on an idle 2-core machine
def test_eval_command_under_torchrun_starts_the_group_shards_and_writes_once(tmp_path):
    model, tokenizer = build_random_model("llama", n_layers=2, d_model=32, seed=11)
    model.save_pretrained(tmp_path / "model", safe_serialization=True)
    tokenizer.save_pretrained(tmp_path / "model")
    (tmp_path / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    out = tmp_path / "result.json"
    command = [sys.executable, "-m", "rmu_lens.cli", "eval", "--model", str(tmp_path / "model"), "--data",
               str(tmp_path / "questions.jsonl"), "--out", str(out), "--device", "cpu", "--quiet"]
    done = run_ranks(command, world=2)
    assert [p.returncode for p in done] == [0, 0], [p.stderr[-2000:] for p in done]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "questions.jsonl", "result.json"]
    parallel = EvalResult.load(out)
    assert parallel.meta["world_size"] == 2  # the process group was started: each rank scored half
    single = evaluate(model, [Question(**q) for q in QUESTIONS], mode="cloze", progress=False, tokenizer=tokenizer)
    assert [r["id"] for r in parallel.records] == [q["id"] for q in QUESTIONS]
    for mine, reference in zip(parallel.records, single.records):
        assert max(abs(a - b) for a, b in zip(mine["loglikelihoods"], reference["loglikelihoods"])) < 1e-5


def test_a_torchrun_launch_is_read_from_the_environment(monkeypatch):
    from rmu_lens.distributed import init_distributed, launch, rank_device

    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "6")
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert launch() == launch().__class__(rank=6, local_rank=2, world_size=4) and not launch().is_main
    assert rank_device("cpu") == "cpu" and rank_device(None) is None
    monkeypatch.setenv("RANK", "two")
    with pytest.raises(ValueError, match="must be integers"):
        launch()
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name)
    assert init_distributed().world_size == 1  # outside torchrun: nothing to start
