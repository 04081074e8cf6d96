"""Forget/retain inputs as token batches, and the official step schedule over them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rmu_lens.data.corpora import Corpus, batch_texts


@dataclass
class TokenBatch:
    """One batch: token ids and the padding mask (1 = real token)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    @property
    def n_tokens(self) -> int:
        return int(self.attention_mask.sum())


@dataclass
class Source:
    """A named forget topic or retain set: texts (tokenized per step) or pre-tokenized batches."""

    name: str
    texts: list[str] | None
    batches: list[TokenBatch] | None
    origin: str
    sha256: str

    def n_batches(self, batch_size: int) -> int:
        return len(self.batches) if self.batches is not None else len(batch_texts(self.texts, batch_size))

    def summary(self, batch_size: int) -> dict[str, Any]:
        return {
            "name": self.name, "source": self.origin, "sha256": self.sha256,
            "n_texts": len(self.texts) if self.texts is not None else None,
            "n_batches": self.n_batches(batch_size),
        }


def right_pad(sequences: list[list[int]], pad_id: int) -> TokenBatch:
    """Token id lists as one right-padded batch with its attention mask."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor(sequence)
        mask[row, : len(sequence)] = 1
    return TokenBatch(ids, mask)


def _tensor_hash(batches: list[TokenBatch]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for batch in batches:
        digest.update(batch.input_ids.to(torch.int64).cpu().numpy().tobytes())
        digest.update(batch.attention_mask.to(torch.int64).cpu().numpy().tobytes())
    return digest.hexdigest()


def _as_batch(item: Any, where: str) -> TokenBatch:
    try:
        ids, mask = item["input_ids"], item.get("attention_mask") if hasattr(item, "get") else item["attention_mask"]
    except (KeyError, TypeError) as error:
        raise ValueError(f"{where}: a pre-tokenized batch must be a mapping with 'input_ids' and 'attention_mask'") from error
    ids = torch.as_tensor(ids)
    mask = torch.ones_like(ids) if mask is None else torch.as_tensor(mask)
    if ids.ndim != 2 or ids.shape != mask.shape:
        raise ValueError(f"{where}: input_ids and attention_mask must both be [batch, seq] tensors of one shape")
    batch = TokenBatch(ids.long(), mask.long())
    check_measurable(batch, f"{where}: this pre-tokenized batch", "give rows of two or more real tokens")
    return batch


def check_measurable(batch: TokenBatch, what: str, fix: str) -> None:
    """Raise unless some row has a real token after its first one.

    The first real token of each row is left out of the metrics and of adaptive RMU's norm (its
    activations are outliers), so a batch of one-token rows would give NaN for both.
    """
    if not bool((batch.attention_mask.sum(-1) >= 2).any()):
        raise ValueError(f"{what} has no row of two or more tokens, so its norms and cosines are undefined; {fix}")


def as_source(name: str, data: Any) -> Source:
    """Normalise a Corpus, a list of texts, or a list of pre-tokenized batches into a Source."""
    if isinstance(data, Corpus):
        return Source(name, list(data.texts), None, data.source, data.sha256)
    if isinstance(data, str) or not isinstance(data, Sequence) or len(data) == 0:
        raise ValueError(f"{name}: expected a Corpus, a non-empty list of texts, or a list of token batches")
    if all(isinstance(item, str) for item in data):
        corpus = Corpus(name=name, texts=list(data), source="in-memory texts")
        return Source(name, corpus.texts, None, corpus.source, corpus.sha256)
    batches = [_as_batch(item, f"{name}[{i}]") for i, item in enumerate(data)]
    return Source(name, None, batches, "pre-tokenized batches", _tensor_hash(batches))


def forget_sources(forget: Any) -> list[Source]:
    """Forget topics in order: a mapping name -> data, one Corpus / list, or a list of them."""
    if isinstance(forget, Mapping):
        return [as_source(str(name), data) for name, data in forget.items()]
    if isinstance(forget, Corpus):
        return [as_source(forget.name, forget)]
    if isinstance(forget, Sequence) and forget and all(isinstance(x, str) for x in forget):
        return [as_source("forget", forget)]
    if isinstance(forget, Sequence) and forget and all(isinstance(x, Mapping) for x in forget):
        return [as_source("forget", forget)]  # token batches of one topic (a topic's data is never a mapping)
    if isinstance(forget, Sequence) and forget and not isinstance(forget, str):
        sources = []
        for i, item in enumerate(forget):
            name = item.name if isinstance(item, Corpus) else f"topic{i}"
            sources.append(as_source(name, item))
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"Forget topics need distinct names, got {names}")
        return sources
    raise ValueError("forget: expected a Corpus, a list of texts or batches, a list of those, or a mapping name -> data")


def retain_sources(retain: Any, n_topics: int) -> list[Source]:
    """Retain data: one set shared by all topics, or a list with one set per topic (as officially)."""
    if isinstance(retain, Corpus) or (
        isinstance(retain, Sequence) and retain and isinstance(retain[0], (str, Mapping))
    ):
        return [as_source(getattr(retain, "name", "retain"), retain)]
    if isinstance(retain, Sequence) and retain and not isinstance(retain, str):
        sources = [as_source(getattr(r, "name", f"retain{i}"), r) for i, r in enumerate(retain)]
        if len(sources) != n_topics:
            raise ValueError(f"retain has {len(sources)} sets for {n_topics} forget topics: give one set, or one per topic")
        return sources
    raise ValueError("retain: expected a Corpus, a list of texts or batches, or one such set per forget topic")


class Batcher:
    """Turns a Source's batch i into tokens, padded and truncated as the chosen mode requires."""

    def __init__(self, tokenizer: Any, batch_size: int, padding_side: str, pad_with_eos: bool = False) -> None:
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.padding_side = padding_side
        self.pad_with_eos = pad_with_eos

    def get(self, source: Source, index: int, max_length: int) -> TokenBatch:
        """Batch ``index`` of ``source``; pre-tokenized batches are used as given (their padding is the caller's)."""
        if source.batches is not None:
            return source.batches[index]
        texts = source.texts[index * self.batch_size : (index + 1) * self.batch_size]
        previous = (self.tokenizer.padding_side, self.tokenizer.truncation_side, self.tokenizer.pad_token)
        self.tokenizer.padding_side, self.tokenizer.truncation_side = self.padding_side, "right"
        if self.pad_with_eos:  # the official code sets pad_token_id = eos_token_id
            self.tokenizer.pad_token = self.tokenizer.eos_token
        try:
            encoded = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
        finally:
            self.tokenizer.padding_side, self.tokenizer.truncation_side, self.tokenizer.pad_token = previous
        batch = TokenBatch(encoded["input_ids"], encoded["attention_mask"])
        first = index * self.batch_size
        check_measurable(
            batch, f"{source.name!r} batch {index} (texts {first}..{first + len(texts) - 1}, max_length={max_length})",
            "remove texts of one token or raise the max_length",
        )
        return batch


def step_count(forget: list[Source], retain: list[Source], batch_size: int, max_batches: int, cycle: bool) -> int:
    """Total steps: ``min(max_batches, shortest forget list, shortest retain list)`` as the official code,
    or ``max_batches`` when cycling."""
    if cycle:
        return max_batches
    return min(max_batches, *(s.n_batches(batch_size) for s in forget), *(s.n_batches(batch_size) for s in retain))


def schedule(step: int, forget: list[Source], retain: list[Source], batch_size: int) -> tuple[int, int, int, int]:
    """(topic, forget batch, retain set, retain batch) of a step: topics alternate, batch = step // n_topics."""
    n_topics = len(forget)
    topic, batch = step % n_topics, step // n_topics
    retain_set = topic if len(retain) > 1 else 0
    return (
        topic,
        batch % forget[topic].n_batches(batch_size),
        retain_set,
        batch % retain[retain_set].n_batches(batch_size),
    )
