"""Perplexity as lm-evaluation-harness computes it: rolling windows, summed log-likelihood per text.

lm-eval's ``loglikelihood_rolling`` (the wikitext task) scores every token of a text exactly once:

* the text is tokenized on its own (the tokenizer's default special tokens, none when the text
  already starts with the prefix token's text);
* the first window feeds ``[prefix] + tokens[:L-1]`` and scores ``tokens[:L]`` (``L`` the model's
  maximum length; prefix = BOS, else EOS), so the first token is predicted from the prefix alone;
* each later window predicts the next ``L`` (or fewer, at the end) unscored tokens and feeds the
  ``L`` tokens just before each of them: a full window carries one token of context over, the last,
  shorter window as much earlier text as fits.

The metrics aggregate over texts as lm-eval's ``weighted_perplexity`` and ``bits_per_byte`` do:
``word_perplexity = exp(-sum(ll) / sum(words))``, ``byte_perplexity = exp(-sum(ll) / sum(bytes))``,
``bits_per_byte = -sum(ll) / sum(bytes) / ln 2``, with words counted as ``len(re.split(r"\\s+", text))``
and bytes as UTF-8 bytes of the scored text. (lm-eval's own wikitext task scores a detokenized text
but counts the words and bytes of the original page; give the scored text here.)

Windows of all texts are batched together, longest first, right-padded; log-softmax is in float32.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

METRICS = ("word_perplexity", "byte_perplexity", "bits_per_byte")
DEFAULT_TOKENS_PER_BATCH = 4096
"""Token budget of one forward pass (the float32 logits of a batch are tokens x vocabulary)."""


@dataclass(frozen=True)
class Window:
    """One forward pass of a rolling window: ``input_ids``, and the ``targets`` its last positions predict."""

    input_ids: list[int]
    targets: list[int]


def rolling_windows(token_ids: Sequence[int], prefix_id: int, max_length: int) -> list[Window]:
    """lm-eval's disjoint rolling windows of one text's tokens (see the module docstring).

    Every token is a target exactly once, in order; each window's input is at most ``max_length``.
    """
    if max_length < 1:
        raise ValueError(f"max_length={max_length}; a window needs at least one token")
    tokens = list(token_ids)
    if not tokens:
        return []
    first = min(max_length, len(tokens))
    windows = [Window([prefix_id] + tokens[: first - 1], tokens[:first])]
    predicted = first
    while predicted < len(tokens):
        length = min(len(tokens) - predicted, max_length)
        end = predicted + length
        windows.append(Window(tokens[end - max_length - 1 : end - 1], tokens[predicted:end]))
        predicted = end
    return windows


def count_words(text: str) -> int:
    """Words as lm-eval counts them for word_perplexity: pieces of ``re.split(r"\\s+", text)``."""
    return len(re.split(r"\s+", text))


def count_bytes(text: str) -> int:
    """UTF-8 bytes, as lm-eval counts them for byte_perplexity and bits_per_byte."""
    return len(text.encode("utf-8"))


@dataclass
class PerplexityResult:
    """Summed log-likelihoods of texts and lm-eval's three perplexity metrics over them."""

    loglikelihoods: list[float]
    """Per text, in nats (lm-eval's ``loglikelihood_rolling`` value)."""
    n_words: list[int]
    n_bytes: list[int]
    n_tokens: list[int]
    max_length: int
    name: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def loglikelihood(self) -> float:
        return float(sum(self.loglikelihoods))

    @property
    def word_perplexity(self) -> float:
        return math.exp(-self.loglikelihood / sum(self.n_words))

    @property
    def byte_perplexity(self) -> float:
        return math.exp(-self.loglikelihood / sum(self.n_bytes))

    @property
    def bits_per_byte(self) -> float:
        return -self.loglikelihood / sum(self.n_bytes) / math.log(2)

    @property
    def token_perplexity(self) -> float:
        """exp of the mean per-token loss (not an lm-eval metric; depends on the tokenizer)."""
        return math.exp(-self.loglikelihood / sum(self.n_tokens))

    def metrics(self) -> dict[str, float]:
        """The three lm-eval metrics by their lm-eval names."""
        return {name: getattr(self, name) for name in METRICS}

    def to_dict(self) -> dict[str, Any]:
        return {"format": "rmu_lens.perplexity/1", **asdict(self), "metrics": self.metrics(),
                "n_texts": len(self.loglikelihoods), "token_perplexity": self.token_perplexity}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PerplexityResult:
        keys = ("loglikelihoods", "n_words", "n_bytes", "n_tokens", "max_length", "name", "meta")
        return cls(**{k: data[k] for k in keys if k in data})

    def save(self, path: str | os.PathLike) -> Path:
        """Write the result as JSON, atomically."""
        from rmu_lens._io import atomic_write_json

        return atomic_write_json(path, self.to_dict())


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text as lm-eval's HFLM encodes a rolling request (see the module docstring)."""
    prefix = tokenizer.decode([prefix_token_id(tokenizer)])
    return [list(tokenizer.encode(text, add_special_tokens=not (prefix and text.startswith(prefix)))) for text in texts]


