"""RMUConfig: defaults are the published setting, JSON round trip, and clear errors."""

from __future__ import annotations

import pytest

from rmu_lens.rmu.config import PROFILES, RMUConfig


def test_defaults_are_the_published_zephyr_setting():
    config = RMUConfig()
    assert (config.layer, config.update_layers, config.steering_coeff, config.alpha) == (7, [5, 6, 7], 6.5, 1200.0)
    assert (config.lr, config.batch_size, config.max_batches, config.max_length, config.seed) == (5e-5, 4, 150, 512, 42)
    assert config.read_hook == "blocks.7.hook_resid_post"
    assert config.param_names == ["blocks.{layer}.mlp.out.weight"]


def test_update_layers_default_to_the_two_layers_below_and_the_layer_itself():
    assert RMUConfig(layer=3).update_layers == [1, 2, 3]
    assert RMUConfig(layer=1).update_layers == [0, 1]


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_round_trips_through_json(name):
    config = RMUConfig.profile(name)
    assert RMUConfig.from_json(config.to_json()) == config


def test_round_trip_keeps_per_topic_lists_and_optional_fields():
    config = RMUConfig(steering_coeff=[6.5, 7.0], alpha=[1200.0, 800.0], max_length=[512, 768], adaptive_beta=5.0, reference=True)
    assert RMUConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"layer": 3, "update_layers": [2, 4]}, "update_layers"),
        ({"lr": 0}, "lr"),
        ({"optimizer": "sgd"}, "optimizer"),
        ({"reference": True, "optimizer": "adamw"}, "reference"),
        ({"steering_coeff": -1.0}, "steering_coeff"),
        ({"update_layers": []}, "update_layers"),
    ],
)
def test_invalid_settings_raise_naming_the_setting(settings, message):
    with pytest.raises(ValueError, match=message):
        RMUConfig(**settings)


def test_unknown_fields_in_json_are_an_error():
    with pytest.raises(ValueError, match="steering_coef"):
        RMUConfig.from_dict({"steering_coef": 6.5})


def test_per_topic_list_of_wrong_length_is_an_error():
    with pytest.raises(ValueError, match="alpha"):
        RMUConfig(alpha=[1.0, 2.0, 3.0]).per_topic("alpha", 2)


def test_overriding_a_profiles_layer_moves_its_update_layers_with_it():
    demo = RMUConfig.profile("demo")
    offsets = [i - demo.layer for i in demo.update_layers]
    moved = RMUConfig.profile("demo", layer=demo.layer + 4)
    assert [i - moved.layer for i in moved.update_layers] == offsets
    assert RMUConfig.profile("demo", layer=0).update_layers == [0]                 # clipped at 0
    assert RMUConfig.profile("demo", layer=9, update_layers=[7]).update_layers == [7]   # explicit wins
    assert RMUConfig.profile("zephyr", layer=9).update_layers == [7, 8, 9]             # no preset list: l-2..l
