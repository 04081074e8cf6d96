"""Render a Report as one self-contained HTML file: inline CSS, figures as base64 PNG, no scripts.

Everything that comes from data (subject and topic names, captions, settings) is escaped. Headline
cells carry ``data-key`` attributes (``accuracy.forget.base_acc``) so a program can read the numbers
back and check them against the JSON files they came from.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from html import escape
from typing import Any

from rmu_lens.report.headline import ROLE_LABELS, Headline

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1180px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
.meta { color: #555; font-size: 0.92em; }
table { border-collapse: collapse; margin: 0.6em 0 1em 0; font-size: 0.93em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.label, th.label { text-align: left; }
td.down { color: #b03a2e; font-weight: 600; } td.up { color: #1e8449; font-weight: 600; }
.ci { color: #777; font-size: 0.85em; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.93em; margin-top: 0.3em; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
ul.robustness li { margin: 0.2em 0; }
"""


def number(value: Any, digits: int = 3) -> str:
    """How the report prints a number: ``digits`` decimals, ``n/a`` for missing or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:.1f}"


def _cell(key: str, value: Any, digits: int = 3, css: str = "") -> str:
    klass = f' class="{css}"' if css else ""
    return f'<td{klass} data-key="{escape(key)}">{escape(number(value, digits))}</td>'


def _accuracy_table(headline: Headline) -> str:
    if not headline.accuracy:
        return "<p>No evaluation in this report.</p>"
    rows = []
    for row in headline.accuracy:
        prefix = f"accuracy.{row.role}"
        change_class = "down" if row.change < -1e-12 else ("up" if row.change > 1e-12 else "")
        rows.append(
            "<tr>"
            f'<td class="label"><b>{escape(ROLE_LABELS.get(row.role, row.role))}</b><br>'
            f'<span class="ci">{escape(", ".join(row.subjects))}</span></td>'
            f"{_cell(prefix + '.n', row.n)}"
            f"{_cell(prefix + '.base_acc', row.base_acc)}"
            f'<td class="ci">[{escape(number(row.base_ci[0]))}, {escape(number(row.base_ci[1]))}]</td>'
            f"{_cell(prefix + '.unlearned_acc', row.unlearned_acc)}"
            f'<td class="ci">[{escape(number(row.unlearned_ci[0]))}, {escape(number(row.unlearned_ci[1]))}]</td>'
            f"{_cell(prefix + '.change', row.change, css=change_class)}"
            "</tr>"
        )
    return (
        f'<table class="headline" id="accuracy"><tr><th class="label">questions</th><th>n</th>'
        f"<th>before ({escape(headline.metric)})</th><th>95% CI</th><th>after</th><th>95% CI</th><th>change</th></tr>"
        + "".join(rows) + "</table>"
    )


def _training_table(headline: Headline, layer_hook: str | None) -> str:
    if not headline.training:
        return ""
    rows = []
    for topic, s in headline.training.items():
        prefix = f"training.{topic}"
        rows.append(
            "<tr>"
            f'<td class="label">{escape(topic)}</td>'
            f"{_cell(prefix + '.steering_coeff', s['steering_coeff'], 1)}"
            f"{_cell(prefix + '.forget_norm_start', s['forget_norm_start'], 1)}"
            f"{_cell(prefix + '.forget_norm_end', s['forget_norm_end'], 1)}"
            f"{_cell(prefix + '.retain_norm_end', s['retain_norm_end'], 1)}"
            f"{_cell(prefix + '.forget_cos_end', s['forget_cos_end'])}"
            f"{_cell(prefix + '.retain_cos_end', s['retain_cos_end'])}"
            "</tr>"
        )
    where = f" at <code>{escape(layer_hook)}</code>" if layer_hook else ""
    tail = next(iter(headline.training.values()))["tail"]
    return (
        f"<p>Training signature{where} (mean of each topic's last {tail} steps): RMU drives the forget-text "
        f"token norm to c while retain text keeps its norm and direction.</p>"
        '<table class="headline" id="training"><tr><th class="label">forget topic</th><th>c</th>'
        "<th>forget norm, first step</th><th>forget norm, end</th><th>retain norm, end</th>"
        "<th>cos(updated, frozen) forget</th><th>cos(updated, frozen) retain</th></tr>"
        + "".join(rows) + "</table>"
    )


DATASET_COLUMNS = (
    ("role", "role"), ("norm_base", "norm, base"), ("norm_unlearned", "norm, unlearned"), ("steering_coeff", "c"),
    ("norm_unlearned_over_c", "norm / c"), ("cos_unlearned_base", "cos(unlearned, base)"),
    ("cos_u_perp_base", "cos(h, u⊥) base"), ("cos_u_perp_unlearned", "cos(h, u⊥) unlearned"),
)
PROBE_VARIANTS = (("chance", "chance"), ("base", "base probe, base model"), ("transfer", "base probe, unlearned model"),
                  ("unlearned", "probe retrained on unlearned"))


def _representation_table(headline: Headline) -> str:
    summary = headline.representations
    if not summary:
        return ""
    hook = summary.get("hook", "layer l")
    parts = [f"<p>Representations at <code>{escape(str(hook))}</code>, base vs unlearned model on the same tokens "
             f"(position 0 and pads excluded):</p>"]
    datasets = summary.get("datasets", {})
    if datasets:
        head = "".join(f"<th>{escape(label)}</th>" for _, label in DATASET_COLUMNS)
        rows = []
        for name, row in datasets.items():
            cells = []
            for key, _ in DATASET_COLUMNS:
                value = row.get(key)
                if key == "role":
                    cells.append(f'<td class="label">{escape(str(value))}</td>')
                else:
                    digits = 1 if key in ("norm_base", "norm_unlearned", "steering_coeff") else 3
                    cells.append(_cell(f"representations.datasets.{name}.{key}", value, digits))
            rows.append(f'<tr><td class="label">{escape(name)}</td>{"".join(cells)}</tr>')
        parts.append(f'<table class="headline" id="representations"><tr><th class="label">dataset</th>{head}</tr>'
                     + "".join(rows) + "</table>")
    probes = {key[: -len("_probe")]: value for key, value in summary.items() if key.endswith("_probe") and isinstance(value, Mapping)}
    if probes:
        head = "".join(f"<th>{escape(label)}</th>" for _, label in PROBE_VARIANTS)
        rows = "".join(
            f'<tr><td class="label">{escape(task)}</td>'
            + "".join(_cell(f"representations.{task}_probe.{key}", probe.get(key)) for key, _ in PROBE_VARIANTS) + "</tr>"
            for task, probe in probes.items()
        )
        parts.append(f'<p>Linear probes at <code>{escape(str(hook))}</code> (out-of-fold accuracy):</p>'
                     f'<table class="headline" id="probes"><tr><th class="label">probe</th>{head}</tr>{rows}</table>')
    damage = summary.get("damage")
    if isinstance(damage, Mapping) and isinstance(damage.get("correlation_shift_at_layer"), Mapping):
        correlation = damage["correlation_shift_at_layer"]
        parts.append(
            "<p>Damage: across the evaluated domains, accuracy drop vs representation shift at layer l has "
            f'Pearson r = <span data-key="representations.damage.pearson">{escape(number(correlation.get("pearson")))}</span>, '
            f'Spearman ρ = <span data-key="representations.damage.spearman">{escape(number(correlation.get("spearman")))}</span> '
            f'(n = {escape(str(correlation.get("n")))} domains).</p>'
        )
    return "".join(parts)


def _figure(figure: Any) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    return (
        f'<figure id="figure-{escape(figure.name)}"><img src="data:image/png;base64,{data}" alt="{escape(figure.name)}">'
        f"<figcaption>{escape(figure.caption)}</figcaption></figure>"
    )


def render_html(report: Any) -> str:
    """The report as one HTML document (UTF-8 text) that needs no network to view."""
    meta = "".join(f"<div><b>{escape(k)}:</b> {escape(str(v))}</div>" for k, v in report.meta.items())
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(report.title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(report.title)}</h1>",
        f'<div class="meta">{meta}</div>',
        "<h2>Headline</h2>",
        _accuracy_table(report.headline),
        _training_table(report.headline, report.meta.get("read hook")),
        _representation_table(report.headline),
    ]
    if report.robustness is not None:
        items = "".join(
            f'<li><b>{escape(name)}:</b> <span data-key="robustness.{escape(name)}">{escape(text)}</span></li>'
            for name, text in report.robustness.headlines.items()
        )
        parts += ["<h2>Robustness</h2>", f'<ul class="robustness">{items}</ul>']
        parts += [_figure(f) for f in report.robustness.figures]
    if getattr(report, "utility", None) is not None:
        from rmu_lens.report.utility import utility_html

        parts.append(utility_html(report.utility))
    if report.figures:
        parts.append("<h2>Figures</h2>")
        parts += [_figure(f) for f in report.figures]
    if report.details:
        parts.append("<h2>Details</h2>")
        for title, text in report.details.items():
            parts.append(f"<h3>{escape(title)}</h3><pre>{escape(text)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
