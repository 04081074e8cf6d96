"""Batched log-likelihoods of continuations: one forward pass per question scores all its choices.

lm-eval feeds each choice as its own sequence ``(context_ids + continuation_ids)[:-1]``. Every
choice shares the context, so rmu_lens packs a question into ONE row::

    context | choice 1 minus its last token | choice 2 minus its last token | ...

and gives it a 4-D attention mask in which each choice's tokens see the context and their own
earlier tokens only, with positions continuing from the context's end. Each choice therefore sees
exactly the tokens lm-eval gives it while the context is computed once (letter mode with
single-token letters is just the context). Rows are left-padded, so every row's scored positions are
its last ones and the LM head runs on those alone (``logits_to_keep``). Log-softmax is in float32.
Models that take no position ids (ALiBi: Bloom, MPT) get one ordinary row per choice instead.

Sliding-window layers (Mistral, Phi-3, Gemma-2/3) see only the last ``window`` positions: their mask
also hides keys ``window`` or more positions back (by position, which in a packed row is the distance
the plain sequence would have). Models whose layers mix kinds get one mask per layer type, passed as
the ``{layer_type: mask}`` mapping those models accept. A layer kind rmu_lens cannot mask exactly falls
back to one ordinary row per choice, whose masks the model builds itself.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rmu_lens.attention import FULL, SLIDING, UnsupportedAttentionError, layer_attention
from rmu_lens.eval.prompts import TokenizedRequest

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)
DEFAULT_MAX_LENGTH = 2048  # lm-eval's fallback when neither config nor tokenizer gives one
# Long prompts get smaller batches: the 4-D mask (and eager attention's scores) grow as batch x length^2.
MAX_MASK_ELEMENTS = 1 << 26


@dataclass(frozen=True)
class PackedRow:
    """One question as one row: tokens, segment per token (0 context, k choice k), positions, targets."""

    tokens: list[int]
    segments: list[int]
    positions: list[int]
    context_length: int
    score_positions: list[list[int]]  # per choice: row indices whose logits predict its tokens
    targets: list[list[int]]  # per choice: the continuation token ids


def pack_request(request: TokenizedRequest, max_length: int | None = None) -> PackedRow:
    """Pack a question's context and choices into one row (see the module docstring).

    Over ``max_length`` the context is cut from the left, as lm-eval does, so the longest choice fits.
    """
    context, continuations = list(request.context_ids), request.continuation_ids
    longest = max(len(c) for c in continuations)
    if max_length is not None:
        if longest > max_length:
            raise ValueError(f"A continuation of {longest} tokens exceeds the model's maximum length {max_length}")
        if len(context) + longest - 1 > max_length:
            logger.warning("A prompt of %d tokens exceeds the model's maximum length %d: cutting it from the left",
                           len(context) + longest - 1, max_length)
            context = context[len(context) + longest - 1 - max_length:]
    n_context = len(context)
    tokens, segments, positions = list(context), [0] * n_context, list(range(n_context))
    score_positions, targets = [], []
    for k, continuation in enumerate(continuations, start=1):
        body = continuation[:-1]
        start = len(tokens)
        tokens += body
        segments += [k] * len(body)
        positions += range(n_context, n_context + len(body))
        score_positions.append([n_context - 1, *range(start, start + len(body))])
        targets.append(list(continuation))
    return PackedRow(tokens, segments, positions, n_context, score_positions, targets)


def model_max_length(model: PreTrainedModel, tokenizer=None) -> int:
    """The longest input the model takes, found as lm-eval's HFLM finds it."""
    config = getattr(model, "config", None)
    for attribute in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, attribute, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    if isinstance(value, int) and 0 < value < 1_000_000_000:
        return value
    return DEFAULT_MAX_LENGTH


def input_device(model: PreTrainedModel) -> torch.device:
    """Where the token ids go: the input embedding's device (models may span devices)."""
    try:
        return model.get_input_embeddings().weight.device
    except AttributeError:
        return next(model.parameters()).device


