"""One way to get activations out of a model: hook names in, per-token or per-sequence tensors out.

    batch = tokenize(tokenizer_of(base), texts)           # right padding; pass the SAME batch to both models
    base_acts = collect_activations(base, batch)           # every layer's hook_resid_post, per token
    new_acts = collect_activations(unlearned, batch)
    base_acts.tokens("blocks.7.hook_resid_post")           # [n_tokens, d_model], statistics tokens only

Each batch runs one forward with hooks on every requested point and ``stop_at_layer`` one past the
last requested block (``stop_at_layer=k`` returns block k-1's output), and the forward is cut short
once the last requested hook has fired, so nothing after the last requested layer is computed (not
even the unembedding when the last block is requested). Strings never reach the bridge: texts are tokenized with the
model's own tokenizer and passed as ``input_ids`` + ``attention_mask``.

Statistics tokens (``Activations.mask``): real tokens minus the first ``skip_first`` of each row.
Position 0 carries a massive activation (SmolLM2 layer 7: norm ~681 against ~134 elsewhere), so
every statistic here excludes it by default; pad positions hold zeros and are never counted.

Past ``memory_limit_mb`` the values are written batch by batch to safetensors shards in a spill
directory and read back one hook point at a time; the values are bit-identical to the in-memory path.
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from rmu_lens.data.corpora import Corpus
from rmu_lens.rmu.batches import TokenBatch

if TYPE_CHECKING:
    from rmu_lens.eval import Question

REDUCTIONS = (None, "mean", "last")
BLOCK_HOOK = re.compile(r"^blocks\.(\d+)\.")
PRE_BLOCK_HOOKS = ("hook_embed", "hook_pos_embed", "embed.", "pos_embed.", "rotary_emb.")
DEFAULT_MEMORY_LIMIT_MB = 2048

__all__ = [
    "Activations",
    "TokenBatch",
    "answer_position_activations",
    "collect_activations",
    "resid_post_hooks",
    "statistics_mask",
    "tokenize",
]


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int = 128) -> TokenBatch:
    """Tokenize ``texts`` with the model's own tokenizer: right padding, truncation to ``max_length``.

    Pass the returned batch to both the base and the unlearned model so their tokens align.
    """
    from rmu_lens.models import prepare_tokenizer

    texts = _as_texts(texts, "texts")
    tokenizer = prepare_tokenizer(tokenizer)
    previous = (tokenizer.padding_side, tokenizer.truncation_side)
    tokenizer.padding_side, tokenizer.truncation_side = "right", "right"
    try:
        encoded = tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True, max_length=max_length)
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = previous
    return TokenBatch(encoded["input_ids"].long(), encoded["attention_mask"].long())


def resid_post_hooks(model: Any, layers: Sequence[int] | None = None) -> list[str]:
    """``blocks.{l}.hook_resid_post`` for ``layers`` (every layer of ``model`` by default)."""
    n_layers = model.cfg.n_layers
    layers = list(range(n_layers)) if layers is None else [int(layer) for layer in layers]
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad:
        raise ValueError(f"layers {bad} are out of range: the model has layers 0..{n_layers - 1}")
    return [f"blocks.{layer}.hook_resid_post" for layer in layers]


def statistics_mask(attention_mask: torch.Tensor, skip_first: int = 1) -> torch.Tensor:
    """Real tokens minus the first ``skip_first`` real tokens of each row (works for either padding side)."""
    real = attention_mask.bool()
    rank = attention_mask.long().cumsum(-1)  # 1 for a row's first real token
    return real & (rank > skip_first)


@dataclass(eq=False)
class Activations:
    """Activations of one model on one token batch, per hook name.

    Per token (``reduce is None``): ``self[hook]`` is ``[n_seq, seq_len, d]`` with zeros at pads, and
    ``mask`` marks the statistics tokens (real, minus the first ``skip_first`` per row). Reduced:
    ``self[hook]`` is ``[n_seq, d]`` (``"mean"`` over statistics tokens, ``"last"`` = last real token).
    """

    hook_names: list[str]
    attention_mask: torch.Tensor
    mask: torch.Tensor
    reduce: str | None
    skip_first: int
    values: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    shards: list[tuple[Path, int, int, int]] = field(default_factory=list, repr=False)
    """Spilled storage: (file, first row, row count, padded length of that batch) per batch."""
    spill_dir: Path | None = None
    _owned_dir: Path | None = field(default=None, repr=False)

    # -- shape ----------------------------------------------------------------------------

    @property
    def n_sequences(self) -> int:
        return int(self.attention_mask.shape[0])

    @property
    def spilled(self) -> bool:
        """True when the values live in safetensors shards on disk rather than in memory."""
        return bool(self.shards)

    @property
    def n_tokens(self) -> int:
        """Number of statistics tokens (per hook point)."""
        return int(self.mask.sum())

    def describe(self) -> dict[str, Any]:
        """What these activations are and which tokens count: goes into every result file."""
        return {
            "hook_names": list(self.hook_names),
            "n_sequences": self.n_sequences,
            "n_tokens": int(self.attention_mask.sum()),
            "n_statistics_tokens": self.n_tokens,
            "reduce": self.reduce,
            "skip_first": self.skip_first,
            "excluded": f"padding, and the first {self.skip_first} real token(s) of each row" if self.skip_first
            else "padding",
        }

    # -- access ---------------------------------------------------------------------------

    def _check(self, hook: str) -> None:
        if hook not in self.hook_names:
            raise KeyError(f"No activations for {hook!r}; collected: {self.hook_names}")

    def __getitem__(self, hook: str) -> torch.Tensor:
        """All values at ``hook``: ``[n_seq, seq_len, d]`` per token (zeros at pads) or ``[n_seq, d]`` reduced."""
        self._check(hook)
        if not self.spilled:
            return self.values[hook]
        from safetensors import safe_open

        parts = []
        width = self.attention_mask.shape[1]
        for path, _start, _count, length in self.shards:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                part = handle.get_tensor(hook)
            if self.reduce is None and length < width:
                part = torch.nn.functional.pad(part, (0, 0, 0, width - length))
            parts.append(part)
        return torch.cat(parts)

    def tokens(self, hook: str) -> torch.Tensor:
        """Statistics tokens at ``hook`` flattened to ``[n_tokens, d]`` (rows in order, positions in order)."""
        if self.reduce is not None:
            raise ValueError(f"These activations were reduced per sequence (reduce={self.reduce!r}); collect with reduce=None for tokens")
        return self[hook][self.mask]

    def sequences(self, hook: str, reduce: str = "mean") -> torch.Tensor:
        """One vector per sequence at ``hook``: ``[n_seq, d]`` (the stored reduction, or computed from tokens)."""
        if self.reduce is not None:
            if reduce != self.reduce:
                raise ValueError(f"These activations were reduced with {self.reduce!r}; cannot give {reduce!r}")
            return self[hook]
        return reduce_sequences(self[hook], self.attention_mask, self.mask, reduce)

    def close(self) -> None:
        """Delete a spill directory this object created (also done when it is garbage-collected)."""
        if self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)
            self._owned_dir = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing sensible left to do
            pass

    def __enter__(self) -> Activations:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def reduce_sequences(values: torch.Tensor, attention_mask: torch.Tensor, mask: torch.Tensor, reduce: str) -> torch.Tensor:
    """``[n, T, d]`` to ``[n, d]``: mean over ``mask`` tokens, or the last real token of each row."""
    if reduce == "mean":
        weights = mask.to(values.dtype).unsqueeze(-1)
        return (values * weights).sum(1) / weights.sum(1).clamp(min=1)
    if reduce == "last":
        last = attention_mask.long().cumsum(-1).argmax(-1)  # first position reaching the row's real count
        return values[torch.arange(values.shape[0]), last]
    raise ValueError(f"reduce={reduce!r}; choose 'mean' (over statistics tokens) or 'last' (last real token)")


# --- collection ----------------------------------------------------------------------------


def _as_texts(data: Any, name: str) -> list[str]:
    if isinstance(data, Corpus):
        return list(data.texts)
    if isinstance(data, str) or not isinstance(data, Sequence) or not data or not all(isinstance(t, str) for t in data):
        raise ValueError(f"{name}: expected a non-empty list of texts or a Corpus")
    return list(data)


def statistics_batch(data: Any, tokenizer: Any, max_texts: int | None, max_length: int, name: str) -> TokenBatch:
    """The first ``max_texts`` of ``data`` (texts, a Corpus or a TokenBatch) as one batch, keeping only texts
    of 2+ tokens: one-token texts have no token left once position 0 is excluded from the statistics."""
    from rmu_lens.data.corpora import Corpus

    if isinstance(data, TokenBatch):
        return data if max_texts is None else TokenBatch(data.input_ids[:max_texts], data.attention_mask[:max_texts])
    texts = list(data.texts) if isinstance(data, Corpus) else data
    if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"{name}: expected a non-empty list of texts, a Corpus or a TokenBatch")
    batch = tokenize(tokenizer, texts if max_texts is None else texts[:max_texts], max_length)
    keep = batch.attention_mask.sum(-1) >= 2
    if not keep.any():
        raise ValueError(f"{name}: every text is shorter than 2 tokens")
    return TokenBatch(batch.input_ids[keep], batch.attention_mask[keep])


def _as_batch(model: Any, data: Any, max_length: int) -> TokenBatch:
    if isinstance(data, TokenBatch):
        if data.input_ids.ndim != 2 or data.input_ids.shape != data.attention_mask.shape:
            raise ValueError("data: a TokenBatch needs input_ids and attention_mask of one [n_seq, seq_len] shape")
        return data
    from rmu_lens.models import tokenizer_of

    return tokenize(tokenizer_of(model), _as_texts(data, "data"), max_length)


def _stop_layer(model: Any, hook_names: list[str]) -> int | None:
    """``stop_at_layer`` that still runs every requested hook point (None: the whole model)."""
    last = -1
    for name in hook_names:
        match = BLOCK_HOOK.match(name)
        if match:
            last = max(last, int(match.group(1)))
        elif not name.startswith(PRE_BLOCK_HOOKS):
            return None  # ln_final, unembed, ...: after every block
    stop = last + 1
    return None if stop >= model.cfg.n_layers else stop


def _check_hooks(model: Any, hook_names: Sequence[str]) -> list[str]:
    if isinstance(hook_names, str):
        hook_names = [hook_names]
    names = list(dict.fromkeys(hook_names))
    known = model.hook_dict
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"Unknown hook name(s) {unknown}: use TransformerLens hook names such as "
            f"'blocks.0.hook_resid_post' or 'blocks.0.mlp.hook_out' (see model.hook_dict)"
        )
    if not names:
        raise ValueError("hook_names is empty: name at least one hook point (default: every layer's hook_resid_post)")
    return names


def _input_device(model: Any) -> torch.device:
    # Layers may sit on different devices (device_map="auto"): the tokens go where the embedding is.
    embed = getattr(model, "embed", None)
    weight = getattr(embed, "W_E", None) if embed is not None else None
    if isinstance(weight, torch.Tensor):
        return weight.device
    return next(model.parameters()).device


class _Collected(Exception):
    """Raised by the last hook to fire once every requested activation is captured."""


def collect_activations(
    model: Any,
    data: Any,
    hook_names: Sequence[str] | None = None,
    *,
    batch_size: int = 8,
    max_length: int = 128,
    reduce: str | None = None,
    skip_first: int = 1,
    memory_limit_mb: float = DEFAULT_MEMORY_LIMIT_MB,
    spill_dir: str | Path | None = None,
    progress: bool = True,
) -> Activations:
    """Run ``model`` on ``data`` (texts, a Corpus or a TokenBatch) and keep the activations at ``hook_names``.

    Default hooks: every layer's ``hook_resid_post``. ``reduce``: None (per token, with a mask),
    ``"mean"`` (over statistics tokens) or ``"last"`` (last real token). The first ``skip_first``
    real tokens of each row are left out of ``mask`` and of the mean. When the result would exceed
    ``memory_limit_mb`` it is spilled to safetensors shards under ``spill_dir`` (a temporary
    directory by default, deleted with the result). Values come back in float32 on the CPU.

    Under torchrun (an initialised torch.distributed group) each rank runs every world_size-th batch
    and the results are gathered, so every rank returns all rows. Spilled shards go to one folder
    every rank can read: ``spill_dir``, or a temporary folder rank 0 makes (same machine only).
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce={reduce!r}; choose None (per token), 'mean' or 'last'")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be at least 1")
    if skip_first < 0:
        raise ValueError(f"skip_first={skip_first}: must be 0 or more")
    names = _check_hooks(model, resid_post_hooks(model) if hook_names is None else hook_names)
    batch = _as_batch(model, data, max_length)
    attention_mask = batch.attention_mask.long()
    mask = statistics_mask(attention_mask, skip_first)
    lengths = attention_mask.sum(-1)
    empty = [i for i, n in enumerate(mask.sum(-1).tolist()) if n == 0]
    if empty and reduce != "last":
        raise ValueError(
            f"data rows {empty[:10]} have no tokens left after skipping the first {skip_first} "
            f"(only {int(lengths[empty[0]])} real token(s)): drop such short texts or pass skip_first=0"
        )
    if (lengths == 0).any():
        raise ValueError(f"data rows {torch.nonzero(lengths == 0).flatten().tolist()[:10]} are empty (all padding)")

    n_seq, width = attention_mask.shape
    d_model = model.cfg.d_model
    per_value = d_model * 4 * (n_seq if reduce else n_seq * width)
    spill = per_value * len(names) / 2**20 > memory_limit_mb
    result = Activations(names, attention_mask, mask, reduce, skip_first)
    from rmu_lens.distributed import rank_and_world

    rank, world = rank_and_world()
    if spill:
        if spill_dir is None:
            made = [str(Path(tempfile.mkdtemp(prefix="rmu_lens-activations-"))) if rank == 0 else None]
            if world > 1:
                import torch.distributed as dist

                dist.broadcast_object_list(made, src=0)
            result.spill_dir = Path(made[0])
            if rank == 0:
                result._owned_dir = result.spill_dir
        else:
            result.spill_dir = Path(spill_dir)
            result.spill_dir.mkdir(parents=True, exist_ok=True)
    else:
        shape = (n_seq, d_model) if reduce else (n_seq, width, d_model)
        result.values = {name: torch.zeros(shape, dtype=torch.float32) for name in names}

    stop = _stop_layer(model, names)
    device = _input_device(model)
    captured: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(activation: torch.Tensor, hook: Any) -> torch.Tensor:
            captured[name] = activation.detach().to("cpu", torch.float32)
            if len(captured) == len(names):
                # Everything is in hand: skip the rest of the forward (e.g. the final norm and the
                # unembedding, which stop_at_layer cannot skip when the last block is requested).
                raise _Collected
            return activation
        return hook

    fwd_hooks = [(name, keep(name)) for name in names]
    n_batches = math.ceil(n_seq / batch_size)
    mine = range(rank, n_batches, world)
    gathered: dict[int, dict[str, torch.Tensor]] = {}
    for index in tqdm(mine, desc="activations", unit="batch", disable=not progress or rank != 0, dynamic_ncols=True):
        start = index * batch_size
        rows = slice(start, min(n_seq, start + batch_size))
        row_mask = attention_mask[rows]
        # Right padding: trailing all-pad columns change nothing for the real tokens; skip them.
        real_columns = torch.nonzero(row_mask.any(0)).flatten()
        length = int(real_columns.max()) + 1
        ids = batch.input_ids[rows, :length].to(device)
        row_mask = row_mask[:, :length]
        captured.clear()
        try:
            with torch.no_grad():
                model.run_with_hooks(ids, attention_mask=row_mask.to(device), fwd_hooks=fwd_hooks, stop_at_layer=stop)
        except _Collected:
            pass
        missing = [n for n in names if n not in captured]
        if missing:
            raise RuntimeError(f"Hook point(s) {missing} did not fire during the forward pass")
        pad = ~row_mask.bool().unsqueeze(-1)
        outputs = {}
        for name in names:
            value = captured[name]
            if value.ndim != 3 or value.shape[:2] != row_mask.shape:
                raise ValueError(
                    f"Hook {name!r} gives shape {tuple(value.shape)}, not [batch, seq, d]: collect residual-like "
                    f"hook points (per-head hooks such as attn.hook_z are not supported)"
                )
            value = value.masked_fill(pad, 0.0)
            if reduce:
                value = reduce_sequences(value, row_mask, mask[rows, :length], reduce)
            outputs[name] = value.contiguous()
        if spill:
            from safetensors.torch import save_file

            path = result.spill_dir / f"shard-{index:05d}.safetensors"
            save_file(outputs, str(path))
            result.shards.append((path, rows.start, rows.stop - rows.start, length))
        elif world > 1:
            gathered[index] = outputs
        else:
            _store(result, outputs, rows, length)
    if world > 1:
        _gather_batches(result, gathered, world, batch_size, n_seq, attention_mask)
    return result


