"""A self-contained HTML report of one run, rendered from its ``RunResult``.

Everything is inline (no scripts, fonts or stylesheets fetched) so that the file is the same
document wherever it is opened or archived, and its hash in the manifest means something.
The output depends only on the result: no render time, no host name.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.result import RunResult

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
margin:2em auto;max-width:70em;padding:0 1em;color:#1b1b1b;line-height:1.4}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.8em;
border-bottom:1px solid #ccc;padding-bottom:.2em}
table{border-collapse:collapse;width:100%;margin:.5em 0;font-size:.92em}
th,td{border:1px solid #d0d0d0;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums}
table.kv th{width:14em}
.verdict{display:inline-block;padding:.25em .8em;border-radius:.3em;font-weight:bold;color:#fff}
.PASS{background:#1e7e34}.FAIL{background:#c82333}.ERROR{background:#b35900}
.ABORTED{background:#6f42c1}.SKIPPED{background:#6c757d}
span.o{display:inline-block;padding:0 .4em;border-radius:.2em;color:#fff;font-size:.9em}
.muted{color:#666}.overridden{font-weight:bold}
footer{margin-top:3em;border-top:1px solid #ccc;padding-top:.5em;font-size:.85em;color:#555}
@media print{body{margin:0;max-width:none}.verdict,span.o{-webkit-print-color-adjust:exact;
print-color-adjust:exact}}
"""


# Control characters (ESC sequences from device consoles, NUL) are not allowed in HTML text.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _e(value: object) -> str:
    return html.escape(_CONTROL.sub("\ufffd", str(value)), quote=True)


def _num(value: float | None) -> str:
    """Shortest exact form: the value shown is the value that was judged against the limits."""
    if value is None:
        return "&mdash;"
    return _e(repr(value)) if math.isfinite(value) else _e(str(value))


def _secs(value: float) -> str:
    return _e(f"{value:.6f}") if math.isfinite(value) else _e(str(value))


def _outcome(outcome: object) -> str:
    o = _e(outcome)
    return f'<span class="o {o}">{o}</span>'


def _text(value: Any) -> str:
    """Flat text for a free-form value (e.g. the sequence basis, which may be a mapping)."""
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_text(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value)
    return "" if value is None else str(value)


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], empty: str) -> str:
    """A table of already-escaped cells; ``empty`` is shown instead when there are no rows."""
    body = ["<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in row) + "</tr>" for row in rows]
    if not body:
        return f'<p class="muted">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(body) + "\n</tbody></table>"


def _kv(pairs: Iterable[tuple[str, str]]) -> str:
    rows = "\n".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in pairs)
    return f'<table class="kv"><tbody>\n{rows}\n</tbody></table>'


def _n(cell: str) -> str:
    return f'<td class="num">{cell}</td>'


