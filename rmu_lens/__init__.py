"""rmu_lens: RMU unlearning on TransformerLens hook points, and a look at what it changed inside.

    import rmu_lens as rl
    model = rl.load_model("smollm2-135m")
    run = rl.unlearn(model, forget=[rl.load_corpus("bundled:virology")],
                     retain=rl.load_corpus("bundled:retain"), config=rl.RMUConfig.profile("demo"))

Names are imported lazily so the command line starts without loading torch or TransformerLens.
In Jupyter, ``%load_ext rmu_lens`` adds the magics (see rmu_lens.jupyter).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "rmu_lens.models",
    "build_random_model": "rmu_lens.models",
    "save_hf_model": "rmu_lens.models",
    "tokenizer_of": "rmu_lens.models",
    "RMUConfig": "rmu_lens.rmu.config",
    "PROFILES": "rmu_lens.rmu.config",
    "RMURun": "rmu_lens.rmu.trainer",
    "RMUTrainer": "rmu_lens.rmu.trainer",
    "unlearn": "rmu_lens.rmu.trainer",
    "load_corpus": "rmu_lens.data.corpora",
    "Corpus": "rmu_lens.data.corpora",
    "read_run": "rmu_lens.rmu.rundir",
    "evaluate": "rmu_lens.eval",
    "load_questions": "rmu_lens.eval",
    "compare": "rmu_lens.eval",
    "EvalResult": "rmu_lens.eval",
    "perplexity": "rmu_lens.utility.perplexity",
    "load_testbed": "rmu_lens.testbed",
    "testbed_rmu_config": "rmu_lens.testbed",
    "make_world": "rmu_lens.testbed",
    "analyze": "rmu_lens.analysis",
    "analyze_run": "rmu_lens.analysis",
    "Analysis": "rmu_lens.analysis",
    "collect_activations": "rmu_lens.analysis",
    "Activations": "rmu_lens.analysis",
    "CollapseAnalysis": "rmu_lens.analysis",
    "ProbeAnalysis": "rmu_lens.analysis",
    "LinearProbe": "rmu_lens.analysis",
    "DamageAnalysis": "rmu_lens.analysis",
    "audit": "rmu_lens.audit",
    "AuditResult": "rmu_lens.audit",
    "FinetuneConfig": "rmu_lens.audit",
    "layer_study": "rmu_lens.audit.layer_study",
    "sweep": "rmu_lens.sweep",
    "build_report": "rmu_lens.report",
    "run_pipeline": "rmu_lens.pipeline",
    "smollm2_plan": "rmu_lens.pipeline",
    "testbed_plan": "rmu_lens.pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rmu_lens' has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext rmu_lens`` registers the magics (%rmu_unlearn, %rmu_eval, %rmu_compare, %rmu_analyze)."""
    from rmu_lens.jupyter import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext rmu_lens`` removes them again."""
    from rmu_lens.jupyter import unload_ipython_extension as unload

    unload(ipython)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
