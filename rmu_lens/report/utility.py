"""The report's utility section as HTML: perplexity per dataset, gibberish per role, generations side by side.

Every prompt and completion is model or dataset text: all of it is escaped. Numbers carry
``data-key`` attributes (``utility.perplexity.retain.unlearned.bits_per_byte``,
``utility.generations.forget.base_loss.unlearned.mean``) like the headline's cells.
"""

from __future__ import annotations

from html import escape
from typing import Any

from rmu_lens.report.html import number

PERPLEXITY_COLUMNS = (("word_perplexity", "word perplexity", 2), ("byte_perplexity", "byte perplexity", 4),
                      ("bits_per_byte", "bits per byte", 4))
MEASURE_LABELS = {"base_loss": "base-model loss (nats/token)", "repeated_ngram_rate": "repeated n-gram rate"}
TEXT_CELL = ' class="label" style="white-space: pre-wrap; vertical-align: top; max-width: 22em"'


def _cell(key: str, value: Any, digits: int = 3) -> str:
    return f'<td data-key="{escape(key)}">{escape(number(value, digits))}</td>'


def perplexity_html(section: Any) -> str:
    """Before/after table of lm-eval's three perplexity metrics per dataset."""
    if not section.perplexity:
        return ""
    head = "".join(f"<th>{escape(label)}, base</th><th>after</th>" for _, label, _ in PERPLEXITY_COLUMNS)
    rows = []
    for name, row in section.perplexity.items():
        summary = row.summary()
        cells = "".join(
            _cell(f"utility.perplexity.{name}.base.{key}", summary["base"][key], digits)
            + _cell(f"utility.perplexity.{name}.unlearned.{key}", summary["unlearned"][key], digits)
            for key, _, digits in PERPLEXITY_COLUMNS
        )
        rows.append(f'<tr><td class="label">{escape(name)}</td><td class="label">{escape(row.role)}</td>'
                    f'{_cell(f"utility.perplexity.{name}.n_texts", summary["n_texts"])}{cells}</tr>')
    return (
        "<p>Perplexity as lm-evaluation-harness computes it (rolling windows, every token scored once) on the "
        "same texts for both models: forget text should become much less likely, retain and distant text should not.</p>"
        f'<table class="headline" id="utility-perplexity"><tr><th class="label">dataset</th><th class="label">role</th>'
        f"<th>texts</th>{head}</tr>" + "".join(rows) + "</table>"
    )


def _interval(key: str, stats: dict[str, Any]) -> str:
    return (f'{_cell(key + ".mean", stats["mean"])}'
            f'<td class="ci">[{escape(number(stats["low"]))}, {escape(number(stats["high"]))}]</td>')


def gibberish_html(generations: Any) -> str:
    """Per role: each gibberish measure on the base and the unlearned model's greedy text, with 95% intervals."""
    summary = generations.summary()
    head = "".join(f"<th>{escape(MEASURE_LABELS.get(m, m))}, base text</th><th>95% CI</th><th>unlearned text</th><th>95% CI</th>"
                   for m in MEASURE_LABELS)
    rows = []
    for role, measures in summary.items():
        n = measures["base_loss"]["unlearned"]["n"]
        cells = "".join(
            _interval(f"utility.generations.{role}.{measure}.base", measures[measure]["base"])
            + _interval(f"utility.generations.{role}.{measure}.unlearned", measures[measure]["unlearned"])
            for measure in MEASURE_LABELS
        )
        rows.append(f'<tr><td class="label">{escape(role)}</td><td>{escape(str(n))}</td>{cells}</tr>')
    n_gram = generations.config.ngram
    return (
        f"<p>Gibberish per role, on greedy completions of up to {generations.config.max_new_tokens} tokens: the base model's "
        f"mean loss on the text (higher: less like what the base model would write) and the share of repeated "
        f"{n_gram}-grams (loops), each with a 95% t-interval over the role's prompts.</p>"
        f'<table class="headline" id="utility-gibberish"><tr><th class="label">prompts</th><th>n</th>{head}</tr>'
        + "".join(rows) + "</table>"
    )


def generations_html(generations: Any, max_rows: int | None = None) -> str:
    """The measures table, then each prompt with both models' completions side by side (all text escaped)."""
    sampled = any(r.get("sampled") for r in generations.records)
    head = "<th>base, greedy</th><th>unlearned, greedy</th>" + ("<th>base, sampled</th><th>unlearned, sampled</th>" if sampled else "")
    rows = []
    for record in generations.records[:max_rows]:
        texts = [record["greedy"]["base"], record["greedy"]["unlearned"]]
        if sampled:
            texts += [(record.get("sampled") or {}).get(m, "") for m in ("base", "unlearned")]
        cells = "".join(f"<td{TEXT_CELL}>{escape(text)}</td>" for text in texts)
        rows.append(f'<tr><td class="label" style="vertical-align: top">{escape(record["role"])}</td>'
                    f"<td{TEXT_CELL}>{escape(record['prompt'])}</td>{cells}</tr>")
    seed = f", sampled with seed {generations.config.seed} (temperature {generations.config.temperature}, top-p {generations.config.top_p})" if sampled else ""
    parts = [gibberish_html(generations)]
    if generations.judge:
        parts.append(judge_html(generations.judge))
    parts.append(
        f"<p>What the models say: greedy completions{escape(seed)}.</p>"
        f'<table id="utility-generations"><tr><th class="label">role</th><th class="label">prompt</th>{head}</tr>'
        + "".join(rows) + "</table>"
    )
    return "".join(parts)


def judge_html(judge: dict[str, Any]) -> str:
    """Mean external-judge rating per role and model, when a judge was configured."""
    rows = "".join(
        f'<tr><td class="label">{escape(role)}</td>'
        + "".join(_cell(f"utility.judge.{role}.{model}", (scores.get(model) or {}).get("mean"), 2) for model in ("base", "unlearned"))
        + "</tr>"
        for role, scores in (judge.get("summary") or {}).items()
    )
    return (f"<p>External judge ({escape(str(judge.get('judge', '')))}): mean rating 1–10 of the greedy completions.</p>"
            f'<table id="utility-judge"><tr><th class="label">prompts</th><th>base</th><th>unlearned</th></tr>{rows}</table>')


def utility_html(section: Any) -> str:
    """The whole section: the perplexity table, then the generations (either may be missing)."""
    parts = ['<h2 id="utility">Utility</h2>', perplexity_html(section)]
    if section.generations is not None:
        parts.append(generations_html(section.generations))
    return "".join(parts)
