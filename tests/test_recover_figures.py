"""The figures of the estimate (Recovery.figures) and the report's recovery section, on the planted pair.

The planted pair of tests/test_recover.py, with one more known edit: the final norm is scaled too, so
exactly four tensors differ (layer 1's gate, up and down projections, and ``model.norm.weight``,
outside the blocks). The plotted curves are read back from the figure's artists (their ``gid``) and
compared with a plain HF forward in float64 and a plain re-implementation of the rule; the weight
picture with a float64 recomputation of every perturbed tensor's relative change.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from rmu_lens.analysis.activations import statistics_batch
from rmu_lens.analysis.recover import Recovery, recover
from rmu_lens.models import load_model
from rmu_lens.results import Result
from tests.helpers import ReportHTML
from tests.test_recover import FORGET, LAYER, RETAIN, _planted_pair, _texts

CHANGED = {(f"mlp.{m}", LAYER) for m in ("gate_proj", "up_proj", "down_proj")} | {("model.norm", None)}


@pytest.fixture(scope="module")
def planted():
    base, new, tok, u = _planted_pair()
    with torch.no_grad():
        new.model.norm.weight.mul_(1.5)  # outside the blocks: no hook_resid_post sees it
    references = copy.deepcopy(base), copy.deepcopy(new)  # plain HF copies, never bridged
    est = recover(load_model(base, tokenizer=tok), load_model(new, tokenizer=tok), {"topic": FORGET}, RETAIN, progress=False)
    return est, references, tok


def _hf_tokens(hf_model, tok, texts):
    """Per layer, the statistics tokens (real, minus position 0) of each decoder layer's output in a plain HF
    forward, float64 (forward hooks: ``hidden_states[-1]`` would be after the final norm)."""
    batch = statistics_batch(texts, tok, 32, 128, "texts")
    outputs = []

    def keep(_module, _inputs, output):
        outputs.append(output[0] if isinstance(output, tuple) else output)

    handles = [layer.register_forward_hook(keep) for layer in hf_model.model.layers]
    try:
        with torch.no_grad():
            hf_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    finally:
        for handle in handles:
            handle.remove()
    mask = batch.attention_mask.bool().clone()
    mask[:, 0] = False
    return [h.to(torch.float64)[mask] for h in outputs]


def _change(b, n):
    return float((n - b).norm(dim=1).mean() / b.norm(dim=1).mean())


def _concentration(h):
    x = h.numpy()
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    v = vt[0] if (x @ vt[0]).mean() > 0 else -vt[0]
    return float(np.mean(x @ v / np.linalg.norm(x, axis=1))), float(s[0] ** 2 / (s ** 2).sum())


def _by_gid(ax, gid):
    return [artist for artist in ax.get_children() if artist.get_gid() == gid]


def _line(ax, gid):
    (line,) = _by_gid(ax, gid)
    return np.asarray(line.get_xdata(), dtype=float), np.asarray(line.get_ydata(), dtype=float)


def _rule_layers(curves, layers, rule):
    """The collapsed-layer rule written out again from the curves."""
    return [k for i, k in enumerate(layers)
            if curves["forget_change"][i] >= rule.min_change
            and curves["forget_change"][i] >= rule.selectivity * curves["retain_change"][i]
            and curves["mean_cos"][i] >= rule.min_concentration
            and 1 - curves["share"][i] <= rule.max_residual_ratio * (1 - curves["base_share"][i])]


def test_curves_figure_draws_the_measured_curves_the_rule_and_l_hat(planted):
    est, (base_hf, new_hf), tok = planted
    topic = est.topics["topic"]
    assert isinstance(est, Result) and set(est.figures()) == {"recovery_curves", "weight_diff"}
    change, direction, residual = est.figures()["recovery_curves"].axes
    layers = np.asarray(est.layers, dtype=float)
    # the curves against a plain HF forward of both models, in float64
    fb, fu = _hf_tokens(base_hf, tok, FORGET), _hf_tokens(new_hf, tok, FORGET)
    rb, ru = _hf_tokens(base_hf, tok, RETAIN), _hf_tokens(new_hf, tok, RETAIN)
    reference = {"forget_change": [_change(b, n) for b, n in zip(fb, fu)],
                 "retain_change": [_change(b, n) for b, n in zip(rb, ru)],
                 "mean_cos": [_concentration(h)[0] for h in fu], "base_mean_cos": [_concentration(h)[0] for h in fb]}
    for ax, gid in ((change, "forget_change"), (change, "retain_change"), (direction, "mean_cos"), (direction, "base_mean_cos")):
        x, y = _line(ax, gid)
        np.testing.assert_array_equal(x, layers)
        np.testing.assert_array_equal(y, np.asarray(topic.curves[gid]), err_msg=gid)
        np.testing.assert_allclose(y, reference[gid], rtol=1e-4, atol=1e-6, err_msg=gid)
    _, residual_y = _line(residual, "residual")
    np.testing.assert_allclose(residual_y, [1 - _concentration(h)[1] for h in fu], rtol=1e-4, atol=1e-6)
    # the rule's thresholds
    rule = est.rule
    assert list(_line(change, "min_change")[1]) == [rule.min_change] * 2
    np.testing.assert_allclose(_line(change, "selectivity")[1], rule.selectivity * np.asarray(reference["retain_change"]),
                               rtol=1e-4, atol=1e-6)
    assert list(_line(direction, "min_concentration")[1]) == [rule.min_concentration] * 2
    np.testing.assert_allclose(_line(residual, "max_residual")[1],
                               rule.max_residual_ratio * (1 - np.asarray(topic.curves["base_share"])))
    # shaded layers = the rule written out again; l̂ marked in every panel, the star on the forget curve
    expected = _rule_layers(topic.curves, est.layers, rule)
    assert LAYER in expected and 0 not in expected
    for ax in (change, direction, residual):
        spans = sorted(round(float(np.mean(p.get_x() + np.array([0, p.get_width()]))), 6) for p in _by_gid(ax, "collapsed"))
        assert spans == [float(k) for k in expected]
        assert [list(line.get_xdata()) for line in _by_gid(ax, "layer_hat")] == [[LAYER, LAYER]]
    x, y = _line(change, "layer_hat_marker")
    assert list(x) == [LAYER] and y[0] == topic.curves["forget_change"][est.layers.index(LAYER)]
    assert f"collapsed at l̂ = {LAYER}" in change.get_figure(root=False).get_suptitle() and not _by_gid(change, "verdict")


def test_weight_figure_shows_exactly_the_perturbed_tensors(planted):
    est, (base_hf, new_hf), _ = planted
    figure = est.figures()["weight_diff"]
    bars, heat = figure.axes[:2]
    (image,) = _by_gid(heat, "relative_change")
    modules = [t.get_text() for t in heat.get_yticklabels()]
    blocks = [t.get_text() for t in heat.get_xticklabels()]
    assert blocks == ["0", "1", "2", "outside"]
    data = image.get_array()
    a, b = base_hf.state_dict(), new_hf.state_dict()
    for i, module in enumerate(modules):
        for j, block in enumerate(blocks):
            key = (module, None if block == "outside" else int(block))
            if key not in CHANGED:
                assert data.mask[i, j], f"{key} drawn as changed"
                continue
            name = f"{module}.weight" if block == "outside" else f"model.layers.{block}.{module}.weight"
            delta = b[name].double() - a[name].double()
            assert not data.mask[i, j]
            assert data[i, j] == pytest.approx(float(delta.norm() / a[name].double().norm()), rel=1e-12)
    assert [p.get_height() for p in _by_gid(bars, "changed_per_block")] == [0, 3, 0, 1]


def test_no_collapse_and_identical_models_say_so(planted):
    _, (base_hf, _), tok = planted
    noisy_hf = copy.deepcopy(base_hf)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in noisy_hf.parameters():
            p.add_(0.5 * (float(p.std()) or 0.2) * torch.randn(p.shape, generator=gen))
    base = load_model(copy.deepcopy(base_hf), tokenizer=tok)
    noisy = recover(base, load_model(noisy_hf, tokenizer=tok), {"topic": FORGET}, RETAIN, progress=False)
    change = noisy.figures()["recovery_curves"].axes[0]
    assert not _by_gid(change, "layer_hat") and not _by_gid(change, "layer_hat_marker")
    assert [t.get_text() for t in _by_gid(change, "verdict")] == ["not collapsed: no û"]
    assert "not collapsed" in change.get_figure(root=False).get_suptitle()
    same = recover(base, load_model(copy.deepcopy(base_hf), tokenizer=tok), {"topic": FORGET}, RETAIN, progress=False)
    figures = same.figures()
    assert figures["recovery_curves"].get_suptitle().startswith("Nothing changed")
    assert [t.get_text() for t in _by_gid(figures["recovery_curves"].axes[0], "verdict")] == ["nothing changed"]
    weights_text = [t.get_text() for t in _by_gid(figures["weight_diff"].axes[0], "verdict")]
    assert weights_text == [f"nothing changed: all {len(same.weights.tensors)} tensors are identical"]


def _figure_data(recovery):
    figures = recovery.figures()
    lines = {(i, line.get_gid()): list(line.get_ydata()) for i, ax in enumerate(figures["recovery_curves"].axes)
             for line in ax.get_lines()}
    image = figures["weight_diff"].axes[1].get_images()[0].get_array()
    return lines, image.filled(np.nan).tolist()


def test_round_trips_keep_the_figures(planted, tmp_path):
    est = planted[0]
    lines, image = _figure_data(est)
    est.save(tmp_path)
    for again in (Recovery.from_dict(est.to_dict()), Recovery.load(tmp_path), Recovery.load(tmp_path / "recovery.json")):
        again_lines, again_image = _figure_data(again)
        assert again_lines == lines
        np.testing.assert_array_equal(np.asarray(again_image), np.asarray(image))
        assert again.topics["topic"].collapsed_layers == est.topics["topic"].collapsed_layers


def test_report_has_a_recovery_section_with_the_figures(planted):
    from rmu_lens.report import build_report

    est = planted[0]
    report = build_report(title="t", recovery=est)
    page = ReportHTML(report.html())
    assert {"recovery_curves", "weight_diff"} <= set(page.figures)
    assert page.cells["recovery.topic"].startswith(f"collapsed at layer {LAYER}")
    assert page.cells["recovery.weights"].startswith("4 of ")
    assert [f.name for f in report.all_figures()][:2] == ["recovery_curves", "weight_diff"]


def test_analyze_command_on_a_run_directory_shows_the_estimate_beside_the_run(tmp_path, make_tiny):
    import rmu_lens as rl
    from rmu_lens.pipeline import run_analysis

    config = rl.RMUConfig(layer=2, steering_coeff=20.0, alpha=5.0, lr=3e-3, batch_size=4, max_batches=8, max_length=24,
                          retain_max_length=24, checkpoint_every=0)
    forget, retain = _texts("abcdefghijklm", 8, 5), _texts("nopqrstuvwxyz", 8, 6)
    run = rl.unlearn(make_tiny(n_layers=3, seed=2), {"topic": forget}, retain, config, out=tmp_path / "run", progress=False)
    datasets = {"topic": (forget, "forget"), "retain": (retain, "retain")}
    result = run_analysis(make_tiny(n_layers=3, seed=2), tmp_path / "run", tmp_path / "out", datasets=datasets, max_texts=8,
                          progress=False, log=lambda _: None, load_options={"device": "cpu"})
    page = ReportHTML((result.out / "report.html").read_text(encoding="utf-8"))
    assert {"recovery_curves", "weight_diff"} <= set(page.figures)
    assert (result.out / "figures" / "recovery_curves.png").is_file()
    recovery = Recovery.load(result.out)
    check = recovery.check(run.control_vectors, run.steering_coeffs, run.layer)["topic"]
    line = page.cells["recovery.estimate vs run: topic"]
    if check["cos_u"] is None:
        assert line == f"not collapsed (l {run.layer})"
    else:
        assert line.startswith(f"l̂ {check['layer_hat']} (l {run.layer}), cos(û, u) {check['cos_u']:.4f}")
