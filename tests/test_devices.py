"""Placement: devices, dtypes and device maps end up where asked; training and saving check them."""

from __future__ import annotations

import logging

import pytest
import torch

from rmu_lens.models import (
    PlacementError,
    build_random_model,
    hf_model_of,
    load_model,
    offloaded_modules,
    readable_name,
    save_hf_model,
)
from rmu_lens.rmu.config import RMUConfig
from rmu_lens.rmu.trainer import RMUTrainer, unlearn

TEXTS = [
    "The quick brown fox jumps over the lazy dog near the river bank today.",
    "Viral capsids protect the genome and attach to receptors on host cells.",
    "A buffer overflow writes past the end of an array into nearby memory.",
    "Rivers carry sediment from the mountains down to the wide flat delta.",
]
# Layers 0-1 in memory, layers 2-3, the final norm and the LM head offloaded to disk.
DISK_MAP = {
    "model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu", "model.layers.1": "cpu",
    "model.layers.2": "disk", "model.layers.3": "disk", "model.norm": "disk", "lm_head": "disk",
}


def small_config(**overrides) -> RMUConfig:
    settings = dict(layer=1, update_layers=[0, 1], steering_coeff=20.0, alpha=10.0, lr=1e-3, batch_size=2,
                    max_batches=2, max_length=32, retain_max_length=32, checkpoint_every=0)
    return RMUConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    model, tokenizer = build_random_model("llama", n_layers=4)
    return save_hf_model(load_model(model, tokenizer=tokenizer), tmp_path_factory.mktemp("tiny") / "model")


