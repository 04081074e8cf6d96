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

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "perplexity": ["perplexity", "PerplexityResult"],
    "generation": ["generate", "compare_generations", "Generations", "GenerationConfig"],
    "judge": ["JudgeConfig", "judge_generations"],
    "section": ["UtilitySection", "utility_section"],
})
