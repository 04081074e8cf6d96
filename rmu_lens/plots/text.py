"""Text from data (subject, topic, dataset and domain names) drawn literally in figures."""

from __future__ import annotations

from typing import Any


def plain(text: Any) -> str:
    """``text`` with every ``$`` escaped, so matplotlib draws it as written.

    matplotlib reads a string holding two ``$`` as mathtext: a name like ``cost $5 vs $6`` would be
    garbled, and one like ``a$^$b`` aborts the drawing with a parse error.
    """
    return str(text).replace("$", r"\$")
