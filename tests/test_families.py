"""The family matrix: every supported HF family passes the same checks on a tiny random model.

One line of ``FAMILIES`` per family: its ``build_random_model`` name and the HF names of the tensors
the default parameter selection trains in update layer ``{i}``. Each model has 5 layers; the tests read
layer 3 and train layers 1-3. Sliding windows are 6 tokens, shorter than every test text, and the
mixed-attention families (Gemma-2/3) alternate sliding and full layers, so layers 1-3 mix both
(Gemma-3's two kinds also use different RoPE bases). References are independent of the code under
test: an untouched HF copy of the same weights, the bridge's own full forward (``run_with_hooks``,
``run_with_cache``) and plain ``transformers`` loading.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import single_thread, texts  # noqa: F401  single_thread: a fixture used by pytestmark
from rmu_lens.analysis.activations import collect_activations
from rmu_lens.attention import UnsupportedAttentionError
from rmu_lens.eval import Question, evaluate
from rmu_lens.eval.prompts import build_request, encode_requests
from rmu_lens.models import build_random_model, hf_model_of, load_model, readable_name, tokenizer_of
from rmu_lens.rmu import RMUConfig, RMUTrainer, unlearn
from rmu_lens.rmu.params import resolve_parameters
from rmu_lens.rmu.runner import BlockRunner


@dataclass(frozen=True)
class Family:
    name: str
    trained: tuple[str, ...]  # HF names of the default trained tensors of update layer {i}

    def trained_names(self) -> set[str]:
        return {name.format(i=i) for name in self.trained for i in UPDATE_LAYERS}


DOWN = ("model.layers.{i}.mlp.down_proj.weight",)
FAMILIES = [
    Family("llama", DOWN),
    Family("mistral", DOWN),
    Family("mixtral", ("model.layers.{i}.mlp.experts.down_proj",)),
    Family("qwen2", DOWN),
    Family("qwen2_moe", ("model.layers.{i}.mlp.experts.down_proj", "model.layers.{i}.mlp.shared_expert.down_proj.weight")),
    Family("qwen3", DOWN),
    Family("qwen3_moe", ("model.layers.{i}.mlp.experts.down_proj",)),
    Family("gemma2", DOWN),
    Family("gemma3", DOWN),
    Family("phi3", DOWN),
    Family("olmo2", DOWN),
    Family("gpt2", ("transformer.h.{i}.mlp.c_proj.weight",)),
    Family("gpt_neox", ("gpt_neox.layers.{i}.mlp.dense_4h_to_h.weight",)),
]
BY_NAME = {f.name: f for f in FAMILIES}
N_LAYERS, D_MODEL, WINDOW, LAYER = 5, 32, 6, 3
UPDATE_LAYERS = [1, 2, 3]
HOOK = f"blocks.{LAYER}.hook_resid_post"
FORGET = {"a": texts("bio", 6, seed=1, min_words=3, max_words=7), "b": texts("cyber", 6, seed=2, min_words=3, max_words=7)}
RETAIN = texts("retain", 6, seed=3, min_words=3, max_words=7)
QUESTIONS = [
    Question(f"Which word follows {' '.join(texts('bio', 1, seed=i, min_words=2, max_words=4))}?",
             ["seven and two", texts("retain", 1, seed=i, min_words=1, max_words=2)[0], "none of these", "x"],
             i % 4, "biology", "wmdp-bio", f"q{i}")
    for i in range(5)
]
family_names = pytest.mark.parametrize("family", [f.name for f in FAMILIES])


pytestmark = pytest.mark.usefixtures("single_thread")


def build(family: str, seed: int = 0):
    """(HF model, byte tokenizer) of a family, 5 layers, 6-token sliding windows."""
    return build_random_model(family, n_layers=N_LAYERS, d_model=D_MODEL, n_heads=4, sliding_window=WINDOW, seed=seed)


def bridge_and_plain(family: str):
    """A bridge and an untouched HF copy of the same weights (the independent reference)."""
    model, tokenizer = build(family)
    plain = copy.deepcopy(model).eval()
    return load_model(model, tokenizer=tokenizer), plain


def config(**overrides) -> RMUConfig:
    settings = dict(layer=LAYER, steering_coeff=4.0, alpha=10.0, lr=1e-3, batch_size=2, max_batches=3,
                    max_length=64, retain_max_length=64, checkpoint_every=0, optimizer="adamw")
    return RMUConfig(**(settings | overrides))


def hf_tensors(bridge) -> dict[str, torch.Tensor]:
    model = hf_model_of(bridge)
    named = list(model.named_parameters()) + list(model.named_buffers())
    return {readable_name(name): tensor for name, tensor in named}


def right_padded(tokenizer, batch: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.padding_side = "right"
    encoded = tokenizer(batch, return_tensors="pt", padding=True)
    return encoded["input_ids"], encoded["attention_mask"]


def assert_close_scaled(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5) -> None:
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * expected.abs().max().item())


@pytest.fixture(scope="module", params=[f.name for f in FAMILIES])
def trained_run(request, tmp_path_factory):
    """A short RMU run with the default parameter selection, saved with its model/ folder."""
    bridge, plain = bridge_and_plain(request.param)
    before = {name: tensor.detach().clone() for name, tensor in hf_tensors(bridge).items()}
    out = tmp_path_factory.mktemp(request.param) / "run"
    run = unlearn(bridge, FORGET, RETAIN, config(), out=out, progress=False)
    return BY_NAME[request.param], bridge, before, run, out


@family_names
def test_loads_from_a_saved_folder_and_from_memory(family, tmp_path):
    model, tokenizer = build(family)
    plain = copy.deepcopy(model).eval()
    plain.save_pretrained(tmp_path, safe_serialization=True)
    tokenizer.save_pretrained(tmp_path)
    ids = torch.tensor([tokenizer(RETAIN[0] + " " + RETAIN[1])["input_ids"]])
    assert ids.shape[1] > 2 * WINDOW
    with torch.no_grad():
        expected = plain(input_ids=ids).logits
        for bridge in (load_model(model, tokenizer=tokenizer), load_model(tmp_path)):
            assert_close_scaled(bridge(ids), expected)


@family_names
def test_block_runner_equals_bridge_activations_and_gradients_before_and_after_steps(family):
    bridge, _ = bridge_and_plain(family)
    tokenizer = tokenizer_of(bridge)
    trainer = RMUTrainer(bridge, FORGET, RETAIN, config())
    trained = [p.parameter for p in trainer.trained]
    ids, mask = right_padded(tokenizer, FORGET["a"][:3])
    assert ids.shape[1] > 2 * WINDOW and (mask == 0).any()
    keep = mask.bool()
    target = torch.randn(D_MODEL, generator=torch.Generator().manual_seed(0))
    for steps in (0, 3):
        for _ in range(steps):
            trainer.train_step()
        runner = BlockRunner(bridge, min(UPDATE_LAYERS), LAYER)
        fast = runner.run(runner.prefix(ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)))
        captured = []
        bridge.run_with_hooks(ids, attention_mask=mask, fwd_hooks=[(HOOK, lambda act, hook: captured.append(act))])
        full = captured[0]
        assert_close_scaled(fast[keep], full[keep])
        fast_grads = torch.autograd.grad(F.mse_loss(fast[keep], target.expand_as(fast[keep])), trained)
        full_grads = torch.autograd.grad(F.mse_loss(full[keep], target.expand_as(full[keep])), trained)
        for fast_grad, full_grad in zip(fast_grads, full_grads):
            assert full_grad.abs().max() > 0
            assert_close_scaled(fast_grad, full_grad, rtol=1e-4)


def test_unlearn_changes_exactly_the_default_tensors(trained_run):
    family, bridge, before, run, _ = trained_run
    expected = family.trained_names()
    changed = {name for name, tensor in hf_tensors(bridge).items() if not torch.equal(tensor, before[name])}
    assert changed == expected
    assert len(run.trained_parameters) == len(expected)


def test_saved_model_reloads_in_plain_transformers_with_trained_tensors_bit_identical(trained_run):
    from transformers import AutoModelForCausalLM

    family, bridge, before, _, out = trained_run
    reloaded = AutoModelForCausalLM.from_pretrained(out / "model", use_safetensors=True)
    state = reloaded.state_dict()
    current = hf_tensors(bridge)
    for name in family.trained_names():
        assert torch.equal(state[name], current[name]) and not torch.equal(state[name], before[name])


def reference_loglikelihoods(plain, tokenizer, mode) -> list[list[float]]:
    """lm-eval's computation written plainly: one sequence (context + continuation)[:-1] per choice."""
    rows = []
    with torch.no_grad():
        for tokenized in encode_requests(tokenizer, [build_request(q, mode) for q in QUESTIONS]):
            row = []
            for continuation in tokenized.continuation_ids:
                inputs = torch.tensor([(tokenized.context_ids + continuation)[:-1]])
                assert inputs.shape[1] > 2 * WINDOW
                logprobs = plain(input_ids=inputs).logits[0, -len(continuation):].float().log_softmax(-1)
                row.append(float(logprobs[torch.arange(len(continuation)), continuation].sum()))
            rows.append(row)
    return rows


