"""collect_activations: values against the plain HF model, batching, early stopping, spilling, reductions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import texts
from rmu_lens.analysis.activations import (
    answer_position_activations,
    collect_activations,
    resid_post_hooks,
    statistics_mask,
    tokenize,
)
from rmu_lens.models import build_random_model, load_model, tokenizer_of

N_LAYERS = 3


@pytest.fixture(scope="module")
def pair():
    """A bridge and an untouched HF copy of the same random weights (the independent reference)."""
    model, tokenizer = build_random_model("llama", n_layers=N_LAYERS, d_model=32, n_heads=4, seed=3)
    reference, _ = build_random_model("llama", n_layers=N_LAYERS, d_model=32, n_heads=4, seed=3)
    return load_model(model, tokenizer=tokenizer), reference


@pytest.fixture(scope="module")
def corpus():
    return texts("bio", 6, seed=1, min_words=2, max_words=12)


def test_resid_post_equals_hf_hidden_states_on_real_tokens(pair, corpus):
    bridge, reference = pair
    acts = collect_activations(bridge, corpus, batch_size=4, skip_first=0, progress=False)
    tokenizer = tokenizer_of(bridge)
    for row, text in enumerate(corpus):
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        with torch.no_grad():
            hidden = reference(input_ids=ids, output_hidden_states=True).hidden_states
        n = ids.shape[1]
        assert int(acts.attention_mask[row].sum()) == n
        for layer in range(N_LAYERS - 1):
            got = acts[f"blocks.{layer}.hook_resid_post"][row, :n]
            torch.testing.assert_close(got, hidden[layer + 1][0], atol=1e-5, rtol=1e-5)
        # HF's last hidden state comes after the final norm; the last block's output comes before it.
        last = acts[f"blocks.{N_LAYERS - 1}.hook_resid_post"][row, :n]
        with torch.no_grad():
            torch.testing.assert_close(reference.model.norm(last), hidden[N_LAYERS][0], atol=1e-5, rtol=1e-5)


def test_padding_positions_hold_zeros_and_mask_skips_first_token(pair, corpus):
    bridge, _ = pair
    acts = collect_activations(bridge, corpus, hook_names=["blocks.0.hook_resid_post"], progress=False)
    values = acts["blocks.0.hook_resid_post"]
    assert (values[acts.attention_mask == 0] == 0).all()
    assert not acts.mask[:, 0].any()
    assert torch.equal(acts.mask[:, 1:], acts.attention_mask[:, 1:].bool())
    assert acts.describe()["skip_first"] == 1
    assert acts.tokens("blocks.0.hook_resid_post").shape == (int(acts.mask.sum()), 32)


def test_batch_size_one_equals_batch_size_four(pair, corpus):
    bridge, _ = pair
    one = collect_activations(bridge, corpus, batch_size=1, progress=False)
    four = collect_activations(bridge, corpus, batch_size=4, progress=False)
    for hook in one.hook_names:
        torch.testing.assert_close(one[hook], four[hook], atol=1e-5, rtol=0)


def test_stopping_after_the_last_requested_layer_gives_full_forward_values(pair, corpus):
    bridge, _ = pair
    early = collect_activations(bridge, corpus, ["blocks.1.hook_resid_post"], progress=False)
    # ln_final lies after every block, so this collection runs the whole model.
    full = collect_activations(bridge, corpus, ["blocks.1.hook_resid_post", "ln_final.hook_normalized"], progress=False)
    torch.testing.assert_close(early["blocks.1.hook_resid_post"], full["blocks.1.hook_resid_post"], atol=1e-6, rtol=0)


def test_any_hook_point_is_accepted(pair, corpus):
    bridge, reference = pair
    acts = collect_activations(bridge, corpus[:2], ["blocks.0.hook_resid_pre", "blocks.1.mlp.hook_out"], progress=False)
    ids = torch.tensor([tokenizer_of(bridge)(corpus[0])["input_ids"]])
    with torch.no_grad():
        embedded = reference(input_ids=ids, output_hidden_states=True).hidden_states[0]
    torch.testing.assert_close(acts["blocks.0.hook_resid_pre"][0, : ids.shape[1]], embedded[0], atol=1e-6, rtol=0)
    assert acts["blocks.1.mlp.hook_out"].shape[-1] == 32


@pytest.mark.parametrize("reduce", [None, "mean", "last"])
def test_spilled_shards_equal_in_memory_exactly(pair, corpus, tmp_path, reduce):
    bridge, _ = pair
    memory = collect_activations(bridge, corpus, batch_size=4, reduce=reduce, progress=False)
    spilled = collect_activations(bridge, corpus, batch_size=4, reduce=reduce, memory_limit_mb=0, spill_dir=tmp_path,
                                  progress=False)
    assert spilled.spilled and not memory.spilled
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    for hook in memory.hook_names:
        assert torch.equal(memory[hook], spilled[hook])
        if reduce is None:
            assert torch.equal(memory.tokens(hook), spilled.tokens(hook))


def test_spill_directory_of_its_own_is_deleted_on_close(pair, corpus):
    bridge, _ = pair
    acts = collect_activations(bridge, corpus, memory_limit_mb=0, progress=False)
    directory = acts.spill_dir
    assert directory.is_dir()
    acts.close()
    assert not directory.exists()


def test_mean_and_last_reductions_match_float64_recomputation(pair, corpus):
    bridge, _ = pair
    tokens = collect_activations(bridge, corpus, progress=False)
    means = collect_activations(bridge, corpus, reduce="mean", progress=False)
    lasts = collect_activations(bridge, corpus, reduce="last", progress=False)
    attention = tokens.attention_mask.numpy()
    for hook in tokens.hook_names:
        values = tokens[hook].numpy().astype(np.float64)
        for row in range(len(corpus)):
            n = int(attention[row].sum())
            expected_mean = values[row, 1:n].mean(axis=0)  # position 0 excluded
            np.testing.assert_allclose(means[hook][row].numpy(), expected_mean, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(lasts[hook][row].numpy(), values[row, n - 1], rtol=0, atol=0)
        np.testing.assert_allclose(tokens.sequences(hook, "mean").numpy(), means[hook].numpy(), rtol=1e-6, atol=1e-6)


def test_statistics_mask_skips_first_real_token_with_left_padding():
    attention = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    expected = torch.tensor([[0, 0, 0, 1, 1], [0, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(statistics_mask(attention, 1), expected)


def test_one_token_batch_aligns_base_and_other_model(pair, corpus, make_tiny):
    bridge, _ = pair
    batch = tokenize(tokenizer_of(bridge), corpus)
    other = make_tiny("llama", n_layers=N_LAYERS, d_model=32, n_heads=4, seed=7)
    a = collect_activations(bridge, batch, progress=False)
    b = collect_activations(other, batch, progress=False)
    assert torch.equal(a.mask, b.mask)
    assert a.tokens("blocks.2.hook_resid_post").shape == b.tokens("blocks.2.hook_resid_post").shape


def test_answer_position_is_the_last_context_token(pair):
    from rmu_lens.eval import Question
    from rmu_lens.eval.prompts import build_request, encode_requests

    bridge, reference = pair
    questions = [
        Question("What is the capital of France?", ["Paris", "Rome", "Oslo", "Bern"], 0, "geo", "t", "q0"),
        Question("Which gas do plants take in?", ["oxygen", "carbon dioxide", "helium", "neon"], 1, "bio", "t", "q1"),
    ]
    acts = answer_position_activations(bridge, questions, ["blocks.1.hook_resid_post"], progress=False)
    assert acts.reduce == "last"
    tokenized = encode_requests(tokenizer_of(bridge), [build_request(q, "cloze") for q in questions])
    for row, request in enumerate(tokenized):
        ids = torch.tensor([request.context_ids])
        with torch.no_grad():
            hidden = reference(input_ids=ids, output_hidden_states=True).hidden_states[2]
        torch.testing.assert_close(acts["blocks.1.hook_resid_post"][row], hidden[0, -1], atol=1e-5, rtol=1e-5)


def test_unknown_hook_name_is_named_in_the_error(pair, corpus):
    bridge, _ = pair
    with pytest.raises(ValueError, match="blocks.0.hook_nope"):
        collect_activations(bridge, corpus, ["blocks.0.hook_nope"], progress=False)


def test_resid_post_hooks_rejects_layers_out_of_range(pair):
    bridge, _ = pair
    assert resid_post_hooks(bridge) == [f"blocks.{i}.hook_resid_post" for i in range(N_LAYERS)]
    with pytest.raises(ValueError, match="out of range"):
        resid_post_hooks(bridge, [N_LAYERS])


def test_texts_too_short_for_skip_first_raise_a_clear_error(pair):
    bridge, _ = pair
    with pytest.raises(ValueError, match="skip_first=0"):
        collect_activations(bridge, ["a", "a longer text"], progress=False)


def test_cutting_the_forward_short_leaves_no_hooks_behind(pair, corpus):
    bridge, _ = pair
    collect_activations(bridge, corpus, progress=False)  # the last block is requested: the forward stops there
    assert not any(point.fwd_hooks for point in bridge.hook_dict.values())
