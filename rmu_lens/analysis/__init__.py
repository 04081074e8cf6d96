"""Analysis: what RMU changed inside the model — activations, norms and collapse, probes, damage.

| file           | role                                                                                |
|----------------|-------------------------------------------------------------------------------------|
| activations.py | tokenize(); collect_activations(): hook names → per-token or per-sequence tensors, spilled to safetensors shards past a memory limit; answer_position_activations() |
| collapse.py    | norms, cos to u / all-ones / u⊥, distance to c·u, dispersion; CollapseAnalysis        |
| probes.py      | LinearProbe (sklearn); probe_layers(): CV accuracy, Wilson CI, transfer; ProbeAnalysis |
| damage.py      | DamageAnalysis: accuracy change × representation shift; OverlapSweep (its rows)     |
| analyze.py     | analyze() / analyze_run() / analyze_model(): all of the above for a base and an unlearned model |
| recover.py     | recover(): l̂, û, ĉ per forget topic from two models alone; collapsed or not           |
| weights.py     | weight_diff(): per-tensor change, shard by shard from safetensors folders            |
| base_cache.py  | base_activations(), recover_cache(): the base model's activations kept across calls (base_cache=) |
| side_by_side.py| side_by_side(): several unlearned models' collapse, shifts and accuracy changes in one table |

    texts ─▶ tokenize (one batch, both models) ─▶ collect_activations(base) ┐
                                              └▶ collect_activations(new)  ┴▶ collapse_stats ─▶ CollapseAnalysis
    per-sequence means / answer-position activations ─▶ probe_layers ─▶ ProbeAnalysis
    eval.compare(...) + CollapseAnalysis ─▶ DamageAnalysis

Figures of these results are in ``rmu_lens.plots.representations``; the overlap sweep (a testbed
experiment) is ``rmu_lens.testbed.overlap_sweep``.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "activations": ["Activations", "answer_position_activations", "collect_activations", "resid_post_hooks",
                    "tokenize"],
    "analyze": ["Analysis", "analyze", "analyze_model", "analyze_run", "knowledge_probe"],
    "collapse": ["CollapseAnalysis", "collapse_stats"],
    "config": ["AnalysisConfig"],
    "damage": ["DamageAnalysis", "OverlapSweep"],
    "probes": ["LinearProbe", "ProbeAnalysis", "ProbeSet", "probe_layers"],
    "recover": ["Recovery", "recover"],
    "registry": ["Analyzer", "register_analyzer"],
    "weights": ["ModelMismatchError", "WeightDiff", "weight_diff"],
})
