"""rmu_lens.sweep on a tiny random model: restore between trials, each trial is the run its config
describes, the Pareto front against a plain dominance check, outputs, pruning and errors."""

from __future__ import annotations

import csv
import json
import random

import optuna
import pytest
import torch

import rmu_lens as rl
from rmu_lens.sweep import PruneRule, SweepSpaceError, pareto_front
from rmu_lens.sweep.objectives import chance_level
from tests.helpers import snapshot
from tests.sweep_setup import QUESTION_LIST, QUESTIONS, SPACE, sweep_inputs, tiny_config, tiny_model


class StartSnapshots:
    """A trainer callback keeping the model's full state as each trial starts training."""

    def __init__(self, model):
        self.model, self.states = model, []

    def on_train_start(self, trainer):
        self.states.append(snapshot(self.model))

    def on_step(self, record):
        pass


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One 5-trial sweep with its outputs, shared by the tests that read them."""
    out = tmp_path_factory.mktemp("sweep") / "s1"
    model, forget, retain, config = sweep_inputs()
    original = snapshot(model)
    starts = StartSnapshots(model)
    result = rl.sweep(model, forget, retain, QUESTIONS, SPACE, 5, out, config=config, prune=PruneRule(enabled=False),
                      trainer_callbacks=[starts], progress=False)
    return result, out, model, original, starts


def test_every_trial_starts_from_the_original_weights_and_the_model_ends_restored(finished):
    result, _, model, original, starts = finished
    assert len(starts.states) == 5
    for state in [*starts.states, snapshot(model)]:
        assert all(torch.equal(state[name], original[name]) for name in original)  # bit-equal
    changed = {r["config"]["layer"] for r in result.complete()}
    assert changed == {1, 2} or len(changed) == 1  # trials trained different tensors, all restored


def test_each_trial_is_the_run_its_config_describes(finished):
    # Reference: a fresh model trained with the trial's stored config (no shared cache), then evaluated.
    from rmu_lens.eval import evaluate

    result = finished[0]
    _, forget, retain, _ = sweep_inputs()
    for row in result.complete()[:3]:
        model = tiny_model()
        rl.unlearn(model, forget, retain, rl.RMUConfig.from_dict(row["config"]), progress=False)
        assert row["forget_acc"] == evaluate(model, QUESTIONS["forget"], progress=False).accuracy
        assert row["retain_acc"] == evaluate(model, QUESTIONS["retain"], progress=False).accuracy
        assert row["adjacent_acc"] == evaluate(model, QUESTIONS["adjacent"], progress=False).accuracy
        assert row["forget_excess"] == max(row["forget_acc"] - 0.25, 0.0)
    base = evaluate(tiny_model(), QUESTIONS["forget"], progress=False).accuracy
    assert result.base["forget_acc"] == base


def by_hand_front(points):
    """Minimize the first value, maximize the second: keep points nobody beats."""
    keep = []
    for i, (f, r) in enumerate(points):
        beaten = False
        for j, (g, s) in enumerate(points):
            if j != i and g <= f and s >= r and (g < f or s > r):
                beaten = True
        if not beaten:
            keep.append(i)
    return keep


def test_pareto_front_matches_a_plain_dominance_check():
    rng = random.Random(0)
    for _ in range(200):
        points = [(rng.choice([0.0, 0.05, 0.1, 0.2]), rng.choice([0.3, 0.5, 0.7])) for _ in range(rng.randint(1, 9))]
        assert pareto_front(points) == by_hand_front(points)


def test_the_sweeps_front_is_the_non_dominated_trials_and_optunas_best(finished):
    result = finished[0]
    done = result.complete()
    expected = [done[i]["number"] for i in by_hand_front([(r["forget_excess"], r["retain_acc"]) for r in done])]
    assert [r["number"] for r in result.front()] == expected
    assert sorted(t.number for t in result.study.best_trials) == sorted(expected)


def test_outputs_and_front_configs_load_with_rmuconfig_and_the_cli(finished, tmp_path):
    from rmu_lens.cli import build_config, build_parser

    result, out, *_ = finished
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [int(r["number"]) for r in rows] == list(range(5)) and all(r["state"] == "COMPLETE" for r in rows)
    assert {"param_lr", "param_layer", "param_update_depth"} <= set(rows[0])
    record = json.loads((out / "trials.json").read_text())
    assert record["front"] == [r["number"] for r in result.front()] and record["chance"] == 0.25
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    files = sorted((out / "front").glob("trial_*.json"))
    assert [int(f.stem.split("_")[1]) for f in files] == record["front"]
    for path in files:
        stored = next(r for r in result.rows() if r["number"] == int(path.stem.split("_")[1]))["config"]
        assert rl.RMUConfig.from_json(json.dumps(json.loads(path.read_text())["config"])).to_dict() == stored
        args = build_parser().parse_args(["unlearn", "--config", str(path), "--forget", "a", "--retain", "b", "--out", "o"])
        assert build_config(args).to_dict() == stored
    html = (out / "sweep.html").read_text()
    assert "data:image/png;base64," in html and "<script" not in html
    # the standard storage opens as any Optuna study (what optuna-dashboard reads)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "study.journal")))
    loaded = optuna.load_study(study_name="rmu-sweep", storage=storage)
    assert len(loaded.trials) == 5 and loaded.metric_names == ["forget_excess", "retain_acc"]


def test_html_section_escapes_every_text_it_shows():
    # A study built by hand (no model): a categorical value holding markup must come out escaped.
    from rmu_lens.sweep import SweepResult
    from rmu_lens.sweep.objectives import DIRECTIONS

    study = optuna.create_study(directions=list(DIRECTIONS))
    study.set_user_attr("sweep", {"space": {"hook_point": {"choices": ["<b>x</b>"]}}})
    study.add_trial(optuna.trial.create_trial(
        params={"hook_point": "<b>x</b>"}, distributions={"hook_point": optuna.distributions.CategoricalDistribution(["<b>x</b>"])},
        values=[0.1, 0.5], user_attrs={"forget_acc": 0.35, "retain_acc": 0.5, "adjacent_acc": None}))
    html = SweepResult(study, {"forget_acc": 0.6, "retain_acc": 0.55}, 0.25).html()
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
    assert "data:image/png;base64," in html


def test_a_resumed_sweep_in_the_same_directory_runs_only_the_missing_trials(tmp_path):
    model, forget, retain, config = sweep_inputs()
    out = tmp_path / "s"
    first = rl.sweep(model, forget, retain, QUESTIONS, SPACE, 2, out, config=config, prune=PruneRule(enabled=False), progress=False)
    done = {t.number: t.datetime_complete for t in first.study.trials}
    second = rl.sweep(model, forget, retain, QUESTIONS, SPACE, 3, out, config=config, prune=PruneRule(enabled=False), progress=False)
    trials = second.study.trials
    assert len(trials) == 3 and all(t.state.name == "COMPLETE" for t in trials)
    assert {t.number: t.datetime_complete for t in trials[:2]} == done  # the first two were not run again
    # A resumed sampler must not replay the first run's suggestions (a fixed-seed TPE would repeat trial 0's lr).
    assert len({t.params["lr"] for t in trials}) == 3
    with pytest.raises(ValueError, match="another space"):
        rl.sweep(model, forget, retain, QUESTIONS, {"lr": {"low": 1e-3, "high": 1e-2}}, 3, out, config=config, progress=False)


def test_pruning_rule_prunes_on_the_checkpoint_signals_of_the_run(tmp_path):
    # min_retain_cos above 1 prunes at the first checkpoint; the recorded signal is the mean retain
    # cosine of the steps so far in a reference run of the same config.
    model, forget, retain, config = sweep_inputs()
    original = snapshot(model)
    config = tiny_config(max_batches=8)
    result = rl.sweep(model, forget, retain, QUESTIONS, {"lr": {"choices": [1e-2]}}, 1, None, config=config,
                      prune=PruneRule(min_retain_cos=1.01), progress=False)
    trial = result.study.trials[0]
    assert trial.state.name == "PRUNED" and trial.user_attrs["pruned_at"] == 2 and "retain_cos" in trial.user_attrs["pruned_because"]
    assert all(torch.equal(v, original[k]) for k, v in snapshot(model).items())
    reference = rl.unlearn(tiny_model(), forget, retain, tiny_config(max_batches=8, lr=1e-2), progress=False)
    mean_cos = sum(h["retain_cos"] for h in reference.history[:2]) / 2
    assert trial.user_attrs["checkpoints"][0]["retain_cos"] == pytest.approx(mean_cos, rel=1e-6)
    assert result.front() == []


def test_no_forget_progress_prunes_after_half_the_steps():
    from rmu_lens.sweep.pruning import PrunedBySignal, SignalWatcher

    watcher = SignalWatcher(PruneRule(max_forget_ratio=0.95), n_steps=8)
    losses = [10, 20, 9.9, 19.9, 9.8, 19.9, 9.9, 20]  # two topics, neither moves
    with pytest.raises(PrunedBySignal, match="at step 4") as error:
        for step, loss in enumerate(losses):
            watcher.on_step({"step": step, "topic": "ab"[step % 2], "forget_loss": loss, "retain_cos": 0.99})
    assert error.value.step == 4
    ratio = (9.9 / 10 + 19.9 / 20) / 2
    assert watcher.checkpoints[-1]["forget_ratio"] == pytest.approx(ratio)
    moving = SignalWatcher(PruneRule(), n_steps=8)
    for step, loss in enumerate([10, 20, 5, 10, 2, 4, 1, 2]):
        moving.on_step({"step": step, "topic": "ab"[step % 2], "forget_loss": loss, "retain_cos": 0.99})
    assert [c["step"] for c in moving.checkpoints] == [2, 4, 6]


def test_bad_inputs_fail_before_any_trial(tmp_path):
    model, forget, retain, config = sweep_inputs()
    with pytest.raises(SweepSpaceError, match="'layer'"):
        rl.sweep(model, forget, retain, QUESTIONS, {"layer": {"choices": [7]}}, 2, tmp_path / "a", config=config)
    with pytest.raises(ValueError, match="alpha"):
        rl.sweep(model, forget, retain, QUESTIONS, {"alpha": {"low": -1.0, "high": 1.0}}, 2, tmp_path / "b", config=config)
    with pytest.raises(ValueError, match="missing \\['retain'\\]"):
        rl.sweep(model, forget, retain, {"forget": QUESTION_LIST}, SPACE, 2, tmp_path / "c", config=config)
    with pytest.raises(ValueError, match="n_trials"):
        rl.sweep(model, forget, retain, QUESTIONS, SPACE, 0, tmp_path / "d", config=config)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_chance_is_the_mean_of_one_over_the_choices():
    questions = [QUESTION_LIST[0], rl.eval.Question("q", ["a", "b"], 0, None, "t", "x")]
    assert chance_level(questions) == pytest.approx((0.25 + 0.5) / 2)


def test_an_rdb_url_holds_the_study_with_optunas_heartbeat(tmp_path):
    model, forget, retain, config = sweep_inputs()
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    result = rl.sweep(model, forget, retain, QUESTIONS, SPACE, 1, tmp_path / "s", url, config=config,
                      prune=PruneRule(enabled=False), progress=False)
    assert not (tmp_path / "s" / "study.journal").exists()
    study = optuna.load_study(study_name="rmu-sweep", storage=url)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] and study.user_attrs["base"] == result.base
    assert result.study._storage.get_heartbeat_interval() == 30  # so fail_stale_trials finds dead workers elsewhere



def test_a_folder_that_holds_no_sweep_is_refused_and_left_untouched(tmp_path):
    model, forget, retain, config = sweep_inputs()
    (tmp_path / "trials.csv").write_text("a user's own table\n", encoding="utf-8")
    with pytest.raises(FileExistsError, match="holds no sweep"):
        rl.sweep(model, forget, retain, QUESTIONS, SPACE, 1, tmp_path, config=config, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trials.csv"]
    assert (tmp_path / "trials.csv").read_text(encoding="utf-8") == "a user's own table\n"


def test_front_figure_gives_a_choice_axis_one_colour_per_choice_and_a_range_a_colour_bar(finished):
    from rmu_lens.sweep.outputs import front_figure

    result = finished[0]
    done = result.complete()
    figure = front_figure(result, color_by="layer")            # layer: choices -> legend entries, no colour bar
    ax = figure.axes[0]
    assert len(figure.axes) == 1
    layers = [c for c in SPACE["layer"]["choices"] if any(r["params"]["layer"] == c for r in done)]
    groups = {t.get_label(): t.get_offsets().tolist() for t in ax.collections if t.get_label().startswith("layer=")}
    assert list(groups) == [f"layer={c}" for c in layers]
    for c in layers:
        expected = sorted([r["forget_acc"], r["retain_acc"]] for r in done if r["params"]["layer"] == c)
        assert sorted(groups[f"layer={c}"]) == [pytest.approx(point) for point in expected]
    ranged = front_figure(result, color_by="lr")                # lr: a range -> one colour bar
    assert len(ranged.axes) == 2 and ranged.axes[1].get_ylabel() == "lr"


def test_a_finished_sweep_reads_back_from_its_directory_without_a_model(finished, tmp_path):
    from rmu_lens.sweep import SweepResult
    from rmu_lens.sweep.storage import SweepStorageError

    result, out, *_ = finished
    loaded = SweepResult.load(out)
    assert loaded.rows() == result.rows() and loaded.base == result.base and loaded.chance == result.chance
    assert [r["number"] for r in loaded.front()] == json.loads((out / "trials.json").read_text())["front"]
    with pytest.raises(SweepStorageError, match="holds no sweep"):
        SweepResult.load(tmp_path)
    with pytest.raises(SweepStorageError, match="no study named 'other'"):
        SweepResult.load(out, study_name="other")
