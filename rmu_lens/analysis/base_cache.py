"""The base model's activations kept across calls, so several unlearned models share one base pass.

    cache = {}                                   # kept by the caller, one per base model
    for name, model in unlearned.items():
        analyze_model(base, model, datasets, base_cache=cache)   # the base runs on the first model only

:func:`~rmu_lens.analysis.analyze` stores one :class:`~rmu_lens.analysis.activations.Activations` per
dataset under a key made of the base model, the dataset's name, the batch settings (``max_texts``,
``max_length``, ``batch_size``) and a digest of the token batch itself, so a changed setting or
changed texts never reuse a stale entry. An entry serves any call whose hook points it holds (a
different l̂ with the same ``layers`` reads a subset); a call needing more hook points collects the
union once and replaces the entry. Entries stay in memory up to ``memory_limit_mb`` in all; past that
they are spilled to safetensors shards in a temporary folder (deleted with the entry), bit-identical.

:func:`recover_cache` gives :func:`~rmu_lens.analysis.recover.recover` its own part of the same dict,
keyed the same way, since recover's own keys name only the topic.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from rmu_lens.analysis.activations import BLOCK_HOOK, Activations, collect_activations
from rmu_lens.data.corpora import Corpus
from rmu_lens.rmu.batches import TokenBatch

ANALYSIS_KEY = "analysis"
RECOVER_KEY = "recover"


def batch_digest(batch: TokenBatch) -> str:
    """SHA-1 of a token batch's ids and mask (with their shapes): equal digests mean the same tokens."""
    digest = hashlib.sha1()
    for tensor in (batch.input_ids, batch.attention_mask):
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()


def texts_digest(data: Any) -> str:
    """SHA-1 of texts, a Corpus or a TokenBatch (what recover() is given)."""
    if isinstance(data, TokenBatch):
        return batch_digest(data)
    texts = data.texts if isinstance(data, Corpus) else data
    digest = hashlib.sha1()
    for text in texts:
        digest.update(str(text).encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def _in_memory_mb(cache: Mapping[Any, Any]) -> float:
    total = 0
    for key, value in cache.items():
        if isinstance(key, tuple) and key[:1] == (ANALYSIS_KEY,) and isinstance(value, Activations) and not value.spilled:
            total += sum(t.numel() * t.element_size() for t in value.values.values())
    return total / 2**20


def _view(entry: Activations, hooks: Sequence[str]) -> Activations:
    """``entry`` at ``hooks`` only; shares its tensors (or shards) and never deletes them."""
    values = {} if entry.spilled else {h: entry.values[h] for h in hooks}
    return Activations(list(hooks), entry.attention_mask, entry.mask, entry.reduce, entry.skip_first,
                       values=values, shards=list(entry.shards), spill_dir=entry.spill_dir)


def _layer_order(hook: str) -> tuple[int, str]:
    match = BLOCK_HOOK.match(hook)
    return (int(match.group(1)) if match else -1, hook)


@contextmanager
def base_activations(
    base_model: Any,
    batch: TokenBatch,
    hooks: Sequence[str],
    *,
    cache: dict[Any, Any] | None,
    name: str,
    settings: Mapping[str, Any],
    batch_size: int,
    memory_limit_mb: float,
    progress: bool,
) -> Iterator[Activations]:
    """The base model's per-token activations of ``batch`` at ``hooks``: from ``cache`` when it holds
    them, else collected (and stored there). Without a cache they are collected and dropped on exit."""
    collect = dict(batch_size=batch_size, progress=progress)
    if cache is None:
        with collect_activations(base_model, batch, hooks, memory_limit_mb=memory_limit_mb, **collect) as acts:
            yield acts
        return
    key = (ANALYSIS_KEY, id(base_model), name, *sorted(settings.items()), ("batch_size", batch_size), batch_digest(batch))
    entry = cache.get(key)
    if not isinstance(entry, Activations) or not set(hooks) <= set(entry.hook_names):
        wanted = sorted(set(hooks) | set(entry.hook_names if isinstance(entry, Activations) else ()), key=_layer_order)
        cache.pop(key, None)
        room = max(0.0, memory_limit_mb - _in_memory_mb(cache))
        # collect_activations spills when the values would exceed its limit: no room left means spill now.
        entry = collect_activations(base_model, batch, wanted, memory_limit_mb=room, **collect)
        cache[key] = entry
    yield _view(entry, hooks)


def recover_cache(
    cache: dict[Any, Any], base_model: Any, forget: Mapping[str, Any], retain: Any, *,
    layers: Sequence[int] | None, max_texts: int | None, max_length: int, batch_size: int = 8,
) -> dict[str, Any]:
    """The part of ``cache`` for one :func:`~rmu_lens.analysis.recover.recover` setting: its ``base_cache``.

    Keyed by the base model, the layers, the batch settings and a digest of the forget and retain
    texts, so recover's own keys (``retain``, ``forget:TOPIC``) never meet an entry of other settings.
    """
    texts = tuple((str(topic), texts_digest(data)) for topic, data in forget.items()) + (("retain", texts_digest(retain)),)
    key = (RECOVER_KEY, id(base_model), None if layers is None else tuple(int(x) for x in layers), max_texts,
           max_length, batch_size, texts)
    return cache.setdefault(key, {})
