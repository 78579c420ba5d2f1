"""Text into the report's HTML: every value escaped, every number written the same way."""

from __future__ import annotations

import html
import math


def e(value: object) -> str:
    return html.escape(str(value), quote=True)


def num(v: float | None) -> str:
    """Six significant digits; an absent value is a dash; inf and nan as Python spells them."""
    if v is None:
        return "&mdash;"
    return e(f"{v:.6g}") if math.isfinite(v) else e(str(v))
