"""Data shipped with rmu_lens and the loaders that read users' data.

| path              | role                                                                        |
|-------------------|-----------------------------------------------------------------------------|
| corpora.py        | Corpus; load_corpus: bundled:NAME, .jsonl / .txt / .parquet, HF datasets     |
| corpora/*.jsonl   | bundled texts written for rmu_lens: virology and cybersecurity (forget       |
|                   | topics standing in for WMDP bio / cyber), retain (history, geography, arts,  |
|                   | everyday science: stands in for WikiText)                                    |
| questions/*.jsonl | bundled multiple-choice sets (WMDP schema + subject): virology and           |
|                   | cybersecurity (forget), biology and computing (adjacent), geography and      |
|                   | history (distant); read with rmu_lens.eval.load_questions("bundled:NAME")    |
"""
