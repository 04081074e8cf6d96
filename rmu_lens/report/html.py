"""Render a Report as one self-contained HTML file: inline CSS, figures as base64 PNG, no scripts.

The markup lives in ``rmu_lens/templates/report.html`` (CSS in ``report.css``), rendered with
autoescaping, so everything that comes from data (subject and topic names, captions, settings) is
escaped. Headline cells carry ``data-key`` attributes (``accuracy.forget.base_acc``) so a program can
read the numbers back and check them against the JSON files they came from.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any

from rmu_lens.report.headline import ROLE_LABELS, Headline


def number(value: Any, digits: int = 3) -> str:
    """How the report prints a number: ``digits`` decimals, ``n/a`` for missing or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:.1f}"


DATASET_COLUMNS = (
    ("role", "role", 3), ("norm_base", "norm, base", 1), ("norm_unlearned", "norm, unlearned", 1), ("steering_coeff", "c", 1),
    ("norm_unlearned_over_c", "norm / c", 3), ("cos_unlearned_base", "cos(unlearned, base)", 3),
    ("cos_u_perp_base", "cos(h, u⊥) base", 3), ("cos_u_perp_unlearned", "cos(h, u⊥) unlearned", 3),
)
"""(key, column label, decimals) of the representation table."""
PROBE_VARIANTS = (("chance", "chance"), ("base", "base probe, base model"), ("transfer", "base probe, unlearned model"),
                  ("unlearned", "probe retrained on unlearned"))


def _accuracy_rows(headline: Headline) -> list[dict[str, Any]]:
    return [
        {"prefix": f"accuracy.{row.role}", "label": ROLE_LABELS.get(row.role, row.role), "subjects": row.subjects,
         "n": row.n, "base_acc": row.base_acc, "base_ci": row.base_ci, "unlearned_acc": row.unlearned_acc,
         "unlearned_ci": row.unlearned_ci, "change": row.change,
         "change_class": "down" if row.change < -1e-12 else ("up" if row.change > 1e-12 else ""),
         "other_metric": row.other_metric, "base_other": row.base_other, "unlearned_other": row.unlearned_other,
         "note": row.note}
        for row in headline.accuracy
    ]


def _representations(headline: Headline) -> dict[str, Any] | None:
    summary = headline.representations
    if not summary:
        return None
    damage = summary.get("damage")
    correlation = damage.get("correlation_shift_at_layer") if isinstance(damage, Mapping) else None
    return {
        "hook": str(summary.get("hook", "layer l")),
        "datasets": summary.get("datasets", {}),
        "columns": DATASET_COLUMNS,
        "probes": {key[: -len("_probe")]: value for key, value in summary.items()
                   if key.endswith("_probe") and isinstance(value, Mapping)},
        "probe_variants": PROBE_VARIANTS,
        "correlation": correlation if isinstance(correlation, Mapping) else None,
    }


def _figure(figure: Any) -> dict[str, str]:
    return {"name": figure.name, "caption": figure.caption, "data": base64.b64encode(figure.png).decode("ascii")}


def render_html(report: Any) -> str:
    """The report as one HTML document (UTF-8 text) that needs no network to view."""
    from markupsafe import Markup

    from rmu_lens._templates import render

    headline = report.headline
    training = headline.training or {}
    robustness = None
    if report.robustness is not None:
        robustness = {"headlines": report.robustness.headlines, "figures": [_figure(f) for f in report.robustness.figures]}
    recovery = None
    if getattr(report, "recovery", None) is not None:
        recovery = {"lines": report.recovery.lines, "figures": [_figure(f) for f in report.recovery.figures]}
    utility = None
    if getattr(report, "utility", None) is not None:
        from rmu_lens.report.utility import utility_html

        utility = Markup(utility_html(report.utility))  # rendered from its own autoescaped template
    html = render(
        "report.html", title=report.title, meta=report.meta, accuracy=_accuracy_rows(headline), metric=headline.metric,
        training=training, training_tail=next(iter(training.values()))["tail"] if training else None,
        layer_hook=report.meta.get("read hook"), representations=_representations(headline), recovery=recovery, robustness=robustness,
        utility=utility, figures=[_figure(f) for f in report.figures], details=report.details,
    )
    return html.rstrip("\n") + "\n"
