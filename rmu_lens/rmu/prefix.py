"""A cache of frozen-prefix activations shared by the RMU runs of a sweep.

Layers below the first trained one are frozen and identical in every run of a sweep that restores
the weights between runs, so the inputs of block ``first`` for a token batch are the same in each:
compute them once. Valid only while every run sharing the cache starts from the same weights below
its first trained layer; the key holds the first layer, the reference flag and a digest of the batch.

The cache is bounded in bytes, not entries: one Zephyr-7B-shaped batch (4 × 512 tokens, bf16) is
about 19 MiB of hidden states and rotary tables, so an entry count says nothing about memory. Entries
can be kept off the accelerator (``device="cpu"``, pinned when CUDA is present so copies back are
asynchronous); the block runner moves them to each layer's device when it runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch

DEFAULT_MAX_BYTES = 4 * 2**30


def map_tensors(value: Any, function: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``value`` with ``function`` applied to every tensor inside it (tuples, lists, dicts, dataclasses)."""
    if isinstance(value, torch.Tensor):
        return function(value)
    if isinstance(value, tuple):
        return tuple(map_tensors(v, function) for v in value)
    if isinstance(value, list):
        return [map_tensors(v, function) for v in value]
    if isinstance(value, dict):
        return {k: map_tensors(v, function) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: map_tensors(getattr(value, f.name), function) for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **changes)
    return value


def tensor_bytes(value: Any) -> int:
    """Bytes held by the distinct tensors inside ``value`` (a tensor shared by two kwargs counts once)."""
    seen: dict[int, int] = {}

    def count(tensor: torch.Tensor) -> torch.Tensor:
        seen[id(tensor)] = tensor.numel() * tensor.element_size()
        return tensor

    map_tensors(value, count)
    return sum(seen.values())


class PrefixCache:
    """Block-``first`` inputs per token batch, least recently used out past ``max_bytes``. Pass to RMUTrainer.

    ``device``: where entries are stored (``None`` keeps them where they were computed; ``"cpu"`` frees
    the accelerator, pinned when CUDA is available). An entry larger than ``max_bytes`` is not kept.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, device: str | torch.device | None = None) -> None:
        if max_bytes <= 0:
            raise ValueError(f"PrefixCache(max_bytes={max_bytes}): give a positive size in bytes")
        self.entries: OrderedDict[tuple, tuple[Any, int]] = OrderedDict()
        self.max_bytes = int(max_bytes)
        self.device = torch.device(device) if device is not None else None
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(first: int, reference: bool, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple:
        digest = hashlib.sha1(input_ids.cpu().numpy().tobytes())
        digest.update(attention_mask.cpu().numpy().tobytes())
        return (first, reference, tuple(input_ids.shape), digest.hexdigest())

    def get(self, key: tuple) -> Any:
        entry = self.entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self.entries.move_to_end(key)
        return entry[0]

    def put(self, key: tuple, value: Any) -> None:
        stored = self._store(value)
        size = tensor_bytes(stored)
        if key in self.entries:
            self.bytes -= self.entries.pop(key)[1]
        if size > self.max_bytes:
            return
        self.entries[key] = (stored, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, evicted) = self.entries.popitem(last=False)
            self.bytes -= evicted

    def _store(self, value: Any) -> Any:
        if self.device is None:
            return value
        pin = self.device.type == "cpu" and torch.cuda.is_available()

        def move(tensor: torch.Tensor) -> torch.Tensor:
            if tensor.device == self.device:
                return tensor
            moved = tensor.to(self.device)
            return moved.pin_memory() if pin else moved

        return map_tensors(value, move)

    def __len__(self) -> int:
        return len(self.entries)
