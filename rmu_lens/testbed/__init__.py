"""Ground-truth knowledge testbed: a small model trained from scratch on a fictional world whose every
fact is known, so "RMU removed X and damaged Y" can be measured rather than guessed.

| file          | role                                                                          |
|---------------|-------------------------------------------------------------------------------|
| world.py      | make_world(): seeded domains of made-up entities; the overlap knob; JSON       |
| templates.py  | training paraphrases and held-out question templates per attribute; filler    |
| render.py     | world → training documents (paragraphs, Q/A in the evaluator's format), MCQs |
| tokenizer.py  | word-level tokenizer from the world's own text (exact round trips, no BOS)    |
| train.py      | size presets; train a small Llama with plain torch on the CPU                 |
| testbed.py    | load_testbed(): cached build, Testbed (bridge, questions, corpora), RMU preset |
| experiment.py | measure(): accuracy per domain before / after RMU, adjacent drop              |
| overlap.py    | overlap_sweep(): one testbed per overlap setting, adjacent damage and shift    |
| __main__.py   | ``python -m rmu_lens.testbed``: the measurement from the command line          |

    make_world ─▶ render (documents, questions) ─▶ tokenizer ─▶ train ─▶ cache dir (HF model + world.json)
    load_testbed ─▶ Testbed ─▶ bridge() / questions() / forget_corpus() / retain_corpus()
                           ─▶ rmu_lens.unlearn(..., config=testbed_rmu_config()) ─▶ rmu_lens.eval.evaluate

    from rmu_lens.testbed import load_testbed, testbed_rmu_config
    tb = load_testbed(seed=0, size="small", overlap=0.5)     # trains once (a few minutes), then seconds
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TESTBED_RMU": "rmu_lens.testbed.testbed",
    "Testbed": "rmu_lens.testbed.testbed",
    "load_testbed": "rmu_lens.testbed.testbed",
    "testbed_dir": "rmu_lens.testbed.testbed",
    "testbed_rmu_config": "rmu_lens.testbed.testbed",
    "World": "rmu_lens.testbed.world",
    "make_world": "rmu_lens.testbed.world",
    "overlap_sweep": "rmu_lens.testbed.overlap",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    # Lazy, so that ``rmu-lens --help`` does not import torch through the trainer.
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rmu_lens.testbed' has no attribute {name!r}")
