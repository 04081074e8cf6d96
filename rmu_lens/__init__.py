"""rmu_lens: RMU unlearning on TransformerLens hook points, and a look at what it changed inside.

    import rmu_lens as rl
    model = rl.load_model("smollm2-135m")
    run = rl.unlearn(model, forget=[rl.load_corpus("bundled:virology")],
                     retain=rl.load_corpus("bundled:retain"), config=rl.RMUConfig.profile("demo"))

The top level holds what a researcher types; plumbing stays in its package (``rmu_lens.models``,
``rmu_lens.pipeline``, ``rmu_lens.rmu.config``). Names are imported lazily (``lazy_loader``) so the
command line starts without loading torch or TransformerLens. ``rmu_lens.audit`` is the package
of the audits, and calling it runs :func:`rmu_lens.audit.audit`.
In Jupyter, ``%load_ext rmu_lens`` adds the magics (see rmu_lens.jupyter).
"""

from __future__ import annotations

from typing import Any

import lazy_loader

__version__ = "0.1.0"

# ``audit`` and ``sweep`` are submodules here, not the functions: a function under its package's name would make
# ``import rmu_lens.audit.suite as s`` fail; the package is callable instead.
__getattr__, _lazy_dir, __all__ = lazy_loader.attach(__name__, submodules=["audit", "sweep"], submod_attrs={
    "models": ["load_model", "build_random_model", "save_hf_model"],
    "rmu.config": ["RMUConfig"],
    "rmu.record": ["RMURun", "read_run"],
    "rmu.trainer": ["RMUTrainer", "unlearn"],
    "data.corpora": ["load_corpus", "Corpus"],
    "eval": ["evaluate", "load_questions", "Question", "compare", "Comparison", "EvalResult"],
    "utility.perplexity": ["perplexity"],
    "testbed": ["load_testbed", "testbed_rmu_config", "make_world"],
    "analysis": ["analyze", "analyze_run", "Analysis", "collect_activations", "Activations",
                 "CollapseAnalysis", "ProbeAnalysis", "LinearProbe", "DamageAnalysis"],
    "audit": ["AuditResult", "FinetuneConfig", "layer_study"],
    "report": ["build_report"],
    "pipeline": ["run_pipeline"],
})


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext rmu_lens`` registers the magics (%rmu_unlearn, %rmu_eval, %rmu_compare, %rmu_analyze)."""
    from rmu_lens.jupyter import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext rmu_lens`` removes them again."""
    from rmu_lens.jupyter import unload_ipython_extension as unload

    unload(ipython)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_lazy_dir()))
