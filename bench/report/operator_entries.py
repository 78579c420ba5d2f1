"""The texts the operator entered at prompts, as rows of the report's "Item tested" section.

An identification (a serial number, a part number) identifies the item tested (ISO/IEC 17025
7.8.2.1 g); a remark is stated beside it. Both are shown exactly as they were entered and are
never judged: they have no limits, no uncertainty and no conformity.
"""

from __future__ import annotations

from bench.report.htmltext import e
from bench.result import OperatorEntry, RunResult

# What each kind of entry is called in the report, and the clause it answers.
_ROWS = {
    "identification": ("7.8.2.1 g)", "Identification (entered by the operator)"),
    "remark": ("", "Remarks of the operator"),
}


def operator_rows(result: RunResult) -> list[tuple[str, str, str]]:
    """One (clause, heading, HTML) row per kind of entry the run holds, entries in the order taken."""
    rows = []
    for record, (clause, heading) in _ROWS.items():
        entries = [x for x in result.operator_entries if x.record == record]
        if entries:
            rows.append((clause, heading, "<br>".join(_entry(x) for x in entries)))
    return rows


def _entry(x: OperatorEntry) -> str:
    return f'{e(x.prompt)}: <b>{e(x.answer)}</b> <span class="muted">({e(x.source)})</span>'
