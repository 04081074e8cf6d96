"""`rmu-lens sweep`: a bad space is one line and exit code 2 before any model loads; a small sweep on a
saved tiny model writes the outputs, and a front config trains the same model with `rmu-lens unlearn`."""

from __future__ import annotations

import json

from rmu_lens.cli import EXIT_INVALID, main
from tests.helpers import texts
from tests.sweep_setup import QUESTION_LIST, tiny_config, tiny_model


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_bad_space_file_is_one_line_before_loading(tmp_path, capsys):
    (tmp_path / "space.yaml").write_text("learning_rate: {low: 1e-4, high: 1e-2}\n")
    code = main(["sweep", "--model", str(tmp_path / "no-such-model"), "--space", str(tmp_path / "space.yaml"),
                 "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_INVALID and len(err) == 1 and "'learning_rate'" in err[0] and "not an RMUConfig field" in err[0]
    assert not (tmp_path / "s").exists()


def test_sweep_command_writes_outputs_and_its_front_configs_train(tmp_path, capsys):
    from rmu_lens.models import save_hf_model

    model_dir = save_hf_model(tiny_model(), tmp_path / "tiny")
    forget = write_jsonl(tmp_path / "forget.jsonl", [{"text": t} for t in texts("bio", 8, min_words=12)])
    retain = write_jsonl(tmp_path / "retain.jsonl", [{"text": t} for t in texts("retain", 8, min_words=12)])
    questions = write_jsonl(tmp_path / "q.jsonl", [{"id": q.id, "question": q.question, "choices": q.choices,
                                                    "answer": q.answer} for q in QUESTION_LIST])
    config = tmp_path / "template.json"
    config.write_text(tiny_config().to_json())
    (tmp_path / "space.yaml").write_text("lr: {low: 1e-3, high: 3e-2, log: true}\nlayer: {choices: [1, 2]}\n")
    out = tmp_path / "s"
    code = main(["sweep", "--model", str(model_dir), "--space", str(tmp_path / "space.yaml"), "--trials", "2",
                 "--out", str(out), "--config", str(config), "--forget", str(forget), "--retain", str(retain),
                 "--forget-questions", str(questions), "--retain-questions", str(questions), "--adjacent-questions",
                 "--no-prune", "--no-progress", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert "base: forget" in capsys.readouterr().out
    record = json.loads((out / "trials.json").read_text())
    assert [t["state"] for t in record["trials"]] == ["COMPLETE", "COMPLETE"]
    front = sorted((out / "front").glob("trial_*.json"))
    assert front and (out / "pareto.png").exists() and (out / "trials.csv").exists()
    code = main(["unlearn", "--model", str(model_dir), "--config", str(front[0]), "--forget", str(forget),
                 "--retain", str(retain), "--out", str(tmp_path / "run"), "--no-progress", "--device", "cpu"])
    assert code == 0
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["config"] == json.loads(front[0].read_text())["config"]