@pytest.mark.parametrize("mode", ["letter", "cloze"])
@family_names
def test_evaluate_loglikelihoods_equal_a_plain_hf_forward_of_each_request(family, mode):
    bridge, plain = bridge_and_plain(family)
    result = evaluate(bridge, QUESTIONS, mode=mode, batch_size=3, progress=False)
    reference = reference_loglikelihoods(plain, tokenizer_of(bridge), mode)
    for record, row in zip(result.records, reference):
        torch.testing.assert_close(torch.tensor(record["loglikelihoods"]), torch.tensor(row), atol=1e-4, rtol=0)


@family_names
def test_collect_activations_equals_run_with_cache(family):
    bridge, _ = bridge_and_plain(family)
    hooks = [f"blocks.{i}.hook_resid_post" for i in range(N_LAYERS)]
    corpus = FORGET["b"][:4]
    acts = collect_activations(bridge, corpus, hooks, batch_size=4, skip_first=0, progress=False)
    tokenizer = tokenizer_of(bridge)
    for row, text in enumerate(corpus):
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        assert ids.shape[1] > WINDOW
        _, cache = bridge.run_with_cache(ids, names_filter=hooks)
        for hook in hooks:
            assert_close_scaled(acts[hook][row, : ids.shape[1]], cache[hook][0])