def _supports_logits_to_keep(model: PreTrainedModel) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def packs_choices(model: PreTrainedModel) -> bool:
    """Whether a question's choices can share a row: the model must take explicit position ids.

    ALiBi models (Bloom, MPT, ALiBi Falcon) derive positions from the sequence itself; they get one
    row per choice instead, each an ordinary left-padded causal sequence.
    """
    try:
        takes_positions = "position_ids" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        takes_positions = False
    if not takes_positions or getattr(getattr(model, "config", None), "alibi", False):
        return False
    try:
        attention_masks(model)
    except UnsupportedAttentionError as error:
        logger.info("Scoring one row per choice: %s", error)
        return False
    return True


def attention_masks(model: PreTrainedModel) -> tuple[dict[str, int | None], bool]:
    """The windows the scorer's masks need, ``{layer_type: window or None}``, and whether the model
    takes them as a ``{layer_type: mask}`` mapping (configs with ``layer_types``) or as one mask."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "num_hidden_layers"):
        return {FULL: None}, False
    layers = layer_attention(config)
    windows = {layer.kind: layer.window for layer in layers}
    by_type = getattr(getattr(config, "text_config", None) or config, "layer_types", None) is not None
    if len(windows) > 1 and not by_type:
        raise UnsupportedAttentionError("The config mixes attention kinds without naming them in layer_types")
    return windows, by_type and SLIDING in windows


def _batch_tensors(
    rows: Sequence[PackedRow], pad_id: int, dtype: torch.dtype, device: torch.device,
    windows: dict[str, int | None] | None = None,
):
    """Left-padded ids, positions and the additive 4-D mask of a batch of packed rows (one per layer
    type in ``windows``, ``{layer_type: window}``; a single full-attention mask by default)."""
    import torch
    from transformers.masking_utils import sliding_window_overlay

    width = max(len(r.tokens) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    segments = torch.full((len(rows), width), -1, dtype=torch.long)
    for b, row in enumerate(rows):
        offset = width - len(row.tokens)
        ids[b, offset:] = torch.tensor(row.tokens)
        positions[b, offset:] = torch.tensor(row.positions)
        segments[b, offset:] = torch.tensor(row.segments)
    query, key = segments[:, :, None], segments[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    # A key is visible to a query when it is earlier and either context or the query's own segment.
    # Pad queries see earlier pads (never a fully masked row, so no NaN); real queries never see pads.
    allowed = causal & ((key == query) | ((key == 0) & (query >= 0)))
    masks = {}
    for kind, window in (windows or {FULL: None}).items():
        visible = allowed
        if window is not None:
            # The model's own window rule, applied to positions (a packed row's indices are not distances).
            visible = allowed & sliding_window_overlay(window)(None, None, positions[:, :, None], positions[:, None, :])
        mask = torch.zeros(visible.shape, dtype=dtype).masked_fill_(~visible, torch.finfo(dtype).min)
        masks[kind] = mask[:, None].to(device)
    return ids.to(device), positions.to(device), masks


def score_packed(
    model: PreTrainedModel, rows: Sequence[PackedRow], pad_id: int, keep_logits: bool, packed: bool = True
) -> list[list[float]]:
    """Sum of log-probabilities of each choice of each row, from one forward pass of the batch.

    ``packed=False`` (rows of one choice each) passes a plain 2-D padding mask and no positions.
    """
    import torch

    dtype = next(model.parameters()).dtype
    if not dtype.is_floating_point:
        dtype = torch.float32
    windows, by_type = attention_masks(model) if packed else ({FULL: None}, False)
    ids, positions, masks = _batch_tensors(rows, pad_id, dtype, input_device(model), windows)
    mask = next(iter(masks.values()))
    width = ids.shape[1]
    keep = max(len(r.tokens) - r.context_length + 1 for r in rows)
    kwargs: dict = {"logits_to_keep": keep} if keep_logits else {}
    if packed:
        kwargs |= {"attention_mask": masks if by_type else mask, "position_ids": positions}
    else:
        # The last query row sees every real token (one choice per row, no window in the full mask).
        kwargs["attention_mask"] = (masks[FULL][:, 0, -1] == 0).long()
    logits = model(input_ids=ids, use_cache=False, **kwargs).logits
    logprobs = logits[:, -keep:].float().log_softmax(dim=-1)
    first_kept = width - keep
    batch_index, position_index, token_index, choice_index = [], [], [], []
    n_choices = 0
    for b, row in enumerate(rows):
        offset = width - len(row.tokens) - first_kept
        for where, target in zip(row.score_positions, row.targets):
            batch_index += [b] * len(target)
            position_index += [offset + p for p in where]
            token_index += target
            choice_index += [n_choices] * len(target)
            n_choices += 1
    device = logprobs.device
    picked = logprobs[
        torch.tensor(batch_index, device=device), torch.tensor(position_index, device=device), torch.tensor(token_index, device=device)
    ]
    sums = torch.zeros(n_choices, dtype=torch.float32, device=device).index_add_(0, torch.tensor(choice_index, device=device), picked)
    flat = sums.tolist()
    result, start = [], 0
    for row in rows:
        result.append(flat[start : start + len(row.targets)])
        start += len(row.targets)
    return result


def _batches(order: list[int], rows: Sequence[PackedRow], batch_size: int) -> list[list[int]]:
    """Consecutive rows (longest first), at most ``batch_size`` and MAX_MASK_ELEMENTS of mask per batch."""
    batches: list[list[int]] = []
    for i in order:
        current = batches[-1] if batches else None
        if current is None or len(current) >= batch_size or (len(current) + 1) * len(rows[current[0]].tokens) ** 2 > MAX_MASK_ELEMENTS:
            batches.append([i])
        else:
            current.append(i)
    return batches


def score_requests(
    model: PreTrainedModel,
    requests: Sequence[TokenizedRequest],
    *,
    batch_size: int = 16,
    progress: bool = True,
    pad_id: int = 0,
    max_length: int | None = None,
) -> list[list[float]]:
    """Log-likelihood of every continuation of every request: ``result[i][k]`` for request i, choice k.

    ``model`` is an HF causal LM (a bridge's ``hf_model_of``; hooks on the bridge apply). Requests are
    sorted longest first and batched ``batch_size`` questions per forward pass (fewer for very long
    prompts); results come back in request order and do not depend on the batch size (up to float
    rounding).
    """
    import torch
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; give a positive number of questions per forward pass")
    max_length = max_length or model_max_length(model)
    packed = packs_choices(model)
    # One row per choice (regrouped per request at the end) without packing, and for a prompt cut to
    # fit whose choices differ in length: lm-eval cuts each choice's sequence on its own, so a shorter
    # choice keeps more of the context than one shared cut would leave it.
    owners, units = [], []
    for i, r in enumerate(requests):
        own_rows = not packed or (len({len(c) for c in r.continuation_ids}) > 1
                                  and len(r.context_ids) + max(len(c) for c in r.continuation_ids) - 1 > max_length)
        for group in ([[c] for c in r.continuation_ids] if own_rows else [r.continuation_ids]):
            owners.append(i)
            units.append(TokenizedRequest(r.context_ids, list(group)))
    requests = units
    rows = [pack_request(r, max_length) for r in requests]
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i].tokens))
    batches = _batches(order, rows, batch_size)
    keep_logits = _supports_logits_to_keep(model)
    results: list[list[float]] = [[] for _ in rows]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), tqdm(total=len(rows), disable=not progress, desc="Scoring questions", unit="q") as bar:
            for chunk in batches:
                for i, scores in zip(chunk, score_packed(model, [rows[i] for i in chunk], pad_id, keep_logits, packed)):
                    results[i] = scores
                bar.update(len(chunk))
    finally:
        model.train(was_training)
    regrouped: list[list[float]] = [[] for _ in range(max(owners, default=-1) + 1)]
    for owner, scores in zip(owners, results):
        regrouped[owner] += scores
    return regrouped
