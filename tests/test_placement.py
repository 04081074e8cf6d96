"""Training with only embeddings and layers 0..l placed (later layers offloaded) equals training on one device."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from rmu_lens.models import build_random_model, load_model
from rmu_lens.placement import DeviceMapError, training_device_map
from rmu_lens.rmu.config import RMUConfig
from rmu_lens.rmu.trainer import unlearn

TEXTS = [f"Sentence number {i} talks about cells, proteins and the weather in spring." for i in range(6)]
CONFIG = dict(layer=1, update_layers=[0, 1], steering_coeff=20.0, alpha=10.0, lr=1e-3, batch_size=2,
              max_batches=3, max_length=24, retain_max_length=24, checkpoint_every=0)


@pytest.fixture(params=["llama", "gemma2"])
def saved(request, tmp_path):
    model, tokenizer = build_random_model(request.param, n_layers=4, d_model=32, n_heads=4, seed=3)
    model.save_pretrained(tmp_path / "model", safe_serialization=True)
    tokenizer.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_training_map_places_only_what_the_loss_reads(saved):
    device_map = training_device_map(saved, layer=1, device="cpu", rest="disk")
    assert {k: v for k, v in device_map.items() if ".layers." in k} == {
        "model.layers.0": "cpu", "model.layers.1": "cpu", "model.layers.2": "disk", "model.layers.3": "disk"}
    assert device_map["model.embed_tokens"] == "cpu" and device_map["model.norm"] == "disk"
    with pytest.raises(DeviceMapError, match="layer=4 is out of range"):
        training_device_map(saved, layer=4, device="cpu")


def test_offloaded_upper_layers_train_bit_identically_and_save_the_whole_model(saved, tmp_path):
    config = RMUConfig(**CONFIG)
    full = unlearn(load_model(saved, device="cpu"), {"bio": TEXTS}, TEXTS, config, out=tmp_path / "full", progress=False)
    device_map = training_device_map(saved, layer=config.layer, device="cpu", rest="disk")
    placed = load_model(saved, device_map=device_map, offload_folder=tmp_path / "offload")
    split = unlearn(placed, {"bio": TEXTS}, TEXTS, config, out=tmp_path / "split", progress=False)
    assert [r["loss"] for r in split.history] == [r["loss"] for r in full.history]
    full_saved = load_file(tmp_path / "full" / "model" / "model.safetensors")
    split_saved = load_file(tmp_path / "split" / "model" / "model.safetensors")
    assert split_saved.keys() == full_saved.keys()
    original = load_file(saved / "model.safetensors")
    assert any(not torch.equal(full_saved[k], original[k]) for k in original)  # training changed something
    for name in full_saved:
        assert torch.equal(split_saved[name], full_saved[name]), name
