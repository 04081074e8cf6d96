"""The overlap sweep: the testbed at several overlap settings, the adjacent domain's damage and shift per setting.

One testbed per overlap (trained once and cached), one RMU run and two evaluations each; the rows
are an :class:`~rmu_lens.analysis.damage.OverlapSweep` (``plot_overlap_sweep`` draws them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rmu_lens.analysis.damage import OverlapSweep, spearman
from rmu_lens.testbed.testbed import load_testbed, testbed_rmu_config


def overlap_sweep(
    overlaps: Sequence[float] = (0.0, 0.5, 1.0),
    *,
    seed: int = 0,
    size: str = "small",
    config: Any = None,
    max_texts: int = 32,
    progress: bool = True,
) -> OverlapSweep:
    """For each overlap: load (or train, ~3.5 min) the testbed, evaluate, run RMU, evaluate, analyse.

    Each row: the overlap, the forget / adjacent / mean distant accuracy drop (cloze), the adjacent
    domain's shift at layer l and averaged over layers, and its norm ratio at l. Slow: one testbed
    training (first time), one RMU run and two evaluations per overlap.
    """
    from rmu_lens.analysis.analyze import analyze
    from rmu_lens.eval import compare, evaluate
    from rmu_lens.rmu import unlearn

    config = config or testbed_rmu_config()
    rows = []
    for overlap in overlaps:
        testbed = load_testbed(seed=seed, size=size, overlap=overlap, progress=progress)
        questions = testbed.questions()
        base_model, unlearned_model = testbed.bridge(), testbed.bridge()
        base_eval = evaluate(base_model, questions, mode="cloze", progress=progress)
        run = unlearn(unlearned_model, forget=testbed.forget_corpus(), retain=testbed.retain_corpus(), config=config,
                      progress=progress)
        new_eval = evaluate(unlearned_model, questions, mode="cloze", progress=progress)
        comparison = compare(base_eval, new_eval, forget_subjects=[testbed.forget_domain])
        datasets = {testbed.forget_domain: (testbed.corpus(testbed.forget_domain, qa=False), "forget"),
                    testbed.adjacent_domain: (testbed.corpus(testbed.adjacent_domain, qa=False), "adjacent")}
        for name in testbed.distant_domains:
            datasets[name] = (testbed.corpus(name, qa=False), "distant")
        analysis = analyze(
            base_model, unlearned_model, datasets, control_vectors=run.control_vectors,
            steering_coeffs=run.steering_coeffs, layer=run.layer, comparison=comparison, max_texts=max_texts,
            probes=False, progress=progress,
        )
        damage = analysis.damage
        by_domain = {r["domain"]: r for r in damage.rows}
        adjacent = by_domain[testbed.adjacent_domain]
        rows.append({
            "overlap": overlap,
            "testbed": testbed.model_dir.name,
            "forget_drop": by_domain[testbed.forget_domain]["accuracy_drop"],
            "adjacent_drop": adjacent["accuracy_drop"],
            "adjacent_drop_ci": [adjacent["drop_ci_low"], adjacent["drop_ci_high"]],
            "adjacent_shift_at_layer": adjacent["shift_at_layer"],
            "adjacent_shift_mean": adjacent["shift_mean"],
            "adjacent_norm_ratio_at_layer": adjacent["norm_ratio_at_layer"],
            "distant_drop": float(np.mean([by_domain[d]["accuracy_drop"] for d in testbed.distant_domains])),
            "steering_coeffs": run.steering_coeffs,
            "damage": damage.to_dict(),
        })
    drops = [r["adjacent_drop"] for r in rows]
    return OverlapSweep(rows=rows, meta={
        "seed": seed, "size": size, "config": config.to_dict(), "max_texts": max_texts,
        "spearman_overlap_vs_adjacent_drop": spearman(list(overlaps), drops),
    })