# -- mixture of experts -----------------------------------------------------------------------


def test_moe_alias_and_hf_name_name_every_experts_down_projection():
    bridge, _ = bridge_and_plain("mixtral")
    by_alias = resolve_parameters(bridge, ["blocks.{layer}.mlp.out.weight"], UPDATE_LAYERS)
    by_hf_name = resolve_parameters(bridge, ["model.layers.{layer}.mlp.experts.down_proj"], UPDATE_LAYERS)
    assert [p.parameter for p in by_alias] == [p.parameter for p in by_hf_name]
    assert [p.bridge_name for p in by_alias] == [f"blocks.{i}.mlp.experts.down_proj" for i in UPDATE_LAYERS]
    n_experts = hf_model_of(bridge).config.num_local_experts
    assert all(p.parameter.shape[0] == n_experts for p in by_alias)


def test_training_chosen_experts_leaves_the_other_experts_bit_identical():
    bridge, _ = bridge_and_plain("mixtral")
    before = {name: tensor.detach().clone() for name, tensor in hf_tensors(bridge).items()}
    unlearn(bridge, FORGET, RETAIN, config(experts=[1, 3]), progress=False)
    after = hf_tensors(bridge)
    trained = BY_NAME["mixtral"].trained_names()
    for name in trained:
        for expert in range(after[name].shape[0]):
            same = torch.equal(after[name][expert], before[name][expert])
            assert same == (expert not in (1, 3)), f"{name} expert {expert}"
    untouched = [n for n in after if n not in trained]
    assert all(torch.equal(after[n], before[n]) for n in untouched)


def test_experts_on_a_dense_model_is_one_clear_error():
    bridge, _ = bridge_and_plain("llama")
    with pytest.raises(ValueError, match="has no experts"):
        RMUTrainer(bridge, FORGET, RETAIN, config(experts=[0]))


def test_experts_with_weight_decay_is_refused():
    with pytest.raises(ValueError, match="weight_decay=0"):
        config(experts=[0], weight_decay=0.01)


def test_mixtral_profile_is_the_published_setting():
    cfg = RMUConfig.profile("mixtral-8x7b")
    assert (cfg.layer, cfg.update_layers, cfg.steering_coeff, cfg.alpha) == (7, [5, 6, 7], 300.0, 1600.0)


# -- attention kinds --------------------------------------------------------------------------


def test_an_unsupported_layer_kind_is_one_error_naming_the_layer_and_the_kind():
    bridge, _ = bridge_and_plain("qwen3")
    hf_model_of(bridge).config.layer_types[2] = "chunked_attention"
    with pytest.raises(UnsupportedAttentionError, match="Layer 2 uses attention kind 'chunked_attention'"):
        BlockRunner(bridge, 1, 3)