def prefix_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The token the first window starts from: BOS, else EOS (as lm-eval's HFLM)."""
    for token in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token is not None:
            return token
    raise ValueError("The tokenizer has neither a BOS nor an EOS token; perplexity needs one to predict the first token from")


def _batches(windows: Sequence[Window], order: list[int], batch_size: int, tokens_per_batch: int) -> list[list[int]]:
    batches: list[list[int]] = []
    for i in order:
        current = batches[-1] if batches else None
        width = len(windows[current[0]].input_ids) if current else 0
        if current is None or len(current) >= batch_size or (len(current) + 1) * width > tokens_per_batch:
            batches.append([i])
        else:
            current.append(i)
    return batches


def score_windows(
    model: PreTrainedModel,
    windows: Sequence[Window],
    *,
    pad_id: int,
    batch_size: int = 16,
    tokens_per_batch: int = DEFAULT_TOKENS_PER_BATCH,
    progress: bool = False,
) -> list[float]:
    """Summed log-probability of each window's targets, batched longest first, right-padded."""
    import torch
    from tqdm.auto import tqdm

    from rmu_lens.eval.scoring import input_device

    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; give a positive number of windows per forward pass")
    device = input_device(model)
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i].input_ids))
    results = [0.0] * len(windows)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), tqdm(total=len(windows), disable=not progress, desc="Perplexity windows", unit="window") as bar:
            for chunk in _batches(windows, order, batch_size, tokens_per_batch):
                rows = [windows[i] for i in chunk]
                width = len(rows[0].input_ids)
                ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for b, window in enumerate(rows):
                    ids[b, : len(window.input_ids)] = torch.tensor(window.input_ids)
                    mask[b, : len(window.input_ids)] = 1
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
                for b, (i, window) in enumerate(zip(chunk, rows)):
                    end, n = len(window.input_ids), len(window.targets)
                    logprobs = logits[b, end - n : end].float().log_softmax(dim=-1)
                    targets = torch.tensor(window.targets, device=logprobs.device)
                    results[i] = float(logprobs.gather(-1, targets[:, None]).sum())
                bar.update(len(chunk))
    finally:
        model.train(was_training)
    return results


def _texts_of(texts: Any) -> tuple[list[str], str]:
    """(texts, name) from a list of strings, a Corpus, or a source for load_corpus."""
    from rmu_lens.data.corpora import Corpus, load_corpus

    if isinstance(texts, (str, os.PathLike)):
        texts = load_corpus(texts)
    if isinstance(texts, Corpus):
        return list(texts.texts), texts.name
    if isinstance(texts, Iterable):
        texts = list(texts)
        if all(isinstance(t, str) for t in texts):
            return texts, ""
    raise TypeError("perplexity needs texts: a list of strings, a Corpus, or a corpus source (file, bundled:NAME)")


def perplexity(
    model: Any,
    texts: Any,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_length: int | None = None,
    max_texts: int | None = None,
    batch_size: int = 16,
    tokens_per_batch: int = DEFAULT_TOKENS_PER_BATCH,
    progress: bool = False,
    device: str | None = None,
) -> PerplexityResult:
    """word_perplexity, byte_perplexity and bits_per_byte of ``texts`` as lm-eval's rolling scheme gives them.

    ``model``: a TransformerBridge (its hooks apply), an HF causal LM with ``tokenizer=``, or a model
    source. ``texts``: strings, a Corpus, or a corpus source (``bundled:retain``, a .jsonl file).
    ``max_length`` defaults to the model's own (found as lm-eval finds it); ``max_texts`` keeps the first N.
    """
    from rmu_lens.eval.evaluate import resolve_model
    from rmu_lens.eval.scoring import model_max_length

    texts, name = _texts_of(texts)
    texts = texts[:max_texts] if max_texts is not None else texts
    if not texts:
        raise ValueError("perplexity got no texts")
    empty = [i for i, text in enumerate(texts) if not text]
    if empty:
        raise ValueError(f"text(s) {empty[:5]} are empty: every text needs at least one token to score; drop them first")
    hf_model, tokenizer, model_name = resolve_model(model, tokenizer, device)
    max_length = max_length or model_max_length(hf_model, tokenizer)
    token_ids = encode_texts(tokenizer, texts)
    prefix = prefix_token_id(tokenizer)
    windows, owners = [], []
    for index, ids in enumerate(token_ids):
        for window in rolling_windows(ids, prefix, max_length):
            windows.append(window)
            owners.append(index)
    pad_id = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)
    scores = score_windows(hf_model, windows, pad_id=pad_id, batch_size=batch_size, tokens_per_batch=tokens_per_batch, progress=progress)
    loglikelihoods = [0.0] * len(texts)
    for owner, score in zip(owners, scores):
        loglikelihoods[owner] += score
    return PerplexityResult(
        loglikelihoods=loglikelihoods, n_words=[count_words(t) for t in texts], n_bytes=[count_bytes(t) for t in texts],
        n_tokens=[len(ids) for ids in token_ids], max_length=max_length, name=name,
        meta={"model": model_name, "n_windows": len(windows), "lm_eval_output_type": "loglikelihood_rolling"},
    )

