"""The analyzer registry and AnalysisConfig: a toy analyzer added in a test runs, saves, loads and reaches the report."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from matplotlib.figure import Figure

from rmu_lens.analysis import Analysis, analyze
from rmu_lens.analysis.activations import tokenize
from rmu_lens.analysis.config import AnalysisConfig, AnalysisConfigError
from rmu_lens.analysis.registry import (
    ANALYZERS,
    Analyzer,
    AnalyzerRegistryError,
    register_analyzer,
    unregister_analyzer,
)
from rmu_lens.models import tokenizer_of
from rmu_lens.report import build_report
from rmu_lens.results import JSONResult
from tests.helpers import texts

LAYER = 1
TOY = "toy_mean_norm"


@dataclass
class MeanNorm(JSONResult):
    """Mean token norm at one hook point per dataset and model."""

    hook: str
    norms: dict[str, dict[str, float]]

    FORMAT = "tests.mean_norm/1"
    WHAT = "a toy mean-norm result"

    def to_dict(self):
        return {"format": self.FORMAT, "hook": self.hook, "norms": self.norms}

    @classmethod
    def from_dict(cls, data):
        cls.check_format(data)
        return cls(data["hook"], data["norms"])

    def figures(self):
        figure = Figure()
        ax = figure.add_subplot()
        names = list(self.norms)
        ax.bar(range(len(names)), [self.norms[n]["unlearned"] for n in names])
        return {TOY: figure}

    def captions(self):
        return {TOY: "Mean token norm at layer l after RMU."}


@pytest.fixture
def toy():
    @register_analyzer(TOY, result=MeanNorm)
    class MeanNormAnalyzer(Analyzer):
        def __init__(self, inputs):
            super().__init__(inputs)
            self.norms = {}

        def observe(self, dataset, base, unlearned):
            hook = self.inputs.layer_hook
            self.norms[dataset.name] = {m: float(a.tokens(hook).norm(dim=1).mean())
                                        for m, a in (("base", base), ("unlearned", unlearned))}

        def finish(self):
            return MeanNorm(self.inputs.layer_hook, self.norms)

    try:
        yield MeanNormAnalyzer
    finally:
        unregister_analyzer(TOY)


def models(make_tiny):
    base = make_tiny("llama", n_layers=2, d_model=32, seed=0)
    unlearned = make_tiny("llama", n_layers=2, d_model=32, seed=0)
    with torch.no_grad():
        unlearned.blocks[LAYER].mlp.out.weight.mul_(3.0)
    return base, unlearned


DATASETS = {"bio": (texts("bio", 5), "forget"), "retain": (texts("retain", 5), "retain")}
U = torch.rand(32, generator=torch.Generator().manual_seed(0))


def reference_mean_norm(model, data: list[str], hook: str) -> float:
    """Mean ||h|| over real tokens except position 0, from one full run_with_cache forward, in float64."""
    batch = tokenize(tokenizer_of(model), data, 128)
    with torch.no_grad():
        _, cache = model.run_with_cache(batch.input_ids, attention_mask=batch.attention_mask, names_filter=[hook])
    mask = batch.attention_mask.bool().clone()
    mask[:, 0] = False
    return float(cache[hook][mask].to(torch.float64).norm(dim=-1).mean())


def test_builtin_analyzers_are_registered_in_report_order():
    assert list(ANALYZERS)[:3] == ["collapse", "probes", "damage"]


def test_a_registered_toy_analyzer_runs_saves_loads_and_reaches_the_report(make_tiny, toy, tmp_path):
    base, unlearned = models(make_tiny)
    analysis = analyze(base, unlearned, DATASETS, control_vectors={"bio": U}, steering_coeffs={"bio": 20.0},
                       layer=LAYER, config=AnalysisConfig(probes=False), progress=False)
    assert list(analysis.results) == ["collapse", TOY]
    hook = f"blocks.{LAYER}.hook_resid_post"
    for name, (data, _) in DATASETS.items():
        for model_name, model in (("base", base), ("unlearned", unlearned)):
            assert analysis.results[TOY].norms[name][model_name] == pytest.approx(
                reference_mean_norm(model, data, hook), rel=1e-5)
    assert analysis.results[TOY].norms["bio"]["unlearned"] != pytest.approx(analysis.results[TOY].norms["bio"]["base"])

    analysis.save(tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "analysis.json").read_text(encoding="utf-8"))
    assert saved["analyzers"] == ["collapse", TOY] and saved[TOY]["format"] == MeanNorm.FORMAT
    assert saved["config"] == AnalysisConfig(probes=False).to_dict()
    loaded = Analysis.load(tmp_path / "out")
    assert loaded.results[TOY] == analysis.results[TOY] and loaded.config == analysis.config

    report = build_report(analysis=loaded)
    assert [f.name for f in report.figures] == ["norms", "cos_u", "pca", "dispersion", TOY]
    assert report.figures[-1].caption == "Mean token norm at layer l after RMU."
    written = report.save_figures(tmp_path / "figures")
    assert (tmp_path / "figures" / f"{TOY}.png") in written

    unregister_analyzer(TOY)
    try:
        with pytest.raises(AnalyzerRegistryError, match=f"{TOY}.*not registered"):
            Analysis.load(tmp_path / "out")
    finally:
        register_analyzer(TOY, result=MeanNorm)(toy)


def test_registry_refuses_bad_names_missing_requirements_and_duplicates(toy):
    with pytest.raises(AnalyzerRegistryError, match="identifier"):
        register_analyzer("meta", result=MeanNorm)
    with pytest.raises(AnalyzerRegistryError, match="requires.*nowhere"):
        register_analyzer("later", result=MeanNorm, requires=("nowhere",))
    with pytest.raises(AnalyzerRegistryError, match="lacks from_dict"):
        register_analyzer("plain", result=dict)

    class Other(Analyzer):
        def finish(self):
            return None

    with pytest.raises(AnalyzerRegistryError, match="already registered"):
        register_analyzer(TOY, result=MeanNorm)(Other)
    with pytest.raises(AnalyzerRegistryError, match="require 'collapse'"):
        unregister_analyzer("collapse")


def test_config_round_trips_and_every_setting_has_help():
    config = AnalysisConfig(layers=[0, 1], max_texts=None, probes=False, knowledge_mode="letter", seed=3)
    assert AnalysisConfig.from_json(config.to_json()) == config
    assert AnalysisConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert set(AnalysisConfig.help()) == set(config.to_dict())
    assert all(isinstance(text, str) and text for text in AnalysisConfig.help().values())


@pytest.mark.parametrize("settings, message", [
    ({"probe_folds": 1}, "probe_folds"), ({"knowledge_mode": "essay"}, "knowledge_mode"),
    ({"max_texts": 0}, "max_texts"), ({"layers": "0,1"}, "layers"), ({"max_txets": 4}, "unknown.*max_txets"),
])
def test_a_bad_setting_is_one_error_naming_it(settings, message):
    with pytest.raises(AnalysisConfigError, match=message):
        AnalysisConfig.from_dict(settings)


def test_settings_by_keyword_equal_the_same_config(make_tiny):
    base, unlearned = models(make_tiny)
    common = dict(control_vectors={"bio": U}, steering_coeffs={"bio": 20.0}, layer=LAYER, progress=False)
    by_keyword = analyze(base, unlearned, DATASETS, max_texts=3, layers=[1], probes=False, **common)
    by_config = analyze(base, unlearned, DATASETS, config=AnalysisConfig(max_texts=3, layers=[1], probes=False), **common)
    assert by_keyword.config == by_config.config
    assert by_keyword.collapse.to_dict() == by_config.collapse.to_dict()
    assert by_keyword.collapse.layers == [1] and by_keyword.collapse.datasets["bio"]["n_sequences"] == 3
    with pytest.raises(AnalysisConfigError, match="unknown"):
        analyze(base, unlearned, DATASETS, max_textz=3, **common)
