"""Analysis: what RMU changed inside the model — activations, norms and collapse, probes, damage.

| file           | role                                                                                |
|----------------|-------------------------------------------------------------------------------------|
| activations.py | tokenize(); collect_activations(): hook names → per-token or per-sequence tensors, spilled to safetensors shards past a memory limit; answer_position_activations() |
| collapse.py    | norms, cos to u / all-ones / u⊥, distance to c·u, dispersion; CollapseAnalysis        |
| probes.py      | LinearProbe (sklearn); probe_layers(): CV accuracy, Wilson CI, transfer; ProbeAnalysis |
| damage.py      | DamageAnalysis: accuracy change × representation shift; overlap_sweep() on the testbed |
| analyze.py     | analyze() / analyze_run() / analyze_model(): all of the above for a base and an unlearned model |
| recover.py     | recover(): l̂, û, ĉ per forget topic from two models alone; collapsed or not           |
| weights.py     | weight_diff(): per-tensor change, shard by shard from safetensors folders            |

    texts ─▶ tokenize (one batch, both models) ─▶ collect_activations(base) ┐
                                              └▶ collect_activations(new)  ┴▶ collapse_stats ─▶ CollapseAnalysis
    per-sequence means / answer-position activations ─▶ probe_layers ─▶ ProbeAnalysis
    eval.compare(...) + CollapseAnalysis ─▶ DamageAnalysis

Figures of these results are in ``rmu_lens.plots.representations``.
"""

from __future__ import annotations

# Imported eagerly: the submodule analyze.py shares its name with the function analyze(), and a
# lazy import would leave the module, not the function, as rmu_lens.analysis.analyze.
from rmu_lens.analysis.activations import (
    Activations,
    answer_position_activations,
    collect_activations,
    resid_post_hooks,
    tokenize,
)
from rmu_lens.analysis.analyze import Analysis, analyze, analyze_model, analyze_run, knowledge_probe
from rmu_lens.analysis.collapse import CollapseAnalysis, collapse_stats
from rmu_lens.analysis.damage import DamageAnalysis, OverlapSweep, overlap_sweep
from rmu_lens.analysis.probes import LinearProbe, ProbeAnalysis, probe_layers
from rmu_lens.analysis.recover import Recovery, recover
from rmu_lens.analysis.weights import ModelMismatchError, WeightDiff, weight_diff

__all__ = [
    "Activations",
    "Analysis",
    "CollapseAnalysis",
    "DamageAnalysis",
    "LinearProbe",
    "ModelMismatchError",
    "OverlapSweep",
    "ProbeAnalysis",
    "Recovery",
    "WeightDiff",
    "analyze",
    "analyze_model",
    "analyze_run",
    "answer_position_activations",
    "collapse_stats",
    "collect_activations",
    "knowledge_probe",
    "overlap_sweep",
    "probe_layers",
    "recover",
    "resid_post_hooks",
    "tokenize",
    "weight_diff",
]
