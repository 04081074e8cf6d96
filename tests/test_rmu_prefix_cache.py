"""PrefixCache: bounded in bytes (least recently used out), entries stored where asked, runs unchanged."""

from __future__ import annotations

import pytest
import torch

from rmu_lens.rmu import RMUConfig, RMUTrainer
from rmu_lens.rmu.prefix import PrefixCache, map_tensors, tensor_bytes
from rmu_lens.rmu.runner import BlockInputs
from tests.helpers import snapshot, texts


def entry(n_floats: int, fill: float = 0.0) -> BlockInputs:
    hidden = torch.full((n_floats,), fill)
    rotary = torch.ones(4)
    # The same rotary tensor reached by two kwargs counts once.
    return BlockInputs(hidden=hidden, args={0: ()}, kwargs={0: {"position_embeddings": (rotary, rotary), "mask": None}})


def test_tensor_bytes_counts_each_distinct_tensor_once():
    assert tensor_bytes(entry(10)) == 10 * 4 + 4 * 4


def test_map_tensors_rebuilds_dataclasses_and_containers():
    doubled = map_tensors(entry(3, fill=1.0), lambda t: t * 2)
    assert isinstance(doubled, BlockInputs)
    assert torch.equal(doubled.hidden, torch.full((3,), 2.0))
    assert torch.equal(doubled.kwargs[0]["position_embeddings"][1], torch.full((4,), 2.0))
    assert doubled.kwargs[0]["mask"] is None


def test_cache_evicts_least_recently_used_entries_past_its_byte_budget():
    size = tensor_bytes(entry(10))
    cache = PrefixCache(max_bytes=2 * size)
    cache.put("a", entry(10))
    cache.put("b", entry(10))
    assert cache.get("a") is not None  # "a" is now the most recently used
    cache.put("c", entry(10))
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    assert cache.bytes == 2 * size and len(cache) == 2


def test_an_entry_larger_than_the_budget_is_not_kept():
    cache = PrefixCache(max_bytes=16)
    cache.put("big", entry(100))
    assert cache.get("big") is None and cache.bytes == 0


def test_replacing_a_key_does_not_count_it_twice():
    cache = PrefixCache(max_bytes=10**6)
    cache.put("a", entry(10))
    cache.put("a", entry(10))
    assert cache.bytes == tensor_bytes(entry(10)) and len(cache) == 1


def test_entries_are_stored_on_the_requested_device():
    cache = PrefixCache(device="meta")
    cache.put("a", entry(10))
    stored = cache.get("a")
    assert stored.hidden.device.type == "meta"
    assert all(t.device.type == "meta" for t in stored.kwargs[0]["position_embeddings"])


def test_bad_budget_is_refused():
    with pytest.raises(ValueError, match="max_bytes"):
        PrefixCache(max_bytes=0)


def test_a_small_cache_stored_on_cpu_trains_exactly_as_no_cache(make_tiny):
    config = RMUConfig(layer=2, update_layers=[1, 2], steering_coeff=20.0, alpha=10.0, lr=1e-3, batch_size=2,
                       max_batches=6, cycle=True, max_length=32, retain_max_length=32, optimizer="adamw",
                       checkpoint_every=0)
    forget, retain = texts("bio", 8), texts("retain", 8)
    plain_model = make_tiny("llama", n_layers=3, d_model=32, seed=0)
    plain = RMUTrainer(plain_model, forget, retain, config).train(None, progress=False)
    probe = RMUTrainer(make_tiny("llama", n_layers=3, d_model=32, seed=0), forget, retain, config)
    one_entry = tensor_bytes(probe._prefix(probe.batcher.get(probe.forget[0], 0, 32)))
    cache = PrefixCache(max_bytes=int(1.5 * one_entry), device="cpu")  # room for one batch: constant eviction
    cached_model = make_tiny("llama", n_layers=3, d_model=32, seed=0)
    cached = RMUTrainer(cached_model, forget, retain, config, prefix_cache=cache).train(None, progress=False)
    assert len(cache) <= 1
    assert [h["forget_loss"] for h in plain.history] == pytest.approx([h["forget_loss"] for h in cached.history], rel=1e-6)
    a, b = snapshot(plain_model), snapshot(cached_model)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
