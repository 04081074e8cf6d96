"""The report's utility section as HTML: perplexity per dataset, gibberish per role, generations side by side.

Every prompt and completion is model or dataset text: the markup is in ``rmu_lens/templates/utility.html``,
rendered with autoescaping. Numbers carry ``data-key`` attributes
(``utility.perplexity.retain.unlearned.bits_per_byte``, ``utility.generations.forget.base_loss.unlearned.mean``)
like the headline's cells.
"""

from __future__ import annotations

from typing import Any

from rmu_lens._templates import macro

PERPLEXITY_COLUMNS = (("word_perplexity", "word perplexity", 2), ("byte_perplexity", "byte perplexity", 4),
                      ("bits_per_byte", "bits per byte", 4))
MEASURE_LABELS = {"base_loss": "base-model loss (nats/token)", "repeated_ngram_rate": "repeated n-gram rate"}


def perplexity_html(section: Any) -> str:
    """Before/after table of lm-eval's three perplexity metrics per dataset."""
    rows = [(name, row.role, row.summary()) for name, row in (section.perplexity or {}).items()]
    return macro("utility.html", "perplexity", rows, PERPLEXITY_COLUMNS).strip()


def gibberish_html(generations: Any) -> str:
    """Per role: each gibberish measure on the base and the unlearned model's greedy text, with 95% intervals."""
    return macro("utility.html", "gibberish", generations.summary(), MEASURE_LABELS, generations.config.max_new_tokens,
                 generations.config.ngram).strip()


def generations_html(generations: Any, max_rows: int | None = None) -> str:
    """The measures table, then each prompt with both models' completions side by side (all text escaped)."""
    sampled = any(r.get("sampled") for r in generations.records)
    rows = []
    for record in generations.records[:max_rows]:
        texts = [record["greedy"]["base"], record["greedy"]["unlearned"]]
        if sampled:
            texts += [(record.get("sampled") or {}).get(m, "") for m in ("base", "unlearned")]
        rows.append((record["role"], record["prompt"], texts))
    config = generations.config
    seed = f", sampled with seed {config.seed} (temperature {config.temperature}, top-p {config.top_p})" if sampled else ""
    parts = [gibberish_html(generations)]
    if generations.judge:
        parts.append(judge_html(generations.judge))
    parts.append(macro("utility.html", "generations", rows, sampled, seed).strip())
    return "".join(parts)


def judge_html(judge: dict[str, Any]) -> str:
    """Mean external-judge rating per role and model, when a judge was configured."""
    return macro("utility.html", "judge", str(judge.get("judge", "")), judge.get("summary") or {}).strip()


def utility_html(section: Any) -> str:
    """The whole section: the perplexity table, then the generations (either may be missing)."""
    parts = ['<h2 id="utility">Utility</h2>', perplexity_html(section)]
    if section.generations is not None:
        parts.append(generations_html(section.generations))
    return "".join(parts)
