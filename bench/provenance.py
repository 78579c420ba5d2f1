"""Who set a number of a sequence (its origin) and how sure the reading of its source is (its tag).

A leaf module: the sequence model (parameters) and the measure step (limits written in the step)
both declare origins with it, and :mod:`bench.origins` reads them for ``bench validate`` and the
report (ISO/IEC 17025 7.8.6.2 b).
"""

from __future__ import annotations

import re
from typing import Literal

# Who set a limit: the report states conformity to that specification only.
Origin = Literal["regulation", "item", "lab"]

# The confidence tags of the research notes: confirmed in a primary text, in a harmonised sibling
# document, in a secondary source only (a wiki, slides, a summary), or recalled.
CONFIDENCE_TAG = re.compile(r"\[(?:C|C-analog|S|R)\]")


def require_cited(origin: str | None, source: str | None) -> None:
    """A statement "conforms to <regulation clause>" needs the clause and how sure its reading is."""
    if origin == "regulation" and not (source and CONFIDENCE_TAG.search(source)):
        raise ValueError(
            "a regulation limit needs a source: naming the document, the clause and a confidence tag "
            "[C], [C-analog], [S] or [R]"
        )
