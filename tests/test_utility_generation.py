"""Generations side by side: greedy decoding is deterministic and equals a plain argmax loop; measures are right."""

from __future__ import annotations

import math

import pytest
import torch

from rmu_lens.utility.generation import (
    GenerationConfig, Generations, base_losses, compare_generations, generate, mean_interval, plain_model_of,
    repeated_ngram_rate,
)

PROMPTS = ["The river", "A much longer prompt about castles and harbours", "x"]


def argmax_loop(hf_model, tokenizer, prompt: str, n: int) -> list[int]:
    """Greedy decoding by hand: one full forward per new token, no cache, no padding."""
    ids, new = tokenizer.encode(prompt), []
    for _ in range(n):
        with torch.no_grad():
            token = int(hf_model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
        if token == tokenizer.eos_token_id:
            break
        new.append(token)
    return new


@pytest.fixture
def bridge(make_tiny):
    return make_tiny("llama", n_layers=2, d_model=32, n_heads=2, seed=0)


def test_greedy_generation_is_deterministic_and_equals_an_argmax_loop(bridge):
    from rmu_lens.models import hf_model_of, tokenizer_of

    first = generate(bridge, PROMPTS, max_new_tokens=12, batch_size=3)
    again = generate(bridge, PROMPTS, max_new_tokens=12, batch_size=2)
    assert [c.token_ids for c in first] == [c.token_ids for c in again]
    for completion in first:
        assert completion.token_ids == argmax_loop(hf_model_of(bridge), tokenizer_of(bridge), completion.prompt, 12)
        assert completion.text == tokenizer_of(bridge).decode(completion.token_ids, skip_special_tokens=True)


def test_generation_through_the_bridge_equals_the_plain_tree(bridge):
    fast = generate(bridge, PROMPTS, max_new_tokens=8)
    slow = generate(bridge, PROMPTS, max_new_tokens=8, through_bridge=True)
    assert [c.token_ids for c in fast] == [c.token_ids for c in slow]


def test_plain_model_shares_the_bridges_tensors(bridge):
    from rmu_lens.models import hf_model_of

    plain = plain_model_of(bridge)
    before = generate(plain, PROMPTS[:1], tokenizer=bridge.hf_tokenizer, max_new_tokens=6)
    with torch.no_grad():
        for parameter in hf_model_of(bridge).parameters():
            parameter.mul_(-1.0)
    after = generate(plain, PROMPTS[:1], tokenizer=bridge.hf_tokenizer, max_new_tokens=6)
    assert before[0].token_ids != after[0].token_ids
    assert after[0].token_ids == generate(bridge, PROMPTS[:1], max_new_tokens=6)[0].token_ids


def test_sampling_is_reproducible_under_a_seed(bridge):
    one = generate(bridge, PROMPTS, max_new_tokens=10, sample=True, seed=3)
    two = generate(bridge, PROMPTS, max_new_tokens=10, sample=True, seed=3)
    greedy = generate(bridge, PROMPTS, max_new_tokens=10)
    assert [c.token_ids for c in one] == [c.token_ids for c in two]
    assert [c.token_ids for c in one] != [c.token_ids for c in greedy]


def test_repeated_ngram_rate_counts_repeats_of_earlier_ngrams():
    assert repeated_ngram_rate([1, 2, 3, 1, 2, 3], 3) == pytest.approx(1 / 4)
    assert repeated_ngram_rate([5] * 10, 3) == pytest.approx(7 / 8)
    assert repeated_ngram_rate(list(range(10)), 3) == 0.0
    assert math.isnan(repeated_ngram_rate([1, 2], 3))


def test_base_loss_equals_a_float64_recomputation(bridge):
    from rmu_lens.models import tokenizer_of

    completions = generate(bridge, PROMPTS, max_new_tokens=8)
    losses = base_losses(bridge, completions)
    tokenizer, model = tokenizer_of(bridge), plain_model_of(bridge).double()
    for completion, loss in zip(completions, losses):
        whole = tokenizer.encode(completion.prompt) + completion.token_ids
        with torch.no_grad():
            logprobs = model(input_ids=torch.tensor([whole])).logits[0].log_softmax(-1)
        start = len(whole) - len(completion.token_ids)
        expected = -float(sum(logprobs[p - 1, whole[p]] for p in range(start, len(whole)))) / len(completion.token_ids)
        assert loss == pytest.approx(expected, rel=1e-5)


def test_mean_interval_equals_scipys_t_interval():
    from scipy import stats

    values = [1.0, 2.5, 3.0, 7.0, float("nan")]
    interval = mean_interval(values)
    finite = values[:4]
    low, high = stats.t.interval(0.95, len(finite) - 1, loc=sum(finite) / 4, scale=stats.sem(finite))
    assert interval["n"] == 4
    assert (interval["low"], interval["high"]) == pytest.approx((low, high))


def test_compare_generations_measures_every_role_for_both_models(make_tiny, tmp_path):
    base = make_tiny("llama", n_layers=2, d_model=32, n_heads=2, seed=0)
    unlearned = make_tiny("llama", n_layers=2, d_model=32, n_heads=2, seed=1)
    prompts = {"forget": ["The virus", "A capsid"], "distant": ["The river", "A castle", "Mountains"]}
    result = compare_generations(base, unlearned, prompts, GenerationConfig(max_new_tokens=6, min_new_tokens=6))
    assert [r["role"] for r in result.records] == ["forget"] * 2 + ["distant"] * 3
    summary = result.summary()
    assert summary["distant"]["base_loss"]["unlearned"]["n"] == 3
    own = [r["measures"]["base"]["base_loss"] for r in result.records]
    assert all(r["sampled"] is not None for r in result.records)
    assert summary["forget"]["base_loss"]["base"]["mean"] == pytest.approx(sum(own[:2]) / 2)
    loaded = Generations.load(result.save(tmp_path / "generations.json"))
    assert loaded.records == json_roundtrip(result.records)


def json_roundtrip(value):
    import json

    return json.loads(json.dumps(value))