def plain_logits(directory, texts=TEXTS[:2]):
    """Logits of a plain transformers forward of the saved model (the reference)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager")
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits, batch


def bridge_logits(bridge, batch):
    with torch.no_grad():
        return bridge(batch["input_ids"], attention_mask=batch["attention_mask"], return_type="logits")


@pytest.mark.parametrize("source", ["in-memory", "folder"])
def test_meta_device_moves_every_parameter_and_buffer(source, tiny_dir):
    if source == "in-memory":
        model, tokenizer = build_random_model("llama", n_layers=2)
        bridge = load_model(model, tokenizer=tokenizer, device="meta")
    else:
        bridge = load_model(tiny_dir, device="meta")
    hf_model = hf_model_of(bridge)
    on_cpu = [n for n, t in [*hf_model.named_parameters(), *hf_model.named_buffers()] if t.device.type != "meta"]
    assert on_cpu == []
    assert any("inv_freq" in n for n, _ in hf_model.named_buffers())  # the rotary buffers moved too
    assert bridge.cfg.device == "meta"


def test_in_memory_dtype_cast_equals_loading_in_that_dtype(tiny_dir):
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    bridge = load_model(model, tokenizer=load_model(tiny_dir).tokenizer, dtype="bfloat16")
    cast = hf_model_of(bridge)
    cast_state = {readable_name(k): v for k, v in cast.state_dict().items()}
    for name, tensor in reference.state_dict().items():
        assert cast_state[name].dtype == tensor.dtype and torch.equal(cast_state[name], tensor), name
    # Rotary frequencies stay float32, as from_pretrained(dtype=bfloat16) keeps them.
    assert {b.dtype for n, b in cast.named_buffers() if "inv_freq" in n} == {torch.float32}


def test_explicit_device_map_offloads_to_disk_and_computes_the_same_logits(tiny_dir, tmp_path):
    expected, batch = plain_logits(tiny_dir)
    bridge = load_model(tiny_dir, device_map=DISK_MAP, offload_folder=tmp_path / "offload")
    hf_model = hf_model_of(bridge)
    assert hf_model.hf_device_map == DISK_MAP
    assert hf_model.model.layers[2].mlp.down_proj.weight.device.type == "meta"  # values live on disk
    assert hf_model.model.layers[1].mlp.down_proj.weight.device.type == "cpu"
    assert any(name.startswith("model.layers.2.") for name in offloaded_modules(hf_model))
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(bridge_logits(bridge, batch)[mask], expected[mask], atol=1e-5, rtol=1e-5)


def test_auto_device_map_with_small_max_memory_spills_to_disk_in_memory_model(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    expected, batch = plain_logits(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    bridge = load_model(model, tokenizer=AutoTokenizer.from_pretrained(tiny_dir), device_map="auto",
                        max_memory={"cpu": 400_000})
    placed = set(hf_model_of(bridge).hf_device_map.values())
    assert placed == {"cpu", "disk"}
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(bridge_logits(bridge, batch)[mask], expected[mask], atol=1e-5, rtol=1e-5)


def test_default_device_is_cpu_without_cuda_and_logged_once(tiny_dir, caplog, monkeypatch):
    import rmu_lens.models as models

    monkeypatch.setattr(models, "_default_device_logged", False)
    with caplog.at_level(logging.INFO, logger="rmu_lens.models"):
        first = load_model(tiny_dir)
        load_model(tiny_dir)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert str(next(first.parameters()).device).startswith(expected)
    assert sum("No device given" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"device": "cpu", "device_map": "auto"}, "both given"),
        ({"device_map": {"model": "meta"}}, "meta"),
        ({"device_map": "everywhere"}, "device_map='everywhere'"),
        ({"max_memory": {"cpu": 1}}, "only apply with a device_map"),
        ({"dtype": "float8"}, "dtype='float8'"),
        ({"device": "gpu"}, "device='gpu' is not a torch device"),
        ({"device": "cuda:99"}, "cuda:99"),
        ({"device_map": {"": 99}}, "device=99"),
    ],
)
def test_contradictory_placement_is_one_clear_error(tiny_dir, options, message):
    with pytest.raises(ValueError, match=message):
        load_model(tiny_dir, **options)


@pytest.mark.parametrize("source", ["in-memory", "folder"])
def test_offloaded_input_embedding_is_refused_at_load(source, tiny_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device_map = {**{k: "cpu" for k in DISK_MAP}, "model.embed_tokens": "disk"}
    with pytest.raises(PlacementError, match="offloads the input embedding"):
        if source == "folder":
            load_model(tiny_dir, device_map=device_map, offload_folder=tmp_path / "o")
        else:
            model = AutoModelForCausalLM.from_pretrained(tiny_dir)
            load_model(model, tokenizer=AutoTokenizer.from_pretrained(tiny_dir), device_map=device_map)


def test_trained_tensor_offloaded_to_disk_is_refused_naming_it_and_the_fix(tiny_dir, tmp_path):
    bridge = load_model(tiny_dir, device_map={**DISK_MAP, "model.layers.1": "disk"}, offload_folder=tmp_path / "off")
    with pytest.raises(PlacementError, match=r"blocks\.1\.mlp\.out\.weight .*disk.*layers 0\.\.1 on a device"):
        RMUTrainer(bridge, {"bio": TEXTS}, TEXTS, small_config())


def test_trained_tensor_on_meta_is_refused_naming_it(tiny_dir):
    bridge = load_model(tiny_dir, device="meta")
    with pytest.raises(PlacementError, match=r"blocks\.0\.mlp\.out\.weight .*meta device"):
        RMUTrainer(bridge, {"bio": TEXTS}, TEXTS, small_config())


def test_frozen_copies_sit_beside_their_tensors(tiny_dir):
    trainer = RMUTrainer(load_model(tiny_dir, dtype="bfloat16"), {"bio": TEXTS}, TEXTS, small_config())
    for p in trainer.trained:
        frozen = trainer.frozen[p.hf_name]
        assert (frozen.device, frozen.dtype) == (p.parameter.device, p.parameter.dtype)
        assert frozen.data_ptr() != p.parameter.data_ptr()


def test_run_with_offloaded_untrained_layers_saves_a_model_that_reloads(tiny_dir, tmp_path):
    from safetensors.torch import load_file

    bridge = load_model(tiny_dir, device_map=DISK_MAP, offload_folder=tmp_path / "offload")
    run = unlearn(bridge, {"bio": TEXTS}, TEXTS, small_config(), out=tmp_path / "run", progress=False)
    assert run.status == "finished"
    saved = load_file(tmp_path / "run" / "model" / "model.safetensors")
    original = load_file(tiny_dir / "model.safetensors")
    assert saved.keys() == original.keys()
    changed = sorted(k for k in original if not torch.equal(saved[k], original[k]))
    assert changed == ["model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"]
    trained = {p.hf_name: p.parameter.detach() for p in RMUTrainer(bridge, {"bio": TEXTS}, TEXTS, small_config()).trained}
    for name in changed:
        assert torch.equal(saved[name], trained[name])


def test_saving_a_meta_model_is_refused_with_the_fix(tiny_dir, tmp_path):
    with pytest.raises(PlacementError, match="meta device.*load it on a real device"):
        save_hf_model(load_model(tiny_dir, device="meta"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_evaluate_refuses_to_score_a_loaded_model_on_another_device_silently(tiny_dir):
    from rmu_lens.eval import Question, evaluate

    question = Question(question="Which?", choices=["a", "b", "c", "d"], answer=0, subject=None, task="t", id="q0")
    with pytest.raises(ValueError, match="device='meta'.*loaded on cpu"):
        evaluate(load_model(tiny_dir, device="cpu"), [question], device="meta", progress=False)


def test_evaluate_on_an_offloaded_model_equals_the_in_memory_model(tiny_dir, tmp_path):
    from rmu_lens.eval import Question, evaluate

    questions = [Question(question=f"Question {i} about rivers?", choices=["sand", "rock", "mud", "salt"], answer=i % 4,
                          subject=None, task="geo", id=f"q{i}") for i in range(3)]
    offloaded = evaluate(load_model(tiny_dir, device_map=DISK_MAP, offload_folder=tmp_path / "o"), questions, progress=False)
    plain = evaluate(load_model(tiny_dir, device="cpu"), questions, progress=False)
    for a, b in zip(offloaded.records, plain.records):
        assert a["loglikelihoods"] == pytest.approx(b["loglikelihoods"], abs=1e-5)


def test_collect_activations_on_an_offloaded_model_equals_run_with_cache(tiny_dir, tmp_path):
    from rmu_lens.analysis.activations import collect_activations, tokenize
    from rmu_lens.models import tokenizer_of

    hooks = ["blocks.1.hook_resid_post", "blocks.3.hook_resid_post"]  # one layer in memory, one on disk
    offloaded = load_model(tiny_dir, device_map=DISK_MAP, offload_folder=tmp_path / "o")
    batch = tokenize(tokenizer_of(offloaded), TEXTS, max_length=32)
    collected = collect_activations(offloaded, batch, hooks, progress=False)
    reference = load_model(tiny_dir, device="cpu")
    with torch.no_grad():
        _, cache = reference.run_with_cache(batch.input_ids, attention_mask=batch.attention_mask, names_filter=hooks)
    real = batch.attention_mask.bool()
    for name in hooks:
        torch.testing.assert_close(collected.values[name][real], cache[name][real], atol=1e-5, rtol=1e-5)
