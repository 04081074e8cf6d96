"""`rmu-lens audit` and `rmu-lens layer-study` end to end on a tiny random model (the non-testbed paths).

The reference for every accuracy the commands write is :func:`rmu_lens.eval.evaluate` run on the
same models and questions separately (evaluate itself is checked against lm-eval elsewhere).
"""

from __future__ import annotations

import json

import pytest

import rmu_lens as rl
from rmu_lens.cli import main
from rmu_lens.eval import evaluate, load_questions
from rmu_lens.models import build_random_model, load_model, save_hf_model
from tests.helpers import texts

WORDS = ["river", "mountain", "harbour", "desert", "castle", "voyage", "glacier", "festival"]


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def question_rows(n: int, subject: str, offset: int = 0) -> list[dict]:
    return [{"question": f"Where is the {WORDS[(i + offset) % 8]} {i}?",
             "choices": [WORDS[(i + offset + k) % 8] for k in range(4)], "answer": i % 4, "subject": subject}
            for i in range(n)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit-cli")
    model, tokenizer = build_random_model("llama", n_layers=4, d_model=32, seed=1)
    base_dir = save_hf_model(load_model(model, tokenizer=tokenizer), root / "base")
    paths = {
        "base": str(base_dir),
        "forget_q": write_jsonl(root / "forget_q.jsonl", question_rows(8, "bio")),
        "retain_q": write_jsonl(root / "retain_q.jsonl", question_rows(16, "geo", offset=3)),
        "forget_c": write_jsonl(root / "forget_c.jsonl", [{"text": t} for t in texts("bio", 8, min_words=12)]),
        "retain_c": write_jsonl(root / "retain_c.jsonl", [{"text": t} for t in texts("retain", 8, min_words=12)]),
    }
    run_dir = root / "run"
    code = main(["unlearn", "--model", paths["base"], "--forget", paths["forget_c"], "--retain", paths["retain_c"],
                 "--out", str(run_dir), "--layer", "2", "--update-layers", "1,2", "--steering-coeff", "30",
                 "--alpha", "0.01", "--lr", "2e-1", "--batch-size", "2", "--max-batches", "4", "--no-progress"])
    assert code == 0
    paths["run"] = str(run_dir)
    return paths


def test_audit_on_a_local_model_writes_the_baseline_evaluate_measures(files, tmp_path):
    out = tmp_path / "audit"
    code = main(["audit", "--base", files["base"], "--unlearned", files["run"], "--forget-data", files["forget_q"],
                 "--retain-data", files["retain_q"], "--forget-corpus", files["forget_c"], "--retain-corpus", files["retain_c"],
                 "--finetune-n", "2", "--finetune-steps", "2", "--finetune-method", "layers", "--out", str(out), "--quiet"])
    assert code == 0
    saved = json.loads((out / "audit.json").read_text())
    forget, retain = load_questions(files["forget_q"]), load_questions(files["retain_q"])
    base, unlearned = load_model(files["base"]), load_model(f"{files['run']}/model")
    expected = {
        "base_forget_acc": evaluate(base, forget, progress=False).accuracy,
        "unlearned_forget_acc": evaluate(unlearned, forget, progress=False).accuracy,
        "base_retain_acc": evaluate(base, retain, progress=False).accuracy,
        "unlearned_retain_acc": evaluate(unlearned, retain, progress=False).accuracy,
    }
    # A strong run with almost no retain weight: both question sets change, so swapped models would show.
    assert expected["base_forget_acc"] != expected["unlearned_forget_acc"]
    assert expected["base_retain_acc"] != expected["unlearned_retain_acc"]
    for key, value in expected.items():
        assert saved["baseline"][key] == pytest.approx(value, abs=1e-12), key
    assert saved["baseline"]["n_forget"] == 8 and saved["baseline"]["n_retain"] == 16
    assert saved["meta"]["run"]["layer"] == 2
    for condition in saved["finetune"]["conditions"]:
        assert condition["recovery"]["base_acc"] == pytest.approx(expected["base_forget_acc"])
        assert condition["recovery"]["unlearned_acc"] == pytest.approx(expected["unlearned_forget_acc"])
    assert {p.name for p in (out / "figures").iterdir()} == {"ablation.png", "finetune.png", "probe.png"}


def test_layer_study_command_on_a_local_model_matches_a_direct_run(files, tmp_path, monkeypatch):
    from rmu_lens.rmu.config import PROFILES

    # The command's template for a local model is the demo profile; shortened here to keep the test fast.
    monkeypatch.setitem(PROFILES, "demo", {**PROFILES["demo"], "max_batches": 4, "max_length": 32, "retain_max_length": 32})
    out = tmp_path / "study"
    code = main(["layer-study", "--model", files["base"], "--forget-data", files["forget_q"], "--retain-data", files["retain_q"],
                 "--forget-corpus", files["forget_c"], "--retain-corpus", files["retain_c"], "--layers", "2",
                 "--modes", "plain", "--steering-coeff", "25", "--no-ablation", "--out", str(out), "--quiet"])
    assert code == 0
    saved = json.loads((out / "layer_study.json").read_text())
    (point,) = saved["results"]
    assert (point["layer"], point["mode"], point["update_layers"], point["steering_coeff"]) == (2, "plain", [0, 1, 2], 25.0)
    # The command's documented template: the demo profile, with the layer, update layers and c of the point.
    config = rl.RMUConfig.profile("demo", layer=2, update_layers=[0, 1, 2], steering_coeff=25.0, adaptive_beta=None)
    model = load_model(files["base"])
    forget, retain = load_questions(files["forget_q"]), load_questions(files["retain_q"])
    assert saved["base"]["forget_acc"] == evaluate(model, forget, progress=False).accuracy
    rl.unlearn(model, rl.load_corpus(files["forget_c"]), rl.load_corpus(files["retain_c"]), config, progress=False)
    assert point["forget_acc"] == evaluate(model, forget, progress=False).accuracy
    assert point["retain_acc"] == evaluate(model, retain, progress=False).accuracy
    assert (out / "figures" / "layer_study.png").stat().st_size > 0
