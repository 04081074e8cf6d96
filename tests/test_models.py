"""Model loading: the embedded default, local directories, hub names offline, in-memory models, saving."""

from __future__ import annotations

import pytest
import torch

from rmu_lens.models import (
    ModelNotFoundError,
    RANDOM_ARCHITECTURES,
    build_random_model,
    load_model,
    save_hf_model,
    tokenizer_of,
)


@pytest.mark.parametrize("architecture", RANDOM_ARCHITECTURES)
def test_saved_model_reloads_with_plain_transformers_and_same_logits(architecture, tmp_path):
    from transformers import AutoModelForCausalLM

    model, tokenizer = build_random_model(architecture, n_layers=2)
    bridge = load_model(model, tokenizer=tokenizer)
    batch = tokenizer(["a short text", "and a somewhat longer one"], return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = bridge(batch["input_ids"], attention_mask=batch["attention_mask"], return_type="logits")
    save_hf_model(bridge, tmp_path / "model")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model", attn_implementation="eager")
    with torch.no_grad():
        actual = reloaded(**batch).logits
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(actual[mask], expected[mask], atol=1e-5, rtol=1e-5)
    assert sorted(p.name for p in (tmp_path / "model").iterdir() if p.suffix == ".bin") == []


def test_local_directory_loads_as_bridge_with_the_models_own_tokenizer(tmp_path):
    model, tokenizer = build_random_model("llama", n_layers=2)
    save_hf_model(load_model(model, tokenizer=tokenizer), tmp_path / "m")
    bridge = load_model(tmp_path / "m")
    assert type(bridge).__name__ == "TransformerBridge"
    assert bridge.cfg.n_layers == 2
    # the model's own tokenizer adds no BOS, unlike the bridge's string tokenizer
    assert tokenizer_of(bridge)("abc")["input_ids"] == tokenizer("abc")["input_ids"]


def test_missing_hub_model_error_says_how_to_use_a_local_copy(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="local"):
        load_model("no-such-org/no-such-model-rmu-lens")


def test_directory_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="config.json"):
        load_model(tmp_path)


def test_in_memory_model_needs_its_tokenizer():
    model, _ = build_random_model("llama", n_layers=1)
    with pytest.raises(ValueError, match="tokenizer"):
        load_model(model)


@pytest.mark.integration
def test_embedded_default_cache_matches_the_gguf_load(smollm2_dir):
    """The converted safetensors copy gives the same logits as loading the GGUF itself."""
    from transformers import AutoModelForCausalLM

    from rmu_lens.models import load_gguf_hf

    gguf_model, tokenizer = load_gguf_hf("smollm2-135m")
    cached = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    batch = tokenizer(["Viruses are small infectious agents.", "The Nile flows north."], return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = gguf_model(**batch).logits
        actual = cached(**batch).logits
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)
    assert (smollm2_dir / "model.safetensors").is_file()


@pytest.mark.integration
def test_embedded_default_loads_as_a_30_layer_bridge(smollm2):
    assert smollm2.cfg.n_layers == 30 and smollm2.cfg.d_model == 576
    ids = tokenizer_of(smollm2)("Hello")["input_ids"]
    assert ids[0] != tokenizer_of(smollm2).bos_token_id
