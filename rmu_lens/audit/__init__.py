"""Recovery audits: how robust is an unlearning run? And the layer study of plain vs adaptive RMU.

| file              | role                                                                                |
|-------------------|-------------------------------------------------------------------------------------|
| recovery_stats.py | Recovery, recovery(): share of the removed accuracy brought back, paired bootstrap  |
| ablation.py       | RMU direction per layer (mean difference, first PC); project it out (TL hooks)      |
| finetune.py       | few-shot fine-tuning of a copy (LoRA via peft, or a few layers)                     |
| probing.py        | probe_audit(): linear decodability of the forget answers per layer, base vs unlearned |
| suite.py          | audit(): the three audits in one call → AuditResult (JSON, headline, figures)       |
| layers.py         | layer_study(): RMU at each layer, plain vs adaptive, with ablation recovery         |
| commands.py       | `rmu-lens audit` and `rmu-lens layer-study`                                         |

    base + unlearned ─▶ evaluate (forget, retain) ─▶ Baseline
        ─▶ estimate_directions ─▶ ablated(...) ─▶ evaluate ─▶ Recovery per layer set (+ random control)
        ─▶ finetune_copy (N examples) ─▶ evaluate ─▶ Recovery vs N per source
        ─▶ probe_audit (analysis.probes) ─▶ surviving decodability per layer
        ─▶ AuditResult ─▶ audit.json, figures/*.png, headline()

Plots live in ``rmu_lens/plots/audit.py``. Names are imported lazily (torch is heavy) with
``lazy_loader``; no module shares its name with a function, so ``rmu_lens.audit.audit`` is the
function. ``rmu_lens.audit(...)`` runs it too: ``rmu_lens.audit`` is this package (Python binds a
subpackage on its parent once imported), so the package is callable.
"""

import sys
import types
from typing import Any

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "suite": ["audit", "AuditResult", "AuditFileError"],
    "recovery_stats": ["Recovery", "Baseline", "recovery"],
    "ablation": ["estimate_directions", "ablated", "ablation_audit", "AblationResult"],
    "finetune": ["FinetuneConfig", "finetune_audit", "finetune_copy", "FinetuneResult"],
    "probing": ["probe_audit", "ProbeAuditResult"],
    "layers": ["layer_study", "LayerStudy"],
})


class _CallablePackage(types.ModuleType):
    """``rmu_lens.audit(...)`` is ``rmu_lens.audit.audit(...)``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.audit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
