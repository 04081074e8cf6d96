"""RMU: config, control vectors, the efficient trainer and its run directory.

| file        | role                                                                    |
|-------------|-------------------------------------------------------------------------|
| config.py   | RMUConfig (JSON round trip) and named profiles                          |
| control.py  | control vectors u per topic (seeded torch.rand, or explicit)            |
| params.py   | trained tensors by readable name / pattern                              |
| batches.py  | forget/retain sources, tokenization, the official step schedule        |
| runner.py   | BlockRunner: blocks first..l only, functional weights                   |
| optim.py    | LegacyAdamW (transformers 4.x AdamW, as the official code)              |
| trainer.py  | RMUTrainer and unlearn()                                                 |
| rundir.py   | run directory: run.json, checkpoints, resume, model/                    |

    texts ─▶ batches ─▶ runner.prefix (frozen blocks < first, shared) ─▶ runner.run (first..l)
          ─▶ forget MSE to c·u + alpha · retain MSE to frozen ─▶ optimizer ─▶ rundir
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "config": ["PROFILES", "RMUConfig"],
    "trainer": ["NonFiniteLossError", "RMURun", "RMUTrainer", "unlearn"],
})
