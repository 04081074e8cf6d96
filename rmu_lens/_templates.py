"""HTML from the Jinja2 templates in ``rmu_lens/templates/``, with autoescaping on.

Every value a template prints is escaped unless it is already markup (a rendered macro, or
:class:`markupsafe.Markup`), so dataset text — subject names, prompts, completions, paths — can never
inject tags. Templates hold the markup; Python passes data. Filters: ``number`` (the report's
``n/a``-aware format) and ``short`` (the widgets' compact number, ``–`` for missing).
"""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def environment() -> Any:
    """The one Jinja2 environment (imported on first use: the command line does not need it)."""
    import jinja2

    from rmu_lens.jupyter.display import format_number
    from rmu_lens.report.html import number

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("rmu_lens", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["number"] = number
    env.filters["short"] = format_number
    return env


def render(template: str, **context: Any) -> str:
    """``template`` (a file in rmu_lens/templates/) rendered with ``context``."""
    return environment().get_template(template).render(**context)


def macro(template: str, name: str, *args: Any, **kwargs: Any) -> str:
    """One macro of ``template`` called with the arguments: a component shared by several pages."""
    return str(getattr(environment().get_template(template).module, name)(*args, **kwargs))
