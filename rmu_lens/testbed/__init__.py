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

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "overlap": ["overlap_sweep"],
    "testbed": ["TESTBED_RMU", "Testbed", "load_testbed", "testbed_dir", "testbed_rmu_config"],
    "world": ["World", "make_world"],
})
