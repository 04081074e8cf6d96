"""rmu_lens.eval vs lm-evaluation-harness: same model, same questions, one process, back to back.

    python benchmarks/bench_eval.py                       # bundled question sets, both modes
    python benchmarks/bench_eval.py --limit 40 --modes cloze

lm-eval runs its own pipeline (HFLM on the plain HF model, tasks written as local yaml copies of
its wmdp/mmlu templates, one task per subject so the descriptions match); rmu_lens runs evaluate()
on the TransformerBridge of the same weights. Model loading is not timed; everything from task
set-up to per-question scores is. Prints wall seconds of each, the ratio, the largest per-choice
log-likelihood difference and the number of differing predictions (must be 0). Network is off.
Times are wall and process CPU seconds (all threads), the fastest of --repeats alternating runs after
--warmup untimed ones: the first runs in a fresh process can be several times slower than later ones.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
FALLBACK = ROOT / "tests" / "lm_eval_tasks" / "questions.jsonl"
TEMPLATES = {
    "letter": {
        "description": "The following are multiple choice questions (with answers) about {topic}.\n\n",
        "doc_to_text": "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:",
        "doc_to_choice": ["A", "B", "C", "D"],
        "doc_to_target": "answer",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    },
    "cloze": {
        "description": "The following are questions (with answers) about {topic}.\n\n",
        "doc_to_text": "Question: {{question.strip()}}\nAnswer:",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{answer}}",
    },
}


def gather_questions(paths: list[str] | None, limit: int | None):
    """Questions from the given files, else every bundled set, else copies of the test set."""
    from rmu_lens.eval import Question, load_questions
    from rmu_lens.eval.questions import bundled_question_sets

    sources = paths or [f"bundled:{name}" for name in bundled_question_sets()]
    questions = [q for source in sources for q in load_questions(source, limit=limit)]
    if not questions:  # no bundled sets: numbered copies, so no two prompts are identical
        base = load_questions(FALLBACK, task="biology")
        questions = [
            Question(f"{q.question} ({copy})", q.choices, q.answer, None, q.task, f"{q.id}/{copy}")
            for copy in range(20) for q in base
        ]
    return questions


def write_lm_eval_tasks(questions, mode: str, folder: Path) -> dict[str, list]:
    """One lm-eval task per topic (its own description), over a jsonl of that topic's questions."""
    import yaml

    by_topic: dict[str, list] = {}
    for question in questions:
        by_topic.setdefault(question.topic, []).append(question)
    tasks = {}
    for number, (topic, members) in enumerate(sorted(by_topic.items())):
        name = f"bench_{mode}_{number}"
        data = folder / f"{name}.jsonl"
        data.write_text("".join(json.dumps({"question": q.question, "choices": q.choices, "answer": q.answer}) + "\n" for q in members))
        template = dict(TEMPLATES[mode], description=TEMPLATES[mode]["description"].format(topic=topic))
        config = {
            "task": name, "dataset_path": "json", "test_split": "test", "num_fewshot": 0, "output_type": "multiple_choice",
            "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(folder / "hf_datasets")},
            **template,
        }
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(config))
        tasks[name] = members
    return tasks


