"""What the model now says: greedy and seeded sampled completions, base vs unlearned, and gibberish measures.

Completions come from HF ``generate`` on the bridge's own weights, with the model's own tokenizer
(``rmu_lens.models.tokenizer_of``). Prompts are encoded as the tokenizer encodes text by default and
left-padded, with an attention mask. Greedy decoding is deterministic; sampling draws from torch's
generator seeded with ``seed`` (same seed, prompts and batch size: same text).

Which module tree runs: TransformerLens 4.3's bridged attention does not fill HF's key/value cache,
so cached decoding through the bridge (``hf_model_of(bridge).generate`` or ``bridge.generate``)
attends to the newest token alone after the first steps and writes something else. By default the
bridge's weight tensors (shared, not copied) are therefore put into a plain HF module tree of the
same config, which decodes with its cache; hooks added to the bridge do not apply there.
``through_bridge=True`` generates through the HF model inside the bridge without a cache instead:
hooks apply, every step re-reads the whole sequence (many times slower).

Two gibberish measures per completion, both documented in docs/utility.md:

* ``base_loss`` — the base model's mean per-token loss (nats) on the completion, given the prompt:
  fluent text the base model would write scores low; nonsense scores high. Measured on both models'
  completions, so the base model's own text is the reference;
* ``repeated_ngram_rate`` — the share of the completion's token n-grams (n = 3) that repeat an
  earlier one: loops such as "the the the" score near 1, ordinary text near 0.

Per role, each measure's mean over prompts comes with a 95% t-interval.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

MEASURES = ("base_loss", "repeated_ngram_rate")
MODELS = ("base", "unlearned")
FORMAT = "rmu_lens.generations/1"


@dataclass
class GenerationConfig:
    """How completions are drawn and measured (serializes with to_dict / from_dict)."""

    max_new_tokens: int = 32
    min_new_tokens: int = 8
    """EOS is not allowed before this many tokens (an instruct model may otherwise stop at once)."""
    sampled: bool = True
    """Also draw one seeded sampled completion per prompt beside the greedy one."""
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int = 0
    ngram: int = 3
    batch_size: int = 8

    def __post_init__(self) -> None:
        if not 0 <= self.min_new_tokens <= self.max_new_tokens or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens}, min_new_tokens={self.min_new_tokens}; "
                             f"need 0 <= min_new_tokens <= max_new_tokens and max_new_tokens >= 1")
        if self.ngram < 1:
            raise ValueError(f"ngram={self.ngram}; the repeated n-gram rate needs n >= 1")
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature}; use a positive temperature (greedy completions are always drawn)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenerationConfig:
        return cls(**dict(data))


@dataclass(frozen=True)
class Completion:
    """A prompt, the new text and its token ids (cut at the first end-of-sequence token)."""

    prompt: str
    text: str
    token_ids: list[int]


def _hf_and_tokenizer(model: Any, tokenizer: PreTrainedTokenizerBase | None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from rmu_lens.eval.evaluate import resolve_model

    hf_model, tokenizer, _ = resolve_model(model, tokenizer)
    return hf_model, tokenizer


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    return next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)


def plain_model_of(bridge: Any) -> PreTrainedModel:
    """A plain HF model of the bridge's config whose parameters and buffers ARE the bridge's tensors.

    Nothing is copied: weights edited in the bridge (RMU) are the weights this model runs. Needs every
    tensor on one device (a model spread with ``device_map`` cannot be regrouped this way).
    """
    import torch
    from transformers import AutoModelForCausalLM

    from rmu_lens.models import hf_model_of, readable_name

    bridged = hf_model_of(bridge)
    tensors = {readable_name(k): v for k, v in bridged.named_parameters(remove_duplicate=False)}
    tensors |= {readable_name(k): v for k, v in bridged.named_buffers(remove_duplicate=False)}
    devices = {str(t.device) for t in tensors.values()}
    if len(devices) > 1:
        raise NotImplementedError(
            f"The model's tensors sit on several devices ({sorted(devices)}); fast generation regroups them into one "
            f"plain module tree. Pass through_bridge=True to generate through the bridge (slower), or load the model on one device."
        )
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(bridged.config, dtype=next(bridged.parameters()).dtype)
    missing = []
    for kind, named in (("_parameters", plain.named_parameters(remove_duplicate=False)), ("_buffers", plain.named_buffers(remove_duplicate=False))):
        for name, _ in list(named):
            if name not in tensors:
                missing.append(name)
                continue
            owner, _, attribute = name.rpartition(".")
            getattr(plain.get_submodule(owner), kind)[attribute] = tensors[name]
    if missing:
        raise RuntimeError(f"Could not map the bridge's tensors to a plain {type(plain).__name__}; missing: {missing[:10]}")
    plain.generation_config = bridged.generation_config
    return plain.eval()


def generate(
    model: Any,
    prompts: Sequence[str],
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_new_tokens: int = 32,
    min_new_tokens: int = 0,
    sample: bool = False,
    temperature: float = 0.8,
    top_p: float = 0.95,
    seed: int = 0,
    batch_size: int = 8,
    through_bridge: bool = False,
) -> list[Completion]:
    """Completions of ``prompts``: greedy (``sample=False``) or sampled with torch seeded by ``seed``.

    ``model``: a TransformerBridge or an HF causal LM with ``tokenizer=``. A bridge's weights decode in
    a plain module tree (hooks do not apply) unless ``through_bridge`` (see the module docstring).
    Completions stop at the tokenizer's EOS (not before ``min_new_tokens``) or after ``max_new_tokens``.
    """
    import torch
    import transformers

    from rmu_lens.eval.scoring import input_device

    prompts = list(prompts)
    if not prompts or not all(isinstance(p, str) and p for p in prompts):
        raise ValueError("generate needs a non-empty list of non-empty prompt strings")
    hf_model, tokenizer = _hf_and_tokenizer(model, tokenizer)
    bridged = hasattr(model, "original_model")
    if bridged and not through_bridge:
        hf_model = plain_model_of(model)
    pad_id, eos_id = _pad_id(tokenizer), tokenizer.eos_token_id
    # Every setting explicit, so a model's own generation_config (an instruct model's sampling defaults)
    # cannot change what "greedy" means.
    settings = dict(max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, do_sample=sample, num_beams=1,
                    pad_token_id=pad_id, eos_token_id=eos_id, use_cache=not (bridged and through_bridge))
    settings |= dict(temperature=temperature, top_p=top_p, top_k=0) if sample else dict(temperature=None, top_p=None, top_k=None)
    generation_config = transformers.GenerationConfig(**settings)
    encoded = [list(tokenizer.encode(p)) for p in prompts]
    device = input_device(hf_model)
    completions: list[Completion] = []
    was_training = hf_model.training
    hf_model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            for start in range(0, len(prompts), batch_size):
                rows = encoded[start : start + batch_size]
                width = max(len(r) for r in rows)
                ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for b, row in enumerate(rows):
                    ids[b, width - len(row):] = torch.tensor(row)
                    mask[b, width - len(row):] = 1
                output = hf_model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=generation_config)
                for b, prompt in enumerate(prompts[start : start + batch_size]):
                    new = output[b, width:].tolist()
                    if eos_id is not None and eos_id in new:
                        new = new[: new.index(eos_id)]
                    completions.append(Completion(prompt, tokenizer.decode(new, skip_special_tokens=True), new))
    finally:
        hf_model.train(was_training)
    return completions


def repeated_ngram_rate(token_ids: Sequence[int], n: int = 3) -> float:
    """Share of the token n-grams that repeat an earlier one (NaN when there are fewer than n tokens)."""
    grams = [tuple(token_ids[i : i + n]) for i in range(len(token_ids) - n + 1)]
    if not grams:
        return math.nan
    return (len(grams) - len(set(grams))) / len(grams)


def base_losses(base: Any, completions: Sequence[Completion], *, tokenizer: PreTrainedTokenizerBase | None = None,
                batch_size: int = 16) -> list[float]:
    """The base model's mean per-token loss (nats) on each completion given its prompt; NaN for empty ones."""
    from rmu_lens.utility.perplexity import Window, score_windows

    hf_model, tokenizer = _hf_and_tokenizer(base, tokenizer)
    windows, owners = [], []
    for index, completion in enumerate(completions):
        if completion.token_ids:
            whole = list(tokenizer.encode(completion.prompt)) + list(completion.token_ids)
            windows.append(Window(whole[:-1], list(completion.token_ids)))
            owners.append(index)
    losses = [math.nan] * len(completions)
    if windows:
        scores = score_windows(hf_model, windows, pad_id=_pad_id(tokenizer), batch_size=batch_size)
        for index, window, score in zip(owners, windows, scores):
            losses[index] = -score / len(window.targets)
    return losses


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean of the finite values with a two-sided t-interval; ``n`` counts them (the interval is NaN below 2)."""
    from scipy import stats

    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    n = len(finite)
    if n == 0:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "n": 0}
    mean = sum(finite) / n
    if n < 2:
        return {"mean": mean, "low": math.nan, "high": math.nan, "n": n}
    sd = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


@dataclass
class Generations:
    """Completions of the same prompts by the base and the unlearned model, with gibberish measures.

    ``records``: one per prompt — ``role``, ``prompt``, ``greedy`` / ``sampled`` texts per model, and
    ``measures[model][measure]`` on the greedy completion.
    """

    records: list[dict[str, Any]]
    config: GenerationConfig = field(default_factory=GenerationConfig)
    judge: dict[str, Any] | None = None
    """Scores of an external judge, when one was configured (rmu_lens.utility.judge)."""

    @property
    def roles(self) -> list[str]:
        return list(dict.fromkeys(r["role"] for r in self.records))

    def summary(self) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
        """role -> measure -> model -> mean, low, high, n (95% t-interval over the role's prompts)."""
        table: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
        for role in self.roles:
            records = [r for r in self.records if r["role"] == role]
            table[role] = {
                measure: {model: mean_interval([r["measures"][model][measure] for r in records]) for model in MODELS}
                for measure in MEASURES
            }
        return table

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "config": self.config.to_dict(), "records": self.records, "summary": self.summary(),
                "judge": self.judge}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Generations:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a generations file (format {data.get('format')!r}, expected {FORMAT!r})")
        return cls(records=list(data["records"]), config=GenerationConfig.from_dict(data["config"]), judge=data.get("judge"))

    def save(self, path: str | os.PathLike) -> Path:
        """Write as JSON, atomically (NaN for measures of empty completions)."""
        from rmu_lens._io import atomic_write_json

        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Generations:
        import json

        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def html(self, max_rows: int | None = None) -> str:
        """The side-by-side table and the per-role measures as escaped HTML (report and widget)."""
        from rmu_lens.report.utility import generations_html

        return generations_html(self, max_rows=max_rows)

    def _repr_html_(self) -> str:
        return self.html()


