"""What exact sliding-window scoring costs: per-layer-type masks vs one full mask vs one row per choice.

    python benchmarks/bench_eval_windows.py mistral
    python benchmarks/bench_eval_windows.py gemma2

A random 4-layer model of the family (d_model 256, window 64) scores 32 questions whose prompts are
longer than the window, in both modes, batch 16. Variants: the scorer as shipped (one mask per layer
type); one window-free mask for every layer (wrong scores: the cost floor only); one ordinary row per
choice (the fallback for layer kinds the scorer cannot mask). One warm-up, then the fastest of 3
alternating runs, in wall seconds.
"""

from __future__ import annotations

import sys
import time

import torch

import rmu_lens.eval.scoring as scoring
from rmu_lens.attention import FULL
from rmu_lens.eval import Question, evaluate
from rmu_lens.models import build_random_model, load_model
from tests.helpers import texts


def main(family: str) -> None:
    torch.set_num_threads(2)
    questions = [
        Question(" ".join(texts("bio", 1, seed=i, min_words=12, max_words=20)) + "?",
                 [" ".join(texts("retain", 1, seed=10 * i + k, min_words=2, max_words=6)) for k in range(4)],
                 i % 4, "biology", "wmdp-bio", f"q{i}")
        for i in range(32)
    ]
    shipped = (scoring.packs_choices, scoring.attention_masks)
    variants = {
        "per-layer-type masks": shipped,
        "single full mask (ignores windows)": (shipped[0], lambda model: ({FULL: None}, False)),
        "one row per choice": (lambda model: False, shipped[1]),
    }
    model, tokenizer = build_random_model(family, n_layers=4, d_model=256, n_heads=4, sliding_window=64, seed=0)
    bridge = load_model(model, tokenizer=tokenizer)
    for mode in ("letter", "cloze"):
        evaluate(bridge, questions, mode=mode, batch_size=16, progress=False)
        best = dict.fromkeys(variants, float("inf"))
        try:
            for _ in range(3):
                for name, (packs, masks) in variants.items():
                    scoring.packs_choices, scoring.attention_masks = packs, masks
                    start = time.perf_counter()
                    evaluate(bridge, questions, mode=mode, batch_size=16, progress=False)
                    best[name] = min(best[name], time.perf_counter() - start)
        finally:
            scoring.packs_choices, scoring.attention_masks = shipped
        print(family, mode, ", ".join(f"{name} {seconds:.2f}s" for name, seconds in best.items()), flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "mistral")
