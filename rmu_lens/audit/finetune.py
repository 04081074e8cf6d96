"""Few-shot fine-tuning audit: fine-tune a copy of the unlearned model on N examples and re-evaluate.

Łucki et al. (2024) found that fine-tuning an RMU model on ~10 examples unrelated to the forget
domain brings most of the removed accuracy back. For each example source (``retain``: unrelated
text; ``forget``: forget-domain text) and each N, a fresh copy of the unlearned model is trained with
LoRA (peft; merged afterwards) or with the weights of a few layers, on the first N texts of a seeded
shuffle of the source, and scored on the forget and retain questions. The caller's model is never
modified: every fine-tune starts from a new, unwrapped HF copy of its weights.
"""

from __future__ import annotations

import dataclasses
import random
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from rmu_lens.audit.recovery_stats import Baseline, Recovery
from rmu_lens.flags import setting
from rmu_lens.rmu.batches import right_pad

FINETUNE_METHODS = ("lora", "layers")


@dataclass
class FinetuneConfig:
    """How each few-shot fine-tune is run (the same for every source and N)."""

    n_examples: list[int] = setting([5, 10, 50], "fine-tuning example counts N, one fine-tune each", flag="--n")
    method: str = setting(
        "lora", "lora (peft LoRA on every linear layer, merged afterwards) or layers (train the weights of layers)",
        choices=FINETUNE_METHODS,
    )
    layers: list[int] | None = setting(None, "for method layers: the decoder layers whose weights are trained "
                                             "[default: the last two]")
    steps: int = setting(30, "optimizer steps per fine-tune (batches cycle through the N examples)")
    lr: float = setting(1e-3, "fine-tuning learning rate")
    batch_size: int = setting(4, "examples per fine-tuning step")
    lora_rank: int = setting(8, "LoRA rank")
    lora_alpha: float = setting(16.0, "LoRA alpha")
    max_length: int = setting(256, "example token limit")
    seed: int = setting(0, "seed of the example draw")

    def __post_init__(self) -> None:
        self.n_examples = [int(n) for n in self.n_examples]
        problems = []
        if not self.n_examples or min(self.n_examples) < 1:
            problems.append(f"n_examples={self.n_examples} must be positive counts")
        if self.method not in FINETUNE_METHODS:
            problems.append(f"method={self.method!r}; choose one of {FINETUNE_METHODS}")
        for name in ("steps", "lr", "batch_size", "lora_rank", "max_length"):
            if getattr(self, name) <= 0:
                problems.append(f"{name}={getattr(self, name)} must be > 0")
        if problems:
            raise ValueError("Invalid FinetuneConfig: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def plain_copy(bridge: Any) -> Any:
    """A fresh, unwrapped HF model holding copies of the bridge's weights (the bridge is not touched)."""
    from transformers import AutoModelForCausalLM

    from rmu_lens.models import hf_model_of, hf_state_dict

    hf_model = hf_model_of(bridge)
    parameter = next(hf_model.parameters())
    # Built on the CPU for real (not on the meta device): non-persistent buffers such as rotary
    # frequencies are not in any state dict and must be computed by the constructor.
    clean = AutoModelForCausalLM.from_config(hf_model.config, dtype=parameter.dtype)
    available = hf_state_dict(bridge)
    expected = clean.state_dict()
    tied = {"lm_head.weight"} if getattr(hf_model.config, "tie_word_embeddings", False) else set()
    missing = [k for k in expected if k not in available and k not in tied]
    if missing:
        raise RuntimeError(f"Could not copy the bridge's weights into a plain HF model; missing {missing[:5]}")
    with torch.no_grad():
        for name, tensor in expected.items():
            if name in available:
                tensor.copy_(available[name])
    clean.tie_weights()
    return clean.to(parameter.device).eval()


def _trainable(model: Any, config: FinetuneConfig) -> Any:
    if config.method == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                          target_modules="all-linear", bias="none", task_type="CAUSAL_LM")
        with warnings.catch_warnings():
            # peft 0.21 calls a transformers 5 method that warns of its own deprecation; nothing to act on.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return get_peft_model(model, lora)
    n_layers = model.config.num_hidden_layers
    layers = config.layers if config.layers is not None else list(range(max(0, n_layers - 2), n_layers))
    bad = [l for l in layers if not 0 <= l < n_layers]
    if bad:
        raise ValueError(f"FinetuneConfig.layers={layers}: layers {bad} are outside 0..{n_layers - 1}")
    prefixes = tuple(f".layers.{l}." for l in layers)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(any(p in f".{name}" for p in prefixes))
    return model


