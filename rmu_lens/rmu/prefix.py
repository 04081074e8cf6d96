"""A cache of frozen-prefix activations shared by the RMU runs of a sweep.

Layers below the first trained one are frozen and identical in every run of a sweep that restores
the weights between runs, so the inputs of block ``first`` for a token batch are the same in each:
compute them once. Valid only while every run sharing the cache starts from the same weights below
its first trained layer; the key holds the first layer, the reference flag and a digest of the batch.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import torch


class PrefixCache:
    """Block-``first`` inputs per token batch (bounded; least recently used out). Pass to RMUTrainer."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.entries: OrderedDict[tuple, Any] = OrderedDict()
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(first: int, reference: bool, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple:
        digest = hashlib.sha1(input_ids.cpu().numpy().tobytes())
        digest.update(attention_mask.cpu().numpy().tobytes())
        return (first, reference, tuple(input_ids.shape), digest.hexdigest())

    def get(self, key: tuple) -> Any:
        value = self.entries.get(key)
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        self.entries.move_to_end(key)
        return value

    def put(self, key: tuple, value: Any) -> None:
        self.entries[key] = value
        if len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
