"""Recovery audits: how robust is an unlearning run? And the layer study of plain vs adaptive RMU.

| file           | role                                                                          |
|----------------|-------------------------------------------------------------------------------|
| recovery.py    | Recovery: share of the removed forget accuracy brought back, paired bootstrap |
| ablation.py    | RMU direction per layer (mean difference, first PC); project it out (TL hooks) |
| finetune.py    | few-shot fine-tuning of a copy (LoRA via peft, or a few layers)               |
| probe_audit.py | linear decodability of the forget answers per layer, base vs unlearned        |
| audit.py       | audit(): the three audits in one call → AuditResult (JSON, headline, figures) |
| layer_study.py | layer_study(): RMU at each layer, plain vs adaptive, with ablation recovery   |
| commands.py    | `rmu-lens audit` and `rmu-lens layer-study`                                   |

    base + unlearned ─▶ evaluate (forget, retain) ─▶ Baseline
        ─▶ estimate_directions ─▶ ablated(...) ─▶ evaluate ─▶ Recovery per layer set (+ random control)
        ─▶ finetune_copy (N examples) ─▶ evaluate ─▶ Recovery vs N per source
        ─▶ probe_audit (analysis.probes) ─▶ surviving decodability per layer
        ─▶ AuditResult ─▶ audit.json, figures/*.png, headline()

Plots live in ``rmu_lens/plots/audit.py``. Names are imported lazily (torch is heavy), except
``audit`` and ``AuditResult``: bound here so that ``rmu_lens.audit.audit`` is the function, not the
submodule of the same name (audit.py imports nothing heavy at module level). The functions
``recovery`` and ``layer_study`` share their module's name too: import them from their modules.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from rmu_lens.audit.audit import AuditResult, audit

_EXPORTS = {
    "Recovery": "rmu_lens.audit.recovery",
    "Baseline": "rmu_lens.audit.recovery",
    "estimate_directions": "rmu_lens.audit.ablation",
    "ablated": "rmu_lens.audit.ablation",
    "ablation_audit": "rmu_lens.audit.ablation",
    "AblationResult": "rmu_lens.audit.ablation",
    "FinetuneConfig": "rmu_lens.audit.finetune",
    "finetune_audit": "rmu_lens.audit.finetune",
    "finetune_copy": "rmu_lens.audit.finetune",
    "FinetuneResult": "rmu_lens.audit.finetune",
    "probe_audit": "rmu_lens.audit.probe_audit",
    "ProbeAuditResult": "rmu_lens.audit.probe_audit",
    "LayerStudy": "rmu_lens.audit.layer_study",
}
__all__ = sorted([*_EXPORTS, "audit", "AuditResult"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rmu_lens.audit' has no attribute {name!r}")


class _CallableModule(types.ModuleType):
    """``rmu_lens.audit(...)`` runs :func:`audit`: once this package is imported, ``rmu_lens.audit``
    is the package (Python binds submodules on their parent), so the package itself must be callable."""

    def __call__(self, *args: Any, **kwargs: Any) -> AuditResult:
        return audit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
