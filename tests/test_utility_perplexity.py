"""Perplexity equals lm-evaluation-harness's loglikelihood_rolling metrics, run in-process on a local task.

lm-eval reads tests/lm_eval_tasks/rmu_lens_perplexity.yaml (a wikitext-style task over a local text
file) with its own HFLM on a plain tiny random model; rmu_lens scores the same texts through a bridge
over an identical model. A small maximum length (64 byte tokens) makes most texts span several windows.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from rmu_lens.utility.perplexity import count_bytes, count_words, perplexity, rolling_windows

TASKS = Path(__file__).parent / "lm_eval_tasks"
TEXTS = TASKS / "perplexity_texts.jsonl"
MAX_LENGTH = 64


def corpus_texts() -> list[str]:
    from rmu_lens.data.corpora import load_corpus

    return load_corpus(TEXTS).texts


def tiny_pair(seed: int = 0):
    from rmu_lens.models import build_random_model

    return build_random_model("llama", n_layers=2, d_model=32, n_heads=2, seed=seed)


def run_lm_eval(folder: Path, model, tokenizer, max_length: int = MAX_LENGTH):
    """lm-eval's results and per-text samples for the local perplexity task, with the network off."""
    import datasets
    import huggingface_hub
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    config = yaml.safe_load((TASKS / "rmu_lens_perplexity.yaml").read_text())
    config["dataset_kwargs"] = {"data_files": {"test": str(TEXTS.resolve())}, "cache_dir": str(folder / "hf_datasets")}
    (folder / "rmu_lens_perplexity.yaml").write_text(yaml.safe_dump(config))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_DATASETS_OFFLINE", "1")
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=3, max_length=max_length)
        output = lm_eval.simple_evaluate(
            model=lm, tasks=["rmu_lens_perplexity"], task_manager=TaskManager(include_path=str(folder)), log_samples=True,
        )
    samples = sorted(output["samples"]["rmu_lens_perplexity"], key=lambda s: s["doc_id"])
    return output["results"]["rmu_lens_perplexity"], samples


@pytest.fixture(scope="module")
def lm_eval_perplexity(tmp_path_factory):
    return run_lm_eval(tmp_path_factory.mktemp("lm_eval_perplexity"), *tiny_pair())


def assert_equal_to_lm_eval(ours, results, samples):
    assert len(samples) == len(ours.loglikelihoods) == 6
    for sample, loglikelihood in zip(samples, ours.loglikelihoods):
        assert loglikelihood == pytest.approx(float(sample["filtered_resps"][0]), rel=1e-4)
    for metric in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert getattr(ours, metric) == pytest.approx(results[f"{metric},none"], rel=1e-4), metric


def test_rolling_windows_equal_lm_evals_disjoint_windows():
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    for n_tokens in (1, 5, 63, 64, 65, 128, 129, 200):
        tokens = list(range(100, 100 + n_tokens))
        theirs = [make_disjoint_window(w) for w in get_rolling_token_windows(tokens, 7, MAX_LENGTH, 1)]
        ours = rolling_windows(tokens, 7, MAX_LENGTH)
        assert len(ours) == len(theirs)
        for window, (context, continuation) in zip(ours, theirs):
            # lm-eval feeds (context + continuation)[-(L + 1):][:-1] and scores the last len(continuation) logits.
            assert window.input_ids == (context + continuation)[-(MAX_LENGTH + 1):][:-1]
            assert window.targets == continuation
        assert [t for w in ours for t in w.targets] == tokens


def test_word_and_byte_counts_follow_lm_eval():
    from lm_eval.api.task import Task

    for text in corpus_texts():
        assert count_words(text) == Task.count_words(text)
        assert count_bytes(text) == Task.count_bytes(text)


def test_perplexity_equals_lm_evals_metrics_on_a_local_corpus(lm_eval_perplexity):
    from rmu_lens.models import load_model

    results, samples = lm_eval_perplexity
    model, tokenizer = tiny_pair()
    ours = perplexity(load_model(model, tokenizer=tokenizer), TEXTS, max_length=MAX_LENGTH, batch_size=4)
    assert max(ours.n_tokens) > 2 * MAX_LENGTH  # several windows, a short last one
    assert_equal_to_lm_eval(ours, results, samples)


@pytest.mark.integration
def test_perplexity_equals_lm_eval_on_smollm2(smollm2_dir, smollm2, tmp_path):
    """The embedded model's BPE tokenizer (no BOS added; prefix token from its BOS/EOS), windows of 32 tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    results, samples = run_lm_eval(tmp_path, model, tokenizer, max_length=32)
    ours = perplexity(smollm2, TEXTS, max_length=32)
    assert max(ours.n_tokens) > 64
    assert_equal_to_lm_eval(ours, results, samples)


def test_single_window_loglikelihood_equals_a_plain_forward_in_float64():
    import torch

    model, tokenizer = tiny_pair(seed=3)
    text = "A harbour festival with an orchestra."
    ids = tokenizer.encode(text)
    result = perplexity(model, [text], tokenizer=tokenizer)
    reference_model = model.double()
    inputs = torch.tensor([[tokenizer.bos_token_id] + ids[:-1]])
    with torch.no_grad():
        logprobs = reference_model(input_ids=inputs).logits[0].log_softmax(-1)
    expected = float(logprobs[torch.arange(len(ids)), torch.tensor(ids)].sum())
    assert result.loglikelihoods[0] == pytest.approx(expected, rel=1e-5)
    assert result.bits_per_byte == pytest.approx(-expected / len(text.encode()) / math.log(2), rel=1e-5)


def test_batch_size_does_not_change_the_result():
    model, tokenizer = tiny_pair(seed=1)
    texts = corpus_texts()
    one = perplexity(model, texts, tokenizer=tokenizer, max_length=MAX_LENGTH, batch_size=1)
    many = perplexity(model, texts, tokenizer=tokenizer, max_length=MAX_LENGTH, batch_size=16, tokens_per_batch=256)
    assert many.loglikelihoods == pytest.approx(one.loglikelihoods, rel=1e-5)


def test_empty_text_is_refused_by_name():
    model, tokenizer = tiny_pair()
    with pytest.raises(ValueError, match="empty"):
        perplexity(model, ["fine", ""], tokenizer=tokenizer)


def test_result_round_trips_through_json(tmp_path):
    from rmu_lens.utility.perplexity import PerplexityResult

    model, tokenizer = tiny_pair()
    result = perplexity(model, corpus_texts()[:2], tokenizer=tokenizer)
    import json

    path = result.save(tmp_path / "ppl.json")
    loaded = PerplexityResult.from_dict(json.loads(path.read_text()))
    assert loaded.metrics() == pytest.approx(result.metrics())
