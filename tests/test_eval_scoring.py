"""Scoring on tiny random models: packed rows equal a plain per-choice forward, at any batch size."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from rmu_lens.eval import Question, evaluate
from rmu_lens.eval.prompts import build_request, encode_requests
from rmu_lens.models import build_random_model, load_model, save_hf_model, tokenizer_of

QUESTIONS = [
    Question(
        "Is " + "it " * (i % 4) + f"{i}?",
        [f"{i}", "seven and two", "x" * (1 + i % 3), "none"],
        i % 4,
        ["biology", "virology", None][i % 3],
        "wmdp-bio",
        f"q{i}",
    )
    for i in range(7)
]


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def tiny_pair(request):
    """(bridge, plain HF copy with the same weights) for a tiny random model."""
    model, tokenizer = build_random_model(request.param, n_layers=2, d_model=32, seed=3)
    plain = copy.deepcopy(model).eval()
    return load_model(model, tokenizer=tokenizer), plain


def reference_loglikelihoods(plain, tokenizer, questions, mode) -> list[list[float]]:
    """lm-eval's computation written plainly: one sequence (context + continuation)[:-1] per choice."""
    rows = []
    with torch.no_grad():
        for tokenized in encode_requests(tokenizer, [build_request(q, mode) for q in questions]):
            row = []
            for continuation in tokenized.continuation_ids:
                inputs = torch.tensor([(tokenized.context_ids + continuation)[:-1]])
                logprobs = plain(input_ids=inputs).logits[0, -len(continuation):].float().log_softmax(-1)
                row.append(float(logprobs[torch.arange(len(continuation)), continuation].sum()))
            rows.append(row)
    return rows


def max_difference(records, reference) -> float:
    return max(abs(a - b) for record, row in zip(records, reference) for a, b in zip(record["loglikelihoods"], row))


@pytest.mark.parametrize("mode", ["letter", "cloze"])
def test_loglikelihoods_equal_a_plain_per_choice_forward(tiny_pair, mode):
    bridge, plain = tiny_pair
    result = evaluate(bridge, QUESTIONS, mode=mode, batch_size=4, progress=False)
    reference = reference_loglikelihoods(plain, tokenizer_of(bridge), QUESTIONS, mode)
    assert max_difference(result.records, reference) < 1e-4
    assert [r["prediction"] for r in result.records] == [max(range(4), key=row.__getitem__) for row in reference]


@pytest.mark.parametrize("mode", ["letter", "cloze"])
def test_results_do_not_depend_on_batch_size(tiny_pair, mode):
    bridge, _ = tiny_pair
    one = evaluate(bridge, QUESTIONS, mode=mode, batch_size=1, progress=False)
    for batch_size in (3, 16):
        other = evaluate(bridge, QUESTIONS, mode=mode, batch_size=batch_size, progress=False)
        assert max_difference(other.records, [r["loglikelihoods"] for r in one.records]) < 1e-5
        assert [r["prediction"] for r in other.records] == [r["prediction"] for r in one.records]
        if mode == "cloze":
            assert [r["pred_norm"] for r in other.records] == [r["pred_norm"] for r in one.records]


def test_records_follow_lm_eval_scoring_rules(tiny_pair):
    bridge, _ = tiny_pair
    result = evaluate(bridge, QUESTIONS, mode="cloze", batch_size=5, progress=False)
    for question, record in zip(QUESTIONS, result.records):
        lls = record["loglikelihoods"]
        assert record["id"] == question.id and record["answer"] == question.answer
        assert record["subject"] == (question.subject or "wmdp-bio")
        assert record["prediction"] == lls.index(max(lls))
        normalised = [ll / len(choice) for ll, choice in zip(lls, question.choices)]
        assert record["pred_norm"] == normalised.index(max(normalised))
        assert record["correct"] == (record["prediction"] == question.answer)
    assert result.accuracy == sum(r["correct"] for r in result.records) / len(QUESTIONS)
    assert result.accuracy_norm == sum(r["correct_norm"] for r in result.records) / len(QUESTIONS)


def test_hooks_added_to_the_bridge_change_the_scores(tiny_pair):
    bridge, _ = tiny_pair
    clean = evaluate(bridge, QUESTIONS[:3], mode="letter", progress=False)
    bridge.add_hook("blocks.0.hook_resid_post", lambda resid, hook: resid * 0.0)
    try:
        hooked = evaluate(bridge, QUESTIONS[:3], mode="letter", progress=False)
    finally:
        bridge.reset_hooks()
    assert max_difference(hooked.records, [r["loglikelihoods"] for r in clean.records]) > 1e-3
    again = evaluate(bridge, QUESTIONS[:3], mode="letter", progress=False)
    assert max_difference(again.records, [r["loglikelihoods"] for r in clean.records]) < 1e-6


