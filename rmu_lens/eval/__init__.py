"""Multiple-choice evaluation that reproduces lm-evaluation-harness (0-shot WMDP / MMLU), faster.

| file         | role                                                                        |
|--------------|-----------------------------------------------------------------------------|
| questions.py | Question; load_questions: WMDP / MMLU files, MMLU CSV folders, bundled, hub  |
| prompts.py   | lm-eval's letter and cloze prompts; lm-eval's tokenization of each choice   |
| scoring.py   | packed rows (context once, every choice beside it), batched float32 scoring |
| evaluate.py  | evaluate(): model + questions → EvalResult (data-parallel under torchrun)   |
| stats.py     | Wilson interval; Newcombe's interval for paired differences                 |
| results.py   | EvalResult: records, per-subject/task accuracy, JSON, table                 |
| compare.py   | compare(): per-subject change base → new, forget targets vs collateral      |
| commands.py  | `rmu-lens eval` and `rmu-lens compare`                                      |

    questions ─▶ prompts (text, then lm-eval's token split) ─▶ scoring (one row per question)
              ─▶ records (log-likelihoods, predictions) ─▶ EvalResult ─▶ compare / table / JSON

    from rmu_lens.eval import load_questions, evaluate, compare
    questions = load_questions("wmdp-bio.jsonl")
    result = evaluate(model, questions, mode="letter")
    print(result.table())

Importing this package does not import torch; evaluate() does.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "compare": ["Comparison", "SubjectChange", "compare"],
    "evaluate": ["evaluate"],
    "questions": ["Question", "QuestionError", "load_questions"],
    "results": ["EvalResult", "ResultFileError"],
})
