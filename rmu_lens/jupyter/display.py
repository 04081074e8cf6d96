"""Small display helpers shared by the widgets and the ``_repr_html_`` summaries.

Figures are drawn with ``matplotlib.figure.Figure`` (the Agg canvas, no pyplot state) and sent to the
browser as PNG bytes. The HTML comes from ``rmu_lens/templates/widgets.html``, rendered with
autoescaping, so the widgets never render markup that a corpus, a question or a path smuggled in.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def figure_png(figure: Any, dpi: int = 80) -> bytes:
    """PNG bytes of a matplotlib Figure (rendered with Agg, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if figure.canvas is None or not isinstance(figure.canvas, FigureCanvasAgg):
        FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def new_figure(width: float, height: float, n_axes: int = 1) -> tuple[Any, list[Any]]:
    """A Figure with ``n_axes`` side-by-side axes.

    Margins are fixed rather than computed (a constrained layout doubles the drawing time, and
    live widgets redraw often).
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    axes = figure.subplots(1, n_axes, squeeze=False)[0]
    figure.subplots_adjust(left=0.6 / width, right=1 - 0.2 / width, bottom=0.5 / height, top=1 - 0.35 / height,
                           wspace=0.3)
    return figure, list(axes)


def format_number(value: Any, digits: int = 4) -> str:
    """Short text for a number; ``nan`` and ``None`` become an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, caption: str | None = None) -> str:
    """An HTML table; every cell and header is escaped (cells may hold dataset text)."""
    from rmu_lens._templates import macro

    return macro("widgets.html", "table", [str(h) for h in headers], rows, caption).strip()


def html_title(text: str, detail: str = "") -> str:
    """A bold title with an optional grey detail, both escaped."""
    from rmu_lens._templates import macro

    return macro("widgets.html", "title", text, detail)


def html_status(state: str, detail: str = "") -> str:
    """A status line: the state in bold, then a detail (a path, an error message), both escaped."""
    from rmu_lens._templates import macro

    return macro("widgets.html", "status", state, detail)


def analysis_html(analysis: Any) -> str:
    """Notebook summary of an :class:`rmu_lens.analysis.Analysis`: layer-l numbers per dataset, probes, damage."""
    summary = analysis.summary()
    rows = [
        [name, row["role"], row["norm_base"], row["norm_unlearned"], row.get("steering_coeff"), row["norm_ratio"],
         row["cos_unlearned_base"], row.get("cos_u_unlearned")]
        for name, row in summary["datasets"].items()
    ]
    parts = [
        html_title("Analysis", f"{summary['hook']} · {analysis.collapse.tokens}"),
        html_table(["dataset", "role", "norm base", "norm unlearned", "c", "norm ratio", "cos(unlearned, base)",
                    "cos(h, u)"], rows),
    ]
    probe_rows = [
        [key.removesuffix("_probe"), value.get("base"), value.get("transfer"), value.get("unlearned"), value["chance"]]
        for key, value in summary.items() if key.endswith("_probe")
    ]
    if probe_rows:
        parts.append(html_table(["probe", "base", "transfer", "unlearned", "chance"], probe_rows,
                                caption=f"probe accuracy at {summary['hook']}"))
    if "damage" in summary:
        parts.append(html_table(["domain", "accuracy drop", "shift at l"], summary["damage"]["ranked"],
                                caption="damage, largest accuracy drop first"))
    return "".join(parts)
