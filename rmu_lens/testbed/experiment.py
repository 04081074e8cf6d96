"""The testbed's measurement: accuracy per domain before and after RMU, and the adjacent domain's drop.

The adjacent domain is also split by attribute type — the types it shares with the forget domain
and its own — because that split is what the overlap knob moves.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rmu_lens.testbed.testbed import Testbed, testbed_rmu_config

if TYPE_CHECKING:
    from rmu_lens.eval import EvalResult
    from rmu_lens.rmu.config import RMUConfig

CHANCE = 0.25


def accuracy_groups(testbed: Testbed, result: EvalResult) -> dict[str, dict[str, float | int]]:
    """Accuracy per domain, plus the adjacent domain's shared and own attribute types, from one result."""
    outcomes = result.outcomes()
    shared = set(testbed.world.shared_attributes())
    groups: dict[str, list[bool]] = {}
    for question in testbed.question_dicts():
        if question["id"] not in outcomes:
            continue
        correct = outcomes[question["id"]]
        groups.setdefault(question["subject"], []).append(correct)
        if question["subject"] == testbed.adjacent_domain:
            kind = "shared" if question["attribute"] in shared else "own"
            groups.setdefault(f"{question['subject']} ({kind} attributes)", []).append(correct)
    return {name: {"acc": sum(values) / len(values), "n": len(values)} for name, values in groups.items()}


def measure(
    testbed: Testbed, config: RMUConfig | None = None, *, progress: bool = True, load_options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Evaluate the testbed model, run RMU on it (``testbed_rmu_config()`` by default), evaluate again.

    ``load_options`` (device, dtype, device_map ...) go to :func:`rmu_lens.load_model`.

    Returns base and after accuracies per group (see :func:`accuracy_groups`), each domain's role,
    the adjacent domain's drop in points, and RMU's steering coefficient and wall time.
    """
    from rmu_lens.eval import evaluate
    from rmu_lens.rmu import unlearn

    config = config or testbed_rmu_config()
    questions = testbed.questions()
    bridge = testbed.bridge(**(load_options or {}))
    base = evaluate(bridge, questions, mode="cloze", progress=progress)
    started = time.perf_counter()
    run = unlearn(bridge, forget=testbed.forget_corpus(), retain=testbed.retain_corpus(), config=config, progress=progress)
    rmu_seconds = time.perf_counter() - started
    after = evaluate(bridge, questions, mode="cloze", progress=progress)
    before_groups, after_groups = accuracy_groups(testbed, base), accuracy_groups(testbed, after)
    adjacent = testbed.adjacent_domain
    return {
        "testbed": testbed.model_dir.name,
        "overlap": testbed.world.overlap,
        "shared_attributes": testbed.world.shared_attributes(),
        "train_seconds": testbed.info.get("train_seconds"),
        "roles": {d.name: d.role for d in testbed.world.domains},
        "base": before_groups,
        "after": after_groups,
        "adjacent_drop": before_groups[adjacent]["acc"] - after_groups[adjacent]["acc"],
        "rmu_seconds": round(rmu_seconds, 1),
        "steering_coeffs": run.steering_coeffs,
        "config": config.to_dict(),
    }


def format_measurement(measurement: dict[str, Any]) -> str:
    """A plain-text table of a :func:`measure` result."""
    roles = measurement["roles"]
    lines = [f"{'group':34} {'role':9} {'base':>6} {'after':>6} {'change':>7}   n"]
    for name, base in measurement["base"].items():
        after = measurement["after"][name]
        role = roles.get(name, roles.get(name.split(" (")[0], ""))
        lines.append(
            f"{name:34} {role:9} {base['acc']:6.3f} {after['acc']:6.3f} {after['acc'] - base['acc']:+7.3f} {base['n']:4d}"
        )
    lines.append(
        f"adjacent drop: {measurement['adjacent_drop']:.3f}; chance {CHANCE}; RMU {measurement['rmu_seconds']} s; "
        f"model training {measurement['train_seconds']} s"
    )
    return "\n".join(lines)
