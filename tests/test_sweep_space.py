"""Search spaces: dicts and YAML files parsed into Optuna dimensions; every bad key is one clear error."""

from __future__ import annotations

import optuna
import pytest

from rmu_lens.errors import RMULensError
from rmu_lens.rmu import RMUConfig
from rmu_lens.sweep.space import DEFAULT_SPACE, SearchSpace, SweepSpaceError


def test_space_from_yaml_gives_the_trial_configs_it_describes(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("lr: {low: 1e-4, high: 1e-1, log: true}\nlayer: {choices: [3, 5]}\nupdate_depth: {choices: [1]}\n"
                    "alpha: 50\nmode: {choices: [plain]}\n")
    space = SearchSpace.parse(path)
    assert space.dimensions["lr"].kind == "float" and space.dimensions["lr"].low == 1e-4  # YAML's "1e-4" string
    assert space.dimensions["layer"].kind == "categorical" and space.dimensions["alpha"].kind == "fixed"
    template = RMUConfig.profile("demo")
    trial = optuna.trial.FixedTrial({"lr": 0.003, "layer": 5, "update_depth": 1, "mode": "plain"})
    config = space.suggest(trial, template)
    assert (config.lr, config.layer, config.update_layers, config.alpha) == (0.003, 5, [5], 50.0)
    assert config.adaptive_beta is None and template.adaptive_beta is not None  # plain mode: fixed c
    assert config.max_batches == template.max_batches  # unsearched settings come from the template


def test_layer_without_depth_keeps_the_templates_offsets():
    space = SearchSpace.parse({"layer": {"choices": [1, 4]}})
    template = RMUConfig(layer=7)  # update layers 5..7
    assert space.config({"layer": 4}, template).update_layers == [2, 3, 4]
    assert space.config({"layer": 1}, template).update_layers == [0, 1]  # clipped at 0


def test_int_fields_are_int_ranges_and_grids_need_choices():
    space = SearchSpace.parse({"max_batches": {"low": 10, "high": 60, "step": 10}, "seed": 3})
    assert space.dimensions["max_batches"].kind == "int" and space.grid() is None
    assert SearchSpace.parse({"layer": {"choices": [1, 2]}, "mode": {"choices": ["plain", "adaptive"]}}).grid() == {
        "layer": [1, 2], "mode": ["plain", "adaptive"]}
    assert set(SearchSpace.parse(None).dimensions) == set(DEFAULT_SPACE)


@pytest.mark.parametrize("spec, words", [
    ({"learning_rate": {"low": 1, "high": 2}}, ["'learning_rate'", "not an RMUConfig field", "lr"]),
    ({"lr": {"low": 0.1, "high": 0.01}}, ["'lr'", "low <= high"]),
    ({"lr": {"low": 0, "high": 0.1, "log": True}}, ["'lr'", "log range needs low > 0"]),
    ({"lr": {"low": 0.01}}, ["'lr'", "needs both low and high"]),
    ({"lr": {"min": 0.01, "max": 1}}, ["'lr'", "unknown entries", "'max', 'min'"]),
    ({"layer": [1, 2]}, ["'layer'", '{"choices": [1, 2]}']),
    ({"layer": {"low": 1.5, "high": 3}}, ["'layer'", "integer"]),
    ({"update_layers": {"choices": [1]}}, ["'update_layers'", "update_depth"]),
    ({"mode": {"choices": ["plain", "fancy"]}}, ["'mode'", "plain", "adaptive"]),
    ({"alpha": {"choices": []}}, ["'alpha'", "non-empty"]),
])
def test_a_bad_space_names_the_key_and_the_fix(spec, words):
    with pytest.raises(SweepSpaceError) as error:
        SearchSpace.parse(spec)
    assert isinstance(error.value, RMULensError) and isinstance(error.value, ValueError)
    for word in words:
        assert word in str(error.value)


def test_a_bad_space_file_is_one_error(tmp_path):
    (tmp_path / "s.yaml").write_text("lr: {low: [\n")
    with pytest.raises(SweepSpaceError, match="not valid YAML"):
        SearchSpace.parse(tmp_path / "s.yaml")
    (tmp_path / "s.toml").write_text("x = 1")
    with pytest.raises(SweepSpaceError, match=r"\.yaml, \.yml or \.json"):
        SearchSpace.parse(tmp_path / "s.toml")


def test_layers_outside_the_model_are_refused():
    with pytest.raises(SweepSpaceError, match=r"\[9\] outside this model's layers 0..2"):
        SearchSpace.parse({"layer": {"choices": [1, 9]}}).check_model(3)
