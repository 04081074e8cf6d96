"""One loaded model for every trial of a sweep: trained tensors restored bit-exactly, data and prefixes shared.

RMU edits only the trained tensors (the MLP output weights of the update layers by default), so a
trial needs no fresh model: before a trial trains a tensor for the first time its original is
copied aside, and after the trial every copied tensor is written back (``Tensor.copy_``: bit-exact).
A tensor never copied was never trained, so it is still the original.

Shared across trials, where valid:

- token batches: keyed by the source's content hash, the batch index, the token limit, the batch
  size and the padding mode, so a trial with another ``max_length`` or ``batch_size`` gets its own;
- frozen prefixes (:class:`~rmu_lens.rmu.prefix.PrefixCache`): keyed by the first trained layer,
  the reference flag and the batch's tokens. Blocks below a trial's first trained layer are never
  trained by any trial (a trainer trains only tensors inside ``first..l``) and are restored
  between trials, so a prefix computed in one trial is the prefix in every trial with the same
  first layer; trials whose first layer differs use different keys.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from rmu_lens.rmu.batches import Batcher, Source, TokenBatch
from rmu_lens.rmu.config import RMUConfig
from rmu_lens.rmu.prefix import DEFAULT_MAX_BYTES, PrefixCache
from rmu_lens.rmu.trainer import RMURun, RMUTrainer


class SharedBatcher(Batcher):
    """A Batcher whose token batches are kept in a dict shared by every trial of a sweep."""

    def __init__(self, inner: Batcher, memo: dict[tuple, TokenBatch]) -> None:
        super().__init__(inner.tokenizer, inner.batch_size, inner.padding_side, inner.pad_with_eos)
        self.memo = memo

    def get(self, source: Source, index: int, max_length: int) -> TokenBatch:
        if source.batches is not None:
            return source.batches[index]
        key = (source.sha256, index, int(max_length), self.batch_size, self.padding_side, self.pad_with_eos)
        batch = self.memo.get(key)
        if batch is None:
            batch = self.memo[key] = super().get(source, index, max_length)
        return batch


class TrialRunner:
    """Trains RMU trials one after another on one model, restoring it after each (see the module docstring).

    ``share_prefix``/``share_batches`` turn the caches off (the benchmark's comparison, and a check).
    """

    def __init__(
        self,
        model: Any,
        forget: Any,
        retain: Any,
        *,
        share_prefix: bool = True,
        share_batches: bool = True,
        prefix_max_bytes: int = DEFAULT_MAX_BYTES,
        prefix_device: str | None = None,
    ) -> None:
        self.model = model
        self.forget = forget
        self.retain = retain
        self.prefix_cache = PrefixCache(prefix_max_bytes, prefix_device) if share_prefix else None
        self.batches: dict[tuple, TokenBatch] | None = {} if share_batches else None
        self.originals: dict[int, tuple[torch.nn.Parameter, torch.Tensor]] = {}
        """id(parameter) -> (parameter, its original values) for every tensor a trial has trained."""

    def trainer(self, config: RMUConfig, callbacks: Sequence[Any] = ()) -> RMUTrainer:
        """A trainer for one trial; the originals of its tensors are kept before it can change them."""
        trainer = RMUTrainer(self.model, self.forget, self.retain, config, callbacks=callbacks, prefix_cache=self.prefix_cache)
        for p in trainer.trained:
            if id(p.parameter) not in self.originals:
                self.originals[id(p.parameter)] = (p.parameter, p.parameter.detach().clone())
        if self.batches is not None:
            trainer.batcher = SharedBatcher(trainer.batcher, self.batches)
        return trainer

    def restore(self) -> None:
        """Write every trained tensor's original back (bit-exact) and leave no gradients behind."""
        with torch.no_grad():
            for parameter, original in self.originals.values():
                parameter.copy_(original)
                parameter.grad = None
                parameter.requires_grad_(False)

    @contextmanager
    def trained(self, config: RMUConfig, callbacks: Sequence[Any] = (), progress: bool = False) -> Iterator[RMURun]:
        """Train one trial and yield its run; the model is restored on exit, error or not."""
        try:
            trainer = self.trainer(config, callbacks)
            yield trainer.train(None, progress=progress)
        finally:
            self.restore()