def single_token_letter_model():
    """A tiny Llama whose byte tokenizer also has merged tokens for " A".." D"."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<|bos|>": 0, "<|eos|>": 1, **{s: i + 2 for i, s in enumerate(alphabet)}}
    merges = [("Ġ", letter) for letter in "ABCD"]
    vocab.update({"Ġ" + letter: len(vocab) + i for i, letter in enumerate("ABCD")})
    core = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|eos|>")
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False)
    torch.manual_seed(5)
    return LlamaForCausalLM(config).eval(), tokenizer


def test_single_token_letters_are_scored_from_the_context_alone():
    model, tokenizer = single_token_letter_model()
    tokenized = encode_requests(tokenizer, [build_request(QUESTIONS[0], "letter")])[0]
    assert all(len(ids) == 1 for ids in tokenized.continuation_ids)
    result = evaluate(model, QUESTIONS, mode="letter", batch_size=4, progress=False, tokenizer=tokenizer)
    reference = reference_loglikelihoods(model, tokenizer, QUESTIONS, "letter")
    assert max_difference(result.records, reference) < 1e-4


def test_plain_hf_model_needs_its_tokenizer():
    model, _ = single_token_letter_model()
    with pytest.raises(ValueError, match="tokenizer="):
        evaluate(model, QUESTIONS, progress=False)


def test_run_directory_is_evaluated_through_its_model_folder(tmp_path):
    model, tokenizer = build_random_model("llama", n_layers=2, d_model=32, seed=4)
    bridge = load_model(model, tokenizer=tokenizer)
    run = tmp_path / "run"
    save_hf_model(bridge, run / "model")
    (run / "run.json").write_text(json.dumps({"format": "rmu_lens.run/1"}))
    from_directory = evaluate(str(run), QUESTIONS[:4], mode="letter", progress=False)
    in_memory = evaluate(bridge, QUESTIONS[:4], mode="letter", progress=False)
    assert max_difference(from_directory.records, [r["loglikelihoods"] for r in in_memory.records]) < 1e-5
    assert from_directory.meta["model"] == str(run)


def test_long_prompts_get_smaller_batches(monkeypatch):
    from rmu_lens.eval import scoring
    from rmu_lens.eval.prompts import TokenizedRequest

    monkeypatch.setattr(scoring, "MAX_MASK_ELEMENTS", 3 * 40**2)
    rows = [scoring.pack_request(TokenizedRequest([5] * n, [[6]])) for n in (50, 40, 30, 10)]
    # 2 x 50^2 > 4800 starts a new batch; 3 x 40^2 = 4800 still fits
    assert scoring._batches([0, 1, 2, 3], rows, batch_size=16) == [[0], [1, 2, 3]]
    assert scoring._batches([0, 1, 2, 3], rows, batch_size=2) == [[0], [1, 2], [3]]


def test_invalid_or_duplicate_questions_are_rejected_before_scoring(tiny_pair):
    from rmu_lens.eval import QuestionError

    bridge, _ = tiny_pair
    three = Question("Q?", ["a", "b", "c"], 0, None, "t", "t/0")
    with pytest.raises(QuestionError, match="3 choices"):
        evaluate(bridge, [three], progress=False)
    with pytest.raises(ValueError, match="more than once"):
        evaluate(bridge, [QUESTIONS[0], QUESTIONS[0]], progress=False)


def test_alibi_model_without_position_ids_is_scored_one_row_per_choice():
    from transformers import BloomConfig, BloomForCausalLM

    from rmu_lens.eval.scoring import packs_choices
    from rmu_lens.models import byte_tokenizer

    tokenizer = byte_tokenizer()
    torch.manual_seed(6)
    model = BloomForCausalLM(BloomConfig(vocab_size=len(tokenizer), hidden_size=32, n_layer=2, n_head=4)).eval()
    assert not packs_choices(model)
    for mode in ("letter", "cloze"):
        result = evaluate(model, QUESTIONS, mode=mode, batch_size=3, progress=False, tokenizer=tokenizer)
        reference = reference_loglikelihoods(model, tokenizer, QUESTIONS, mode)
        assert max_difference(result.records, reference) < 1e-4
