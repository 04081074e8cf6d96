"""RMU: config, control vectors, the efficient trainer and its run directory.

| file        | role                                                                    |
|-------------|-------------------------------------------------------------------------|
| config.py   | RMUConfig (JSON round trip) and named profiles                          |
| control.py  | control vectors u per topic (seeded torch.rand, or explicit)            |
| params.py   | trained tensors by readable name / pattern                              |
| batches.py  | forget/retain sources, tokenization, the official step schedule        |
| runner.py   | BlockRunner: blocks first..l only, functional weights                   |
| optim.py    | LegacyAdamW (transformers 4.x AdamW, as the official code)              |
| prefix.py   | PrefixCache: frozen prefix activations shared by the runs of a sweep    |
| trainer.py  | RMUTrainer (state_dict / load_state_dict / run_facts) and unlearn()     |
| record.py   | RMURun: one run's record; RMURun.load(path) reads a run directory back  |
| rundir.py   | run directory: writes run.json, checkpoints, resume, model/             |

    texts ─▶ batches ─▶ runner.prefix (frozen blocks < first, shared) ─▶ runner.run (first..l)
          ─▶ forget MSE to c·u + alpha · retain MSE to frozen ─▶ optimizer ─▶ rundir
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "config": ["PROFILES", "RMUConfig"],
    "record": ["RMURun"],
    "trainer": ["NonFiniteLossError", "RMUTrainer", "unlearn"],
})
