"""The trainer's per-step history metrics, recomputed independently in float64.

Each step's record carries the mean token norm of the updated forget / retain activations and their
cosine with the frozen model's activations, over the tokens ``METRIC_TOKENS`` names (real tokens,
the first real token of each row excluded). The reference here snapshots the trained weights before
every step, replays each step's batch through ``run_with_cache`` on the bridge, and averages in float64.
"""

from __future__ import annotations

import pytest
import torch

import rmu_lens as rl
from rmu_lens.models import tokenizer_of
from rmu_lens.rmu.params import resolve_parameters
from rmu_lens.rmu.trainer import METRIC_TOKENS
from tests.helpers import texts

LAYER, BATCH_SIZE, MAX_LENGTH = 2, 2, 24
HOOK = f"blocks.{LAYER}.hook_resid_post"


def config(**overrides) -> rl.RMUConfig:
    settings = dict(layer=LAYER, update_layers=[1, 2], steering_coeff=8.0, alpha=5.0, lr=3e-3, batch_size=BATCH_SIZE,
                    max_batches=6, max_length=MAX_LENGTH, retain_max_length=MAX_LENGTH, checkpoint_every=0)
    settings.update(overrides)
    return rl.RMUConfig(**settings)


class WeightSnapshots:
    """The trained tensors before each step: at train start, then after every step."""

    def __init__(self, bridge, cfg: rl.RMUConfig) -> None:
        self.trained = resolve_parameters(bridge, cfg.param_names, cfg.update_layers)
        self.before_step: list[dict[str, torch.Tensor]] = []

    def _take(self) -> None:
        self.before_step.append({p.hf_name: p.parameter.detach().clone() for p in self.trained})

    def on_train_start(self, trainer) -> None:
        self._take()

    def on_step(self, record) -> None:
        self._take()

    @torch.no_grad()
    def load(self, step: int) -> None:
        for p in self.trained:
            p.parameter.copy_(self.before_step[step][p.hf_name])


def layer_output(bridge, tokenizer, batch_texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``HOOK`` on a right-padded batch via run_with_cache, in float64, with the metric-token mask."""
    tokenizer.padding_side, tokenizer.truncation_side = "right", "right"
    encoded = tokenizer(batch_texts, return_tensors="pt", padding=True, truncation=True, max_length=MAX_LENGTH)
    with torch.no_grad():
        _, cache = bridge.run_with_cache(encoded["input_ids"], attention_mask=encoded["attention_mask"],
                                         names_filter=HOOK, stop_at_layer=LAYER + 1)
    mask = encoded["attention_mask"].bool().clone()
    mask[:, 0] = False  # right padding: every row's first real token is at position 0
    return cache[HOOK].double(), mask


def mean_norm(h: torch.Tensor, mask: torch.Tensor) -> float:
    return h.norm(dim=-1)[mask].mean().item()


def mean_cos(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
    return cos[mask].mean().item()


def train_and_replay(make_tiny, **overrides):
    forget = {"bio": texts("bio", 12, min_words=2, max_words=14), "cyber": texts("cyber", 12, seed=1, min_words=2, max_words=14)}
    retain = texts("retain", 12, min_words=2, max_words=14)
    cfg = config(**overrides)
    bridge = make_tiny(n_layers=4, seed=5)
    tokenizer = tokenizer_of(bridge)
    snapshots = WeightSnapshots(bridge, cfg)
    run = rl.unlearn(bridge, forget, retain, cfg, callbacks=[snapshots], progress=False)
    topics = list(forget)
    expected = []
    for record in run.history:
        step = record["step"]
        topic, batch = topics[step % 2], step // 2
        forget_texts = forget[topic][batch * BATCH_SIZE:(batch + 1) * BATCH_SIZE]
        retain_texts = retain[batch * BATCH_SIZE:(batch + 1) * BATCH_SIZE]
        snapshots.load(0)
        frozen_forget, forget_mask = layer_output(bridge, tokenizer, forget_texts)
        frozen_retain, retain_mask = layer_output(bridge, tokenizer, retain_texts)
        snapshots.load(step)
        updated_forget, _ = layer_output(bridge, tokenizer, forget_texts)
        updated_retain, _ = layer_output(bridge, tokenizer, retain_texts)
        assert (~forget_mask).any() and (~retain_mask).any()
        expected.append({
            "forget_norm": mean_norm(updated_forget, forget_mask),
            "retain_norm": mean_norm(updated_retain, retain_mask),
            "retain_cos": mean_cos(updated_retain, frozen_retain, retain_mask),
            "forget_cos": mean_cos(updated_forget, frozen_forget, forget_mask),
            "frozen_forget_norm": mean_norm(frozen_forget, forget_mask),
        })
    return run, expected


def test_metric_tokens_are_documented_as_real_tokens_without_the_first():
    assert "first real token" in METRIC_TOKENS and "real tokens" in METRIC_TOKENS


def test_history_norms_and_cosines_match_a_float64_recomputation(make_tiny):
    run, expected = train_and_replay(make_tiny)
    assert len(run.history) == 6
    for record, reference in zip(run.history, expected):
        for key, value in reference.items():
            assert record[key] == pytest.approx(value, rel=1e-5, abs=1e-6), (record["step"], key)
    # the run moved the forget activations: step 0 (before any update) and the last step differ
    assert expected[-1]["forget_cos"] < expected[0]["forget_cos"] - 1e-3
    assert expected[0]["forget_cos"] == pytest.approx(1.0, abs=1e-6)


def test_metrics_every_records_the_frozen_forget_metrics_on_those_steps_only(make_tiny):
    run, expected = train_and_replay(make_tiny, metrics_every=4)
    assert [("forget_cos" in r, "frozen_forget_norm" in r) for r in run.history] == [
        (s % 4 == 0, s % 4 == 0) for s in range(6)]
    for record, reference in zip(run.history, expected):
        for key in ("forget_norm", "retain_norm", "retain_cos", "forget_cos", "frozen_forget_norm"):
            if key in record:
                assert record[key] == pytest.approx(reference[key], rel=1e-5, abs=1e-6), (record["step"], key)
