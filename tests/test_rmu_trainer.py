"""RMU trainer behaviour on tiny random models: schedule, coefficients, run directory, resume, errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import rmu_lens as rl
from rmu_lens.models import tokenizer_of
from rmu_lens.rmu.batches import forget_sources, retain_sources, schedule, step_count
from rmu_lens.rmu.rundir import RunExistsError
from rmu_lens.rmu.trainer import NonFiniteLossError
from tests.helpers import texts

LAYER = 2


def small_config(**overrides) -> rl.RMUConfig:
    settings = dict(layer=LAYER, steering_coeff=8.0, alpha=5.0, lr=1e-3, batch_size=2, max_batches=6, max_length=24,
                    retain_max_length=24, checkpoint_every=2)
    settings.update(overrides)
    return rl.RMUConfig(**settings)


def data(n_forget: int = 8, n_retain: int = 12):
    forget = {"bio": texts("bio", n_forget), "cyber": texts("cyber", n_forget, seed=1)}
    return forget, texts("retain", n_retain)


def trained_weight(bridge, layer: int) -> torch.Tensor:
    return bridge.state_dict()[f"blocks.{layer}.mlp.out.weight"].detach().clone()


def test_topics_alternate_step_by_step_and_steps_follow_the_official_count(make_tiny):
    forget, retain = data(n_forget=8, n_retain=20)
    run = rl.unlearn(make_tiny(n_layers=4), forget, retain, small_config(max_batches=100), progress=False)
    # official: min(max_batches, shortest forget batch list, shortest retain batch list) = min(100, 4, 10)
    assert [h["topic"] for h in run.history] == ["bio", "cyber", "bio", "cyber"]


def test_schedule_pairs_batches_as_the_official_code():
    forget = forget_sources({"a": texts("bio", 12), "b": texts("cyber", 12)})
    retain = retain_sources([texts("retain", 12), texts("retain", 12, seed=3)], 2)
    for step in range(6):
        topic, forget_batch, retain_set, retain_batch = schedule(step, forget, retain, 4)
        assert (topic, forget_batch, retain_set, retain_batch) == (step % 2, step // 2, step % 2, step // 2)
    assert step_count(forget, retain, 4, 150, cycle=False) == 3
    assert step_count(forget, retain, 4, 7, cycle=True) == 7


def test_adaptive_coefficient_is_beta_times_the_frozen_mean_token_norm(make_tiny):
    bridge = make_tiny(n_layers=4, seed=3)
    forget, retain = data()
    tokenizer = tokenizer_of(bridge)
    tokenizer.padding_side = "right"
    batch = tokenizer(forget["bio"][:2], return_tensors="pt", padding=True, truncation=True, max_length=24)
    _, cache = bridge.run_with_cache(batch["input_ids"], attention_mask=batch["attention_mask"],
                                     names_filter=f"blocks.{LAYER}.hook_resid_post", stop_at_layer=LAYER + 1)
    norms = cache[f"blocks.{LAYER}.hook_resid_post"].double().norm(dim=-1)
    keep = batch["attention_mask"].bool().clone()
    keep[:, 0] = False  # right padding: the first real token sits at column 0
    expected = 5.0 * norms[keep].mean().item()
    run = rl.unlearn(bridge, forget, retain, small_config(adaptive_beta=5.0, max_batches=2), progress=False)
    assert run.steering_coeffs["bio"] == pytest.approx(expected, rel=1e-5)
    assert run.history[0]["steering_coeff"] == pytest.approx(expected, rel=1e-5)


def test_explicit_control_vectors_are_used_and_saved_as_unit_vectors(make_tiny, tmp_path):
    bridge = make_tiny(n_layers=4)
    d_model = bridge.cfg.d_model
    vectors = {"bio": torch.arange(d_model, dtype=torch.float32) + 1, "cyber": -torch.ones(d_model)}
    forget, retain = data()
    run = rl.unlearn(bridge, forget, retain, small_config(max_batches=2), control_vectors=vectors, out=tmp_path / "run", progress=False)
    saved = load_file(str(tmp_path / "run" / "control_vectors.safetensors"))
    for topic, vector in vectors.items():
        torch.testing.assert_close(saved[f"u.{topic}"], vector / vector.norm())
        torch.testing.assert_close(saved[f"target.{topic}"], 8.0 * vector / vector.norm())
        torch.testing.assert_close(run.control_vectors[topic], vector / vector.norm())


def test_control_vector_of_the_wrong_shape_is_an_error(make_tiny):
    bridge = make_tiny(n_layers=4)
    forget, retain = data()
    with pytest.raises(ValueError, match=r"control_vectors\['bio'\].*d_model"):
        rl.unlearn(bridge, forget, retain, small_config(), control_vectors={"bio": torch.ones(3), "cyber": torch.ones(3)})


def test_seeded_control_vectors_match_torch_rand_under_manual_seed(make_tiny):
    bridge = make_tiny(n_layers=4)
    forget, retain = data()
    run = rl.unlearn(bridge, forget, retain, small_config(max_batches=1, seed=123), progress=False)
    torch.manual_seed(123)
    for topic in ("bio", "cyber"):
        raw = torch.rand(1, 1, bridge.cfg.d_model)
        torch.testing.assert_close(run.control_vectors[topic], (raw / raw.norm()).reshape(-1))


def test_run_directory_describes_the_run_and_holds_a_loadable_model(make_tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    bridge = make_tiny(n_layers=4)
    forget, retain = data()
    run = rl.unlearn(bridge, forget, retain, small_config(), out=tmp_path / "run", progress=False)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "finished" and record["steps_done"] == len(run.history) == 4
    assert rl.RMUConfig.from_dict(record["config"]) == run.config
    assert record["data"]["forget"][0]["sha256"] == rl.Corpus("bio", forget["bio"], "x").sha256
    assert {"torch", "transformers", "transformer-lens"} <= record["versions"].keys()
    assert record["history"] == run.history
    assert not (tmp_path / "run" / "checkpoint").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    torch.testing.assert_close(reloaded.model.layers[LAYER].mlp.down_proj.weight, trained_weight(bridge, LAYER))


def test_a_finished_run_is_not_overwritten_without_the_flag(make_tiny, tmp_path):
    forget, retain = data()
    rl.unlearn(make_tiny(n_layers=4), forget, retain, small_config(max_batches=2), out=tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "run.json").read_text()
    with pytest.raises(RunExistsError, match="overwrite"):
        rl.unlearn(make_tiny(n_layers=4), forget, retain, small_config(max_batches=2), out=tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "run.json").read_text() == before
    rl.unlearn(make_tiny(n_layers=4), forget, retain, small_config(max_batches=2), out=tmp_path / "run", overwrite=True, progress=False)


class InterruptAt:
    """Raise KeyboardInterrupt after a given step, as Ctrl-C would."""

    def __init__(self, step: int, error: type[BaseException] = KeyboardInterrupt) -> None:
        self.step, self.error = step, error

    def on_step(self, record: dict) -> None:
        if record["step"] == self.step:
            raise self.error("interrupted by the test")


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_resume_after_interruption_gives_the_uninterrupted_weights(make_tiny, tmp_path, error):
    forget, retain = data(n_forget=12, n_retain=16)
    config = small_config(max_batches=6, checkpoint_every=2)
    reference = make_tiny(n_layers=4, seed=5)
    uninterrupted = rl.unlearn(reference, forget, retain, config, progress=False)

    with pytest.raises(error):
        rl.unlearn(make_tiny(n_layers=4, seed=5), forget, retain, config, out=tmp_path / "run",
                   callbacks=[InterruptAt(3, error)], progress=False)
    state = json.loads((tmp_path / "run" / "run.json").read_text())
    assert state["status"] in ("interrupted", "failed")
    resumed_model = make_tiny(n_layers=4, seed=5)
    resumed = rl.unlearn(resumed_model, forget, retain, config, out=tmp_path / "run", resume=True, progress=False)
    assert [h["step"] for h in resumed.history] == list(range(len(uninterrupted.history)))
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in uninterrupted.history]
    for layer in config.update_layers:
        torch.testing.assert_close(trained_weight(resumed_model, layer), trained_weight(reference, layer), atol=0, rtol=0)


def test_resume_with_a_different_config_is_refused(make_tiny, tmp_path):
    forget, retain = data()
    with pytest.raises(KeyboardInterrupt):
        rl.unlearn(make_tiny(n_layers=4), forget, retain, small_config(), out=tmp_path / "run",
                   callbacks=[InterruptAt(1)], progress=False)
    with pytest.raises(ValueError, match="lr"):
        rl.unlearn(make_tiny(n_layers=4), forget, retain, small_config(lr=1e-2), out=tmp_path / "run", resume=True, progress=False)


def test_stop_request_ends_cleanly_and_the_run_can_be_resumed(make_tiny, tmp_path):
    forget, retain = data(n_forget=12, n_retain=16)

    class StopAfter:
        def on_train_start(self, trainer):
            self.trainer = trainer

        def on_step(self, record):
            if record["step"] == 1:
                self.trainer.request_stop()

    run = rl.unlearn(make_tiny(n_layers=4), forget, retain, small_config(), out=tmp_path / "run", callbacks=[StopAfter()], progress=False)
    assert run.status == "stopped" and len(run.history) == 2
    assert (tmp_path / "run" / "checkpoint" / "state.json").is_file() and (tmp_path / "run" / "model").is_dir()
    resumed = rl.unlearn(make_tiny(n_layers=4), forget, retain, small_config(), out=tmp_path / "run", resume=True, progress=False)
    assert resumed.status == "finished" and len(resumed.history) == 6


def test_non_finite_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(make_tiny, tmp_path):
    forget, retain = data(n_forget=12, n_retain=16)
    config = small_config(lr=1e30, checkpoint_every=1)
    with pytest.raises(NonFiniteLossError, match="checkpoint"):
        rl.unlearn(make_tiny(n_layers=4), forget, retain, config, out=tmp_path / "run", progress=False)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "failed"
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    assert state["step"] == len(state["history"]) >= 1
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in state["history"])


def test_callbacks_receive_every_step_record(make_tiny):
    forget, retain = data()
    seen = []
    run = rl.unlearn(make_tiny(n_layers=4), forget, retain, small_config(), callbacks=[seen.append], progress=False)
    assert seen == run.history
    assert {"forget_loss", "retain_loss", "forget_norm", "retain_norm", "forget_cos", "retain_cos"} <= seen[0].keys()


@pytest.mark.parametrize(
    "config, message",
    [
        (dict(param_names=["blocks.{layer}.mlp.nothing.weight"]), "matches no tensor"),
        (dict(layer=9), "out of range"),
        (dict(hook_point="blocks.2.attn.hook_z"), "residual"),
        (dict(hook_point="blocks.1.hook_resid_post"), "before update layer"),
    ],
)
def test_bad_settings_for_this_model_are_clear_errors(make_tiny, config, message):
    forget, retain = data()
    with pytest.raises(ValueError, match=message):
        rl.unlearn(make_tiny(n_layers=4), forget, retain, small_config(**config), progress=False)


def test_tensors_outside_the_update_layers_cannot_be_trained(make_tiny):
    forget, retain = data()
    with pytest.raises(ValueError, match="update layers"):
        rl.unlearn(make_tiny(n_layers=4), forget, retain, small_config(param_names=["blocks.{layer}.mlp.out.weight", "embed.weight"]))


def test_hf_names_and_tl_aliases_select_the_same_tensor(make_tiny):
    from rmu_lens.rmu.params import resolve_parameters

    bridge = make_tiny(n_layers=4)
    by_bridge = resolve_parameters(bridge, ["blocks.{layer}.mlp.out.weight"], [1, 2])
    by_hf = resolve_parameters(bridge, ["model.layers.{layer}.mlp.down_proj.weight"], [1, 2])
    by_alias = resolve_parameters(bridge, ["blocks.{layer}.mlp.W_out"], [1, 2])
    assert [p.hf_name for p in by_bridge] == [p.hf_name for p in by_hf] == [p.hf_name for p in by_alias] == [
        "model.layers.1.mlp.down_proj.weight", "model.layers.2.mlp.down_proj.weight"]


def test_empty_or_mismatched_data_are_clear_errors(make_tiny):
    bridge = make_tiny(n_layers=4)
    forget, retain = data()
    with pytest.raises(ValueError, match="forget"):
        rl.unlearn(bridge, [], retain, small_config())
    with pytest.raises(ValueError, match="one per topic"):
        rl.unlearn(bridge, forget, [texts("retain", 4), texts("retain", 4), texts("retain", 4)], small_config())
    with pytest.raises(ValueError, match="input_ids"):
        rl.unlearn(bridge, {"bio": [{"tokens": [1, 2]}]}, retain, small_config())


def test_pre_tokenized_batches_train_like_the_same_texts(make_tiny):
    forget, retain = data()
    text_run = rl.unlearn(make_tiny(n_layers=4, seed=2), forget, retain, small_config(max_batches=4), progress=False)
    bridge = make_tiny(n_layers=4, seed=2)
    tokenizer = tokenizer_of(bridge)
    tokenizer.padding_side = "right"

    def tokenized(items, max_length=24):
        return [dict(tokenizer(items[i:i + 2], return_tensors="pt", padding=True, truncation=True, max_length=max_length))
                for i in range(0, len(items), 2)]

    token_run = rl.unlearn(bridge, {k: tokenized(v) for k, v in forget.items()}, tokenized(retain), small_config(max_batches=4), progress=False)
    assert [h["forget_loss"] for h in token_run.history] == pytest.approx([h["forget_loss"] for h in text_run.history], rel=1e-6)


def test_a_trainer_given_another_trainers_state_dict_continues_to_the_same_weights(make_tiny):
    import copy

    from rmu_lens.rmu.trainer import RMUTrainer

    forget, retain = data()
    config = small_config(max_batches=4, adaptive_beta=2.0, checkpoint_every=0)
    uninterrupted = RMUTrainer(make_tiny(n_layers=4, seed=3), forget, retain, config)
    uninterrupted.train(progress=False)
    first = RMUTrainer(make_tiny(n_layers=4, seed=3), forget, retain, config)
    for _ in range(2):
        first.history.append(first.train_step())
    second = RMUTrainer(make_tiny(n_layers=4, seed=3), forget, retain, config)
    second.load_state_dict(copy.deepcopy(first.state_dict()))
    del first
    second.train(progress=False)
    assert second.steering_coeffs == uninterrupted.steering_coeffs  # calibrated once, not again on resume
    assert [h["step"] for h in second.history] == [0, 1, 2, 3]
    for mine, reference in zip(second.trained, uninterrupted.trained, strict=True):
        assert torch.equal(mine.parameter, reference.parameter), mine.hf_name
