"""Cross-check against lm-evaluation-harness itself, offline, on the embedded SmolLM2-135M.

lm-eval runs its own pipeline (task yaml → Jinja prompts → HFLM tokenization → loglikelihood) on
local copies of its wmdp_bio and mmlu_virology_continuation tasks (tests/lm_eval_tasks/) pointed
at a small benign question file; rmu_lens must give the same prompts, the same token split, every
per-choice log-likelihood within 1e-4 and the same predictions.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rmu_lens.eval import evaluate, load_questions
from rmu_lens.eval.prompts import build_request, encode_requests

TASKS = Path(__file__).parent / "lm_eval_tasks"
QUESTIONS = TASKS / "questions.jsonl"
# our task name → (lm-eval task it copies, its yaml files in lm-eval's tasks/ folder, mode, rmu_lens task name)
CASES = {
    "rmu_lens_letter": ("wmdp_bio", ["wmdp/_default_template_yaml", "wmdp/wmdp_bio.yaml"], "letter", "wmdp-bio"),
    "rmu_lens_cloze": ("mmlu_virology_continuation",
                       ["mmlu/continuation/_continuation_template_yaml", "mmlu/continuation/mmlu_virology.yaml"], "cloze", "virology"),
}
PROMPT_FIELDS = ("output_type", "description", "doc_to_text", "doc_to_choice", "doc_to_target", "metric_list")


def lm_eval_task_config(files: list[str]) -> dict:
    """An installed lm-eval task's configuration: its template yaml overlaid by the task's own yaml."""
    import lm_eval

    root = Path(lm_eval.__file__).parent / "tasks"
    merged: dict = {}
    for name in files:
        merged |= {k: v for k, v in yaml.safe_load((root / name).read_text()).items() if k != "include"}
    return merged


@pytest.mark.parametrize("task", sorted(CASES))
def test_local_task_yaml_copies_lm_evals_prompt_fields(task):
    ours = yaml.safe_load((TASKS / f"{task}.yaml").read_text())
    theirs = lm_eval_task_config(CASES[task][1])
    for field in PROMPT_FIELDS:
        assert ours.get(field) == theirs.get(field), field
    assert ours.get("num_fewshot", 0) == theirs.get("num_fewshot", 0) == 0


@pytest.fixture(scope="module")
def plain_smollm2(smollm2_dir):
    """The embedded model as a plain HF model (no bridge) and its tokenizer, for lm-eval's HFLM."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture(scope="module")
def lm_eval_run(plain_smollm2, tmp_path_factory):
    """lm-eval's HFLM and its per-sample output for both local tasks, run with the network off."""
    import datasets
    import huggingface_hub
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    folder = tmp_path_factory.mktemp("lm_eval_tasks")
    for task in CASES:
        config = yaml.safe_load((TASKS / f"{task}.yaml").read_text())
        config["dataset_kwargs"] = {"data_files": {"test": str(QUESTIONS.resolve())}, "cache_dir": str(folder / "hf_datasets")}
        (folder / f"{task}.yaml").write_text(yaml.safe_dump(config))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_DATASETS_OFFLINE", "1")
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        model, tokenizer = plain_smollm2
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=16)
        output = lm_eval.simple_evaluate(
            model=lm, tasks=sorted(CASES), task_manager=TaskManager(include_path=str(folder)), log_samples=True,
        )
    samples = {task: sorted(output["samples"][task], key=lambda s: s["doc_id"]) for task in CASES}
    return lm, samples, output["results"]


@pytest.fixture(scope="module")
def rmu_lens_results(smollm2):
    return {
        task: evaluate(smollm2, load_questions(QUESTIONS, task=name), mode=mode, batch_size=8, progress=False)
        for task, (_, _, mode, name) in CASES.items()
    }


@pytest.mark.integration
@pytest.mark.parametrize("task", sorted(CASES))
def test_prompts_equal_lm_evals_rendered_requests(task, lm_eval_run):
    _, samples, _ = lm_eval_run
    _, _, mode, name = CASES[task]
    for question, sample in zip(load_questions(QUESTIONS, task=name), samples[task]):
        request = build_request(question, mode)
        assert [tuple(a) for a in sample["arguments"]] == [(request.context, c) for c in request.continuations]


@pytest.mark.integration
@pytest.mark.parametrize("task", sorted(CASES))
def test_token_split_equals_lm_evals_encode_pair(task, lm_eval_run):
    lm, samples, _ = lm_eval_run
    _, _, mode, name = CASES[task]
    questions = load_questions(QUESTIONS, task=name)
    ours = encode_requests(lm.tokenizer, [build_request(q, mode) for q in questions])
    for tokenized, sample in zip(ours, samples[task]):
        for (context, continuation), continuation_ids in zip(sample["arguments"], tokenized.continuation_ids):
            assert lm._encode_pair(context, continuation) == (tokenized.context_ids, continuation_ids)


@pytest.mark.integration
@pytest.mark.parametrize("task", sorted(CASES))
def test_loglikelihoods_within_1e4_and_predictions_identical(task, lm_eval_run, rmu_lens_results):
    _, samples, results = lm_eval_run
    ours = rmu_lens_results[task]
    assert len(ours.records) == len(samples[task]) == 16
    for record, sample in zip(ours.records, samples[task]):
        theirs = [float(response[0]) for response in sample["filtered_resps"]]
        assert max(abs(a - b) for a, b in zip(record["loglikelihoods"], theirs)) < 1e-4
        assert record["prediction"] == max(range(len(theirs)), key=theirs.__getitem__)
        assert record["correct"] == bool(sample["acc"])
        if "acc_norm" in sample:
            assert record["correct_norm"] == bool(sample["acc_norm"])
    assert ours.accuracy == pytest.approx(results[task]["acc,none"])
    if CASES[task][2] == "cloze":
        assert ours.accuracy_norm == pytest.approx(results[task]["acc_norm,none"])
