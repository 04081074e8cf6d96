"""Utility beyond multiple choice: perplexity as lm-eval computes it, and what the model now says.

| file          | role                                                                            |
|---------------|---------------------------------------------------------------------------------|
| perplexity.py | perplexity(): lm-eval's rolling windows, batched; word/byte perplexity, bits/byte |
| generation.py | generate(): greedy and seeded sampled completions; gibberish measures per role  |
| judge.py      | an optional external judge (MT-Bench-style 1-10 rating), off by default         |
| section.py    | utility_section(): per-domain perplexity + generations, base vs unlearned       |

    texts ─▶ tokens ─▶ rolling windows ─▶ batched float32 scoring ─▶ PerplexityResult
    prompts per role ─▶ model.generate (base, unlearned) ─▶ base-model loss, repeated n-grams ─▶ Generations
    PerplexityResults per domain + Generations ─▶ UtilitySection ─▶ report, summary.json, widget

Generation runs the HF model inside the bridge (hooks on the bridge apply) with the model's own
tokenizer. Names are imported lazily: importing this package does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "perplexity": "rmu_lens.utility.perplexity",
    "PerplexityResult": "rmu_lens.utility.perplexity",
    "generate": "rmu_lens.utility.generation",
    "compare_generations": "rmu_lens.utility.generation",
    "Generations": "rmu_lens.utility.generation",
    "GenerationConfig": "rmu_lens.utility.generation",
    "JudgeConfig": "rmu_lens.utility.judge",
    "judge_generations": "rmu_lens.utility.judge",
    "UtilitySection": "rmu_lens.utility.section",
    "utility_section": "rmu_lens.utility.section",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rmu_lens.utility' has no attribute {name!r}")
