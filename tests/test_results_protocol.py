"""Every result type follows one protocol: save -> load -> the same to_dict, standard JSON, figures by name."""

from __future__ import annotations

import json
import math

import pytest
import torch
from matplotlib.figure import Figure

from rmu_lens.analysis import Analysis, analyze
from rmu_lens.analysis.damage import OverlapSweep
from rmu_lens.analysis.probes import ProbeSet
from rmu_lens.audit.layers import LayerPoint, LayerStudy
from rmu_lens.eval import Question
from rmu_lens.eval.compare import Comparison, SubjectChange
from rmu_lens.results import JSONResult, Result, ResultFormatError, ResultNotFoundError, finite_json
from tests.helpers import edited_pair, texts
from tests.test_audit_result import constructed as constructed_audit
from tests.test_audit_result import rec


@pytest.fixture(scope="module")
def analysis() -> Analysis:
    """A tiny analysis with every built-in result: collapse, probes (domain and knowledge), damage."""

    base, unlearned = edited_pair()
    datasets = {"bio": (texts("bio", 6), "forget"), "retain": (texts("retain", 6), "retain"),
                "cyber": (texts("cyber", 6), "adjacent")}
    questions = [Question(f"What colour is thing {i}?", ["red", "blue", "green", "black"], i % 4, "bio", "t", f"q{i}")
                 for i in range(8)]
    comparison = Comparison("acc", [SubjectChange("bio", "forget", 40, 0.9, 0.3, -0.6, -0.7, -0.5),
                                    SubjectChange("cyber", "collateral", 40, 0.9, 0.8, -0.1, -0.2, 0.0)], [])
    u = torch.rand(32, generator=torch.Generator().manual_seed(0))
    return analyze(base, unlearned, datasets, control_vectors={"bio": u}, steering_coeffs={"bio": 20.0}, layer=1,
                   questions=questions, comparison=comparison, probe_folds=2, progress=False)


def layer_study() -> LayerStudy:
    points = [LayerPoint(1, "plain", [0, 1], 20.0, 0.3, 0.9, rec(0.4, 0.3, 0.5), 19.5, 0.99, 1.0),
              LayerPoint(1, "adaptive", [0, 1], 31.0, 0.25, 0.88, None, 30.0, float("nan"), 1.0),
              LayerPoint(2, "plain", [0, 1, 2], 20.0, 0.8, 0.9, rec(0.1, 0.0, 0.2), 12.0, 0.98, 1.0)]
    return LayerStudy(layers=[1, 2], modes=["plain", "adaptive"], base={"forget_acc": 0.9, "retain_acc": 0.92},
                      results=points, config={"lr": 1e-3}, chance=0.25, meta={"adaptive_beta": 5.0})


def overlap_sweep() -> OverlapSweep:
    rows = [{"overlap": o, "forget_drop": 0.6, "adjacent_drop": d, "adjacent_drop_ci": [d - 0.05, d + 0.05],
             "adjacent_shift_at_layer": 0.1 + d, "distant_drop": 0.01} for o, d in ((0.0, 0.05), (0.5, 0.2), (1.0, 0.4))]
    return OverlapSweep(rows=rows, meta={"seed": 0})


RESULTS = {
    "collapse": lambda a: a.collapse,
    "probe": lambda a: a.probes["domain"],
    "probe_set": lambda a: a.results["probes"],
    "damage": lambda a: a.damage,
    "analysis": lambda a: a,
    "audit": lambda a: constructed_audit(),
    "layer_study": lambda a: layer_study(),
    "overlap_sweep": lambda a: overlap_sweep(),
}
FIGURES = {
    "collapse": ["norms", "cos_u", "pca", "dispersion"],
    "probe": ["probe_domain"],
    "probe_set": ["probe_domain", "probe_knowledge"],
    "damage": ["damage"],
    "analysis": ["norms", "cos_u", "pca", "dispersion", "probe_domain", "probe_knowledge", "damage"],
    "audit": ["ablation", "finetune", "probe"],
    "layer_study": ["layer_study"],
    "overlap_sweep": ["overlap_sweep"],
}


def standard(data):
    """``data`` as standard JSON sees it (tuples as lists, NaN tagged), so NaN compares equal to NaN."""
    return json.loads(json.dumps(finite_json(data), allow_nan=False))


@pytest.mark.parametrize("kind", list(RESULTS))
def test_save_then_load_gives_the_same_dict_and_figures_by_name(kind, analysis, tmp_path):
    result = RESULTS[kind](analysis)
    assert isinstance(result, Result) and isinstance(result, JSONResult)
    path = result.save(tmp_path / kind)
    written = path / type(result).FILE_NAME if type(result).FILE_NAME else path
    # Standard JSON: a bare NaN would make this raise.
    json.loads(written.read_text(encoding="utf-8"), parse_constant=lambda name: pytest.fail(f"bare {name} in {written}"))
    loaded = type(result).load(path)
    assert type(loaded) is type(result)
    assert standard(loaded.to_dict()) == standard(result.to_dict())
    assert type(result).from_dict(result.to_dict()).to_dict().keys() == result.to_dict().keys()
    figures = loaded.figures()
    assert list(figures) == FIGURES[kind]
    assert all(isinstance(f, Figure) for f in figures.values())


def test_nan_survives_the_round_trip(tmp_path):
    study = layer_study()
    study.save(tmp_path / "study.json")
    assert math.isnan(LayerStudy.load(tmp_path / "study.json").results[1].final_retain_cos)


@pytest.mark.parametrize("cls", [Analysis, ProbeSet, OverlapSweep, LayerStudy])
def test_a_file_of_another_kind_is_one_error_naming_the_file(cls, analysis, tmp_path):
    path = analysis.collapse.save(tmp_path / "collapse.json")
    with pytest.raises(ResultFormatError, match=r"collapse\.json: not .*rmu_lens\.collapse/1"):
        cls.load(path)
    (tmp_path / "broken.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ResultFormatError, match="broken.json: not valid JSON"):
        cls.load(tmp_path / "broken.json")
    with pytest.raises(ResultNotFoundError):
        cls.load(tmp_path / "missing")


def test_an_analysis_file_of_the_first_format_still_loads(analysis, tmp_path):
    old = {"format": "rmu_lens.analysis/1", "meta": analysis.meta, "collapse": analysis.collapse.to_dict(),
           "probes": {name: p.to_dict() for name, p in analysis.probes.items()}, "damage": analysis.damage.to_dict()}
    (tmp_path / "analysis.json").write_text(json.dumps(old), encoding="utf-8")
    loaded = Analysis.load(tmp_path)
    assert list(loaded.results) == ["collapse", "probes", "damage"]
    assert standard(loaded.collapse.to_dict()) == standard(analysis.collapse.to_dict())
    assert set(loaded.probes) == {"domain", "knowledge"}