def render_report_html(result: RunResult) -> str:
    """The report as a string (exposed for tests and for embedding)."""
    seq = result.sequence
    st = result.station
    verdict = _e(result.verdict)
    title = f"{_text(seq.get('id', ''))} {_text(seq.get('title', ''))}".strip()

    parts: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)} &mdash; {_e(result.run_id)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<header>",
        f"<h1>{_e(title)}</h1>",
        f'<p><span class="verdict {verdict}">{verdict}</span> {_e(result.reason)}</p>',
        _kv(
            [
                ("Sequence", _e(seq.get("id", ""))),
                ("Title", _e(_text(seq.get("title", "")))),
                ("Version", _e(_text(seq.get("version", "")))),
                ("Basis", _e(_text(seq.get("basis", "")))),
                ("Sequence file", _e(_text(seq.get("path", "")))),
                ("Sequence sha256", f"<code>{_e(_text(seq.get('sha256', '')))}</code>"),
                ("Run id", f"<code>{_e(result.run_id)}</code>"),
                ("Station", _e(_text(st.get("id", "")))),
                ("Station sha256", f"<code>{_e(_text(st.get('sha256', '')))}</code>"),
                ("Simulated", _e(_text(st.get("simulated", "")))),
                ("Virtual time", _e(_text(st.get("virtual_time", "")))),
                ("Started (UTC)", _e(result.started_utc)),
                ("Ended (UTC)", _e(result.ended_utc)),
                ("Duration (run clock)", _secs(result.sim_duration_s) + " s"),
                ("Duration (wall clock)", _secs(result.wall_duration_s) + " s"),
                ("Seed", _e(result.seed)),
                ("Operator", _e(result.operator or "")),
                ("Result schema", _e(result.schema_version)),
            ]
        ),
        "</header>",
        "<main>",
        "<h2>Parameters</h2>",
        _table(
            ["Name", "Value", "Default", "Overridden", "Description"],
            (
                [
                    f'<td class="overridden">{_e(p.name)}</td>' if p.overridden else _e(p.name),
                    _e(p.value),
                    _e(p.default),
                    "<strong>yes</strong>" if p.overridden else "no",
                    _e(p.doc),
                ]
                for p in result.parameters
            ),
            "No parameters.",
        ),
        "<h2>Faults injected</h2>",
        (
            "<ul>" + "".join(f"<li>{_e(f)}</li>" for f in result.faults) + "</ul>"
            if result.faults
            else '<p class="muted">None.</p>'
        ),
        "<h2>Devices</h2>",
        _table(
            ["Device", "Driver", "Identity"],
            (
                [
                    _e(d.name),
                    _e(d.driver),
                    "<br>".join(f"{_e(k)}: {_e(v)}" for k, v in d.identity.items()),
                ]
                for d in result.devices
            ),
            "No devices.",
        ),
        "<h2>Steps</h2>",
        _table(
            ["#", "Phase", "Step", "Kind", "Line", "Outcome", "Started (s)", "Ended (s)", "Message"],
            (
                [
                    _n(_e(s.index)),
                    _e(s.phase),
                    _e(s.name),
                    _e(s.kind),
                    _n(_e(s.line)),
                    _outcome(s.outcome),
                    _n(_secs(s.started)),
                    _n(_secs(s.ended)),
                    _e(s.message),
                ]
                for s in result.steps
            ),
            "No steps were run.",
        ),
        "<h2>Measurements</h2>",
        _table(
            ["Name", "Step", "Value", "Unit", "Low", "High", "Outcome", "t (s)", "How"],
            (
                [
                    _e(m.name),
                    _e(m.step),
                    _n(_num(m.value)),
                    _e(m.unit),
                    _n(_num(m.low)),
                    _n(_num(m.high)),
                    _outcome(m.outcome),
                    _n(_secs(m.t)),
                    _e(m.how),
                ]
                for m in result.measurements
            ),
            "No measurements.",
        ),
        "<h2>Marks</h2>",
        _table(
            ["Mark", "t (s)"],
            ([_e(k), _n(_secs(v))] for k, v in result.marks.items()),
            "No marks.",
        ),
        "<h2>Safe state read-back</h2>",
        _table(
            ["Device", "Safe", "Detail", "t (s)"],
            (
                [
                    _e(r.device),
                    '<span class="o PASS">safe</span>' if r.safe else '<span class="o FAIL">NOT SAFE</span>',
                    _e(r.detail),
                    _n(_secs(r.t)),
                ]
                for r in result.safe_state
            ),
            "No safe-state read-back recorded.",
        ),
        "</main>",
        "<footer>",
        f"<p>hil-bench {_e(result.code_version)} &middot; run <code>{_e(result.run_id)}</code> &middot; "
        "rendered from result.json</p>",
        "<p><strong>End of report</strong></p>",
        "</footer>",
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(parts)


def write_report_html(result: RunResult, path: Path) -> None:
    """Write the HTML report for ``result`` to ``path`` (UTF-8)."""
    Path(path).write_text(render_report_html(result), encoding="utf-8", newline="\n")