def _store(result: Activations, outputs: dict[str, torch.Tensor], rows: slice, length: int) -> None:
    for name, value in outputs.items():
        if result.reduce:
            result.values[name][rows] = value
        else:
            result.values[name][rows, :length] = value


def _gather_batches(result: Activations, gathered: dict, world: int, batch_size: int, n_seq: int,
                    attention_mask: torch.Tensor) -> None:
    """Every rank's batches (or spilled shard entries) into every rank's result, in row order."""
    import torch.distributed as dist

    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, result.shards if result.spill_dir is not None else gathered)
    if result.spill_dir is not None:
        result.shards = sorted((entry for part in parts for entry in part), key=lambda entry: entry[1])
        return
    for part in parts:
        for index, outputs in part.items():
            rows = slice(index * batch_size, min(n_seq, (index + 1) * batch_size))
            length = int(torch.nonzero(attention_mask[rows].any(0)).flatten().max()) + 1
            _store(result, outputs, rows, length)


def answer_position_activations(
    model: Any,
    questions: Sequence[Question],
    hook_names: Sequence[str] | None = None,
    mode: str = "cloze",
    *,
    batch_size: int = 8,
    progress: bool = True,
) -> Activations:
    """Activations at each question's last context token: the position whose next-token prediction scores the answer.

    Prompts and token ids are the evaluator's (lm-eval's rule, ``rmu_lens.eval.prompts``), so the
    probed position is exactly the one the evaluation scores. Returns ``reduce="last"`` activations,
    one row per question in order.
    """
    from rmu_lens.eval.prompts import build_request, encode_requests
    from rmu_lens.models import prepare_tokenizer, tokenizer_of

    if not questions:
        raise ValueError("questions is empty: pass the multiple-choice questions to probe")
    tokenizer = prepare_tokenizer(tokenizer_of(model))
    requests = [build_request(q, mode) for q in questions]
    contexts = [r.context_ids for r in encode_requests(tokenizer, requests)]
    width = max(len(ids) for ids in contexts)
    input_ids = torch.full((len(contexts), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(contexts), width), dtype=torch.long)
    for row, ids in enumerate(contexts):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
    return collect_activations(
        model, TokenBatch(input_ids, attention_mask), hook_names, batch_size=batch_size, reduce="last",
        skip_first=0, progress=progress,
    )
