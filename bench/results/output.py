"""The one formatter of every ``bench db`` answer: an aligned text table, JSON or CSV.

Instants are printed as ISO 8601 UTC (``2026-12-03T19:38:56Z``), dates as ISO dates, numbers
in full in JSON and CSV (a script reads them) and to six significant digits in the table (a
person reads it), a missing value as nothing (``null`` in JSON).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Mapping
from typing import Any, Literal

from bench.results.queries import Table

Format = Literal["table", "json", "csv"]


def _plain(value: Any) -> Any:
    """A value as JSON and CSV carry it."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _rows(table: Table) -> list[dict[str, Any]]:
    return [{k: _plain(v) for k, v in row.items()} for row in table.dicts()]


def _cell(value: Any) -> str:
    """A value as the text table shows it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    return str(_plain(value))


def render(table: Table, fmt: Format = "table") -> str:
    """``table`` as text: columns aligned under their names, JSON (a list of objects) or CSV."""
    if fmt == "json":
        return json.dumps(_rows(table), indent=1)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(table.columns)
        writer.writerows([["" if v is None else _plain(v) for v in row] for row in table.rows])
        return buf.getvalue().rstrip("\n")
    cells = [list(table.columns), *([_cell(v) for v in row] for row in table.rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(table.columns))]
    numeric = [
        all(isinstance(r[i], int | float) and not isinstance(r[i], bool) for r in table.rows if r[i] is not None)
        for i in range(len(widths))
    ]
    lines = []
    for row in cells:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric, strict=True)]
        lines.append("  ".join(parts).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_sections(sections: Mapping[str, Table], fmt: Format = "table") -> str:
    """Several tables of one answer: titled text tables, or one JSON object of row lists (CSV
    holds one table only: the caller picks it)."""
    if fmt == "csv":
        raise ValueError("CSV holds one table: render it alone")
    if fmt == "json":
        return json.dumps({name: _rows(t) for name, t in sections.items()}, indent=1)
    return "\n\n".join(f"{name}:\n" + (render(t) if t.rows else "(none)") for name, t in sections.items())