def finetune_copy(bridge: Any, texts: Sequence[str], config: FinetuneConfig) -> tuple[Any, list[float]]:
    """Fine-tune a copy of ``bridge``'s model on ``texts`` (causal LM loss over real tokens).

    Returns the fine-tuned plain HF model (LoRA merged in) and the loss of every step. The bridge and
    its weights are left unchanged.
    """
    from rmu_lens.models import tokenizer_of

    if not texts:
        raise ValueError("finetune_copy needs at least one training text")
    tokenizer = tokenizer_of(bridge)
    model = _trainable(plain_copy(bridge), config)
    device = next(model.parameters()).device
    previous = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        encoded = [tokenizer(t, truncation=True, max_length=config.max_length)["input_ids"] for t in texts]
    finally:
        tokenizer.padding_side = previous
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rng = random.Random(config.seed)
    order: list[int] = []
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=0.0)
    losses: list[float] = []
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        for _ in range(config.steps):
            batch = []
            while len(batch) < min(config.batch_size, len(encoded)):
                if not order:
                    order = list(range(len(encoded)))
                    rng.shuffle(order)
                batch.append(encoded[order.pop()])
            padded = right_pad(batch, pad)
            ids, mask = padded.input_ids, padded.attention_mask
            labels = ids.masked_fill(mask == 0, -100)
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device), use_cache=False)
            if not torch.isfinite(out.loss):
                raise FloatingPointError(f"Fine-tuning loss became {out.loss.item()}; lower FinetuneConfig.lr (now {config.lr})")
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            losses.append(out.loss.item())
    model.eval()
    if config.method == "lora":
        model = model.merge_and_unload()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model, losses


@dataclass
class FinetuneCondition:
    """One fine-tune: N examples from one source, and what it recovered."""

    source: str
    n_examples: int
    forget_acc: float
    retain_acc: float | None
    retain_change: float | None
    recovery: Recovery
    first_loss: float
    last_loss: float
    forget_outcomes: dict[str, bool] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in ("source", "n_examples", "forget_acc", "retain_acc", "retain_change",
                                                  "first_loss", "last_loss", "forget_outcomes")},
                "recovery": self.recovery.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FinetuneCondition:
        fields = {k: data[k] for k in ("source", "n_examples", "forget_acc", "retain_acc", "retain_change", "first_loss", "last_loss")}
        return cls(**fields, recovery=Recovery.from_dict(data["recovery"]), forget_outcomes=dict(data.get("forget_outcomes", {})))


@dataclass
class FinetuneResult:
    """Recovery vs N for each example source."""

    conditions: list[FinetuneCondition]
    config: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    def curve(self, source: str) -> list[FinetuneCondition]:
        """The conditions of one source, by increasing N."""
        return sorted((c for c in self.conditions if c.source == source), key=lambda c: c.n_examples)

    @property
    def sources(self) -> list[str]:
        return list(dict.fromkeys(c.source for c in self.conditions))

    def at(self, source: str, n_examples: int) -> FinetuneCondition | None:
        return next((c for c in self.conditions if c.source == source and c.n_examples == n_examples), None)

    def to_dict(self) -> dict[str, Any]:
        return {"conditions": [c.to_dict() for c in self.conditions], "config": self.config, "meta": self.meta}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FinetuneResult:
        return cls([FinetuneCondition.from_dict(c) for c in data["conditions"]], dict(data["config"]), dict(data.get("meta", {})))


def finetune_audit(
    unlearned: Any,
    baseline: Baseline,
    forget_questions: Sequence[Any],
    retain_questions: Sequence[Any] | None,
    sources: Mapping[str, Sequence[str]],
    config: FinetuneConfig | None = None,
    *,
    batch_size: int = 16,
    progress: bool = False,
) -> FinetuneResult:
    """Fine-tune copies of ``unlearned`` on N texts of each source (e.g. ``{"retain": ..., "forget": ...}``).

    ``unlearned`` (a bridge) is not modified. Each source needs at least max(N) texts.
    """
    from tqdm.auto import tqdm

    from rmu_lens.eval import evaluate
    from rmu_lens.models import tokenizer_of

    config = config or FinetuneConfig()
    if not sources:
        raise ValueError("finetune_audit needs at least one example source, e.g. {'retain': texts, 'forget': texts}")
    needed = max(config.n_examples)
    for name, texts in sources.items():
        if len(texts) < needed:
            raise ValueError(f"Example source {name!r} has {len(texts)} texts but N goes up to {needed}: give more texts or smaller n_examples")
    tokenizer = tokenizer_of(unlearned)
    mode = baseline.base_forget.mode
    conditions = []
    jobs = [(name, n) for name in sources for n in sorted(config.n_examples)]
    for name, n in tqdm(jobs, desc="Fine-tuning audit", disable=not progress):
        texts = list(sources[name])
        random.Random(f"{config.seed}:{name}").shuffle(texts)
        model, losses = finetune_copy(unlearned, texts[:n], config)
        forget = evaluate(model, forget_questions, mode=mode, batch_size=batch_size, progress=False, tokenizer=tokenizer)
        retain = evaluate(model, retain_questions, mode=mode, batch_size=batch_size, progress=False, tokenizer=tokenizer) if retain_questions else None
        retain_change = retain.accuracy - baseline.unlearned_retain.accuracy if retain is not None and baseline.unlearned_retain is not None else None
        conditions.append(FinetuneCondition(
            name, n, forget.accuracy, retain.accuracy if retain else None, retain_change,
            baseline.recovery(forget, seed=config.seed), losses[0], losses[-1], forget.outcomes(),
        ))
        del model
    meta = {"mode": mode, "examples": "the first N texts of a seeded shuffle of each source",
            "copy": "each fine-tune starts from a fresh copy of the unlearned weights"}
    return FinetuneResult(conditions, config.to_dict(), meta)