class Timer:
    """Wall seconds and this process's CPU seconds (all threads) of a block.

    On a shared machine wall time swings with other processes' load; CPU time much less so.
    """

    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def run_lm_eval(lm, questions, mode: str, folder: Path) -> tuple[Timer, dict[str, list[float]], dict[str, bool | None]]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    tasks = write_lm_eval_tasks(questions, mode, folder)
    with Timer() as timer:
        output = lm_eval.simple_evaluate(
            model=lm, tasks=sorted(tasks), task_manager=TaskManager(include_path=str(folder)), log_samples=True, verbosity="ERROR"
        )
    loglikelihoods, norm_correct = {}, {}
    for name, members in tasks.items():
        for sample in output["samples"][name]:
            question = members[sample["doc_id"]]
            loglikelihoods[question.id] = [float(r[0]) for r in sample["filtered_resps"]]
            norm_correct[question.id] = bool(sample["acc_norm"]) if "acc_norm" in sample else None
    return timer, loglikelihoods, norm_correct


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="embedded model name or HF directory")
    parser.add_argument("--data", nargs="*", default=None, help="question files (default: every bundled set)")
    parser.add_argument("--limit", type=int, default=None, help="first N questions of each subject")
    parser.add_argument("--modes", nargs="+", default=["letter", "cloze"], choices=["letter", "cloze"])
    parser.add_argument("--batch-size", type=int, default=16, help="batch size of both (lm-eval: requests, rmu_lens: questions)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed full runs of each pipeline per mode first")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each (alternating); the fastest is reported")
    args = parser.parse_args()

    import torch
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rmu_lens.eval import evaluate
    from rmu_lens.models import EMBEDDED_MODELS, embedded_model_dir, load_model

    directory = embedded_model_dir(args.model) if args.model in EMBEDDED_MODELS else Path(args.model)
    questions = gather_questions(args.data, args.limit)
    plain = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    lm = HFLM(pretrained=plain, tokenizer=AutoTokenizer.from_pretrained(directory), batch_size=args.batch_size)
    bridge = load_model(directory)
    print(f"model {args.model}; {len(questions)} questions; batch size {args.batch_size}; torch threads {torch.get_num_threads()}; "
          f"{os.cpu_count()} CPUs; {platform.processor() or platform.machine()}; torch {torch.__version__}")
    # A fresh process on a small VM pays one-off costs (memory first touched and reclaimed, kernels
    # chosen): the first full runs took up to ten times longer than later ones, for several minutes.
    # So each mode first runs both pipelines --warmup times untimed, then --repeats timed runs,
    # alternating lm-eval and rmu_lens so that load changes hit both; the fastest run is reported.
    failures = 0
    for mode in args.modes:
        lm_times, our_times = [], []
        for round_number in range(args.warmup + args.repeats):
            with tempfile.TemporaryDirectory() as folder:
                lm_timer, theirs, their_norm = run_lm_eval(lm, questions, mode, Path(folder))
            with Timer() as our_timer:
                ours = evaluate(bridge, questions, mode=mode, batch_size=args.batch_size, progress=False)
            timed = round_number >= args.warmup
            print(f"  {mode} {'run' if timed else 'warm-up'} {round_number + 1}: lm-eval {lm_timer.wall:.1f} s wall "
                  f"{lm_timer.cpu:.1f} s cpu, rmu_lens {our_timer.wall:.1f} s wall {our_timer.cpu:.1f} s cpu", flush=True)
            if timed:
                lm_times.append(lm_timer)
                our_times.append(our_timer)
        differing, largest = 0, 0.0
        for record in ours.records:
            reference = theirs[record["id"]]
            largest = max(largest, max(abs(a - b) for a, b in zip(record["loglikelihoods"], reference)))
            differing += record["prediction"] != max(range(len(reference)), key=reference.__getitem__)
            if mode == "cloze":
                differing += record["correct_norm"] != their_norm[record["id"]]
        failures += differing
        lm_wall, our_wall = min(t.wall for t in lm_times), min(t.wall for t in our_times)
        lm_cpu, our_cpu = min(t.cpu for t in lm_times), min(t.cpu for t in our_times)
        print(f"{mode:6s}  wall: lm-eval {lm_wall:7.1f} s  rmu_lens {our_wall:7.1f} s  ratio {lm_wall / our_wall:5.2f}x   "
              f"cpu: lm-eval {lm_cpu:7.1f} s  rmu_lens {our_cpu:7.1f} s  ratio {lm_cpu / our_cpu:5.2f}x   "
              f"max |d loglik| {largest:.1e}   differing predictions {differing}   acc {ours.accuracy:.3f}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