def compare_generations(
    base: Any,
    unlearned: Any,
    prompts: Mapping[str, Sequence[str]],
    config: GenerationConfig | None = None,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> Generations:
    """Greedy (and, with ``config.sampled``, seeded sampled) completions of each role's prompts by both
    models, measured for gibberish with the base model. ``prompts``: role -> prompt texts."""
    config = config or GenerationConfig()
    flat = [(role, prompt) for role, texts in prompts.items() for prompt in texts]
    if not flat:
        raise ValueError("compare_generations got no prompts: pass role -> list of prompt texts")
    texts = [prompt for _, prompt in flat]
    options = dict(tokenizer=tokenizer, max_new_tokens=config.max_new_tokens, min_new_tokens=config.min_new_tokens,
                   batch_size=config.batch_size)
    greedy = {name: generate(model, texts, **options) for name, model in (("base", base), ("unlearned", unlearned))}
    sampled = {}
    if config.sampled:
        for name, model in (("base", base), ("unlearned", unlearned)):
            sampled[name] = generate(model, texts, sample=True, temperature=config.temperature, top_p=config.top_p,
                                     seed=config.seed, **options)
    losses = {name: base_losses(base, greedy[name], tokenizer=tokenizer, batch_size=config.batch_size) for name in MODELS}
    records = []
    for i, (role, prompt) in enumerate(flat):
        records.append({
            "role": role,
            "prompt": prompt,
            "greedy": {name: greedy[name][i].text for name in MODELS},
            "sampled": {name: sampled[name][i].text for name in MODELS} if sampled else None,
            "measures": {
                name: {"base_loss": losses[name][i], "repeated_ngram_rate": repeated_ngram_rate(greedy[name][i].token_ids, config.ngram),
                       "n_tokens": len(greedy[name][i].token_ids)}
                for name in MODELS
            },
        })
    return Generations(records=records, config=config)
