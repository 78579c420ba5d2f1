"""The document of a run that never sealed its record (killed, crashed, power lost): INCOMPLETE.

Such a folder has no manifest and usually no ``result.json``; what it has is the hash-chained
event log up to the kill, the raw CAN traffic and the inputs. This document shows what the log
proves (how far the chain holds, the run's identity, its steps, its last events) and the files
left behind. It states no verdict and is not a test report in the sense of ISO/IEC 17025 7.8:
only events of the leading intact part of the chain are used (``bench.record.verify``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.events import EventKind
from bench.record.verify import Unsealed
from bench.report.render import _CSS, _e, _kv, _table, load_events, report_id

# Events shown at the end of the document: enough to see what the run was doing when it stopped.
LAST_EVENTS = 25
# The log's own keys, shown in their own columns rather than among the fields.
_OWN = frozenset({"seq", "t", "kind", "prev"})

_EXTRA_CSS = """
.INCOMPLETE{background:#444}
.incomplete{border:3px solid #b00020;padding:.5em .8em;background:#fdecee;font-weight:bold}
"""


def _fields(event: dict[str, Any]) -> str:
    text = json.dumps({k: v for k, v in event.items() if k not in _OWN}, ensure_ascii=False)
    return _e(text if len(text) <= 300 else text[:300] + " ...")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def build_incomplete_html(run_dir: Path, state: Unsealed) -> str:
    walk = state.walk
    intact = walk.intact_lines if walk is not None else 0
    events = load_events(run_dir)[:intact]
    started = next((e for e in events if e.get("kind") == EventKind.RUN_STARTED), {})
    run_id = str(started.get("run_id") or run_dir.name)
    rid = report_id(run_id)
    seq = _dict(started.get("sequence"))
    station = _dict(started.get("station"))
    params = _dict(started.get("parameters"))
    parts: list[str] = []
    a = parts.append

    a(f"<header><h1>Record of an incomplete run</h1><p><b>{_e(seq.get('title', ''))}</b>")
    a(f" &mdash; {_e(seq.get('id', 'unknown sequence'))} v{_e(seq.get('version', '?'))}</p>")
    a(f'<p>Run record: <b id="rid">{_e(rid)}</b> &nbsp; Verdict: <span class="verdict INCOMPLETE">INCOMPLETE</span>')
    a("</p></header>")
    a(
        '<div class="incomplete">INCOMPLETE: this run never sealed its record (no manifest.json): the controller '
        "stopped before the end of the run (killed, crashed or lost power). No verdict is stated. This document is "
        "not a test report in the sense of ISO/IEC 17025 7.8; it shows what the record holds up to its last intact "
        "event.</div>"
    )

    a("<h2>1. State of the record</h2>")
    rows = [("", "Event log", _e(state.summary()))]
    rows += [("", "Problem", _e(f"{p.where}: {p.message}")) for p in state.problems]
    if (run_dir / "result.json").is_file():
        rows.append(("", "result.json", "present, but not sealed by a manifest: its verdict is not reported"))
    a(_kv(rows))

    a("<h2>2. The run, as recorded when it started</h2>")
    if started:
        overridden = set(started.get("overridden") or [])
        a(
            _kv(
                [
                    ("", "Run id", _e(run_id)),
                    ("", "Started (UTC)", _e(started.get("started_utc", ""))),
                    ("", "Sequence", _e(f"{seq.get('id')}, version {seq.get('version')}: {seq.get('title', '')}")),
                    ("", "Sequence SHA-256", f'<span class="hash">{_e(seq.get("sha256", ""))}</span>'),
                    ("", "Station", _e(station.get("id", ""))),
                    (
                        "",
                        "Parameters",
                        ", ".join(
                            f"{_e(k)} = {_e(v)}" + (" <b>(overridden)</b>" if k in overridden else "")
                            for k, v in params.items()
                        ),
                    ),
                    ("", "Faults injected", _e(", ".join(map(str, started.get("faults") or [])) or "none")),
                    ("", "Seed", _e(started.get("seed", ""))),
                ]
            )
        )
    else:
        a('<p class="na">no intact run_started event: the run cannot be identified from its record</p>')

    a("<h2>3. Steps</h2>")
    steps: dict[str, list[str]] = {}
    for e in events:
        name = e.get("step")
        if e.get("kind") == EventKind.STEP_STARTED and isinstance(name, str):
            steps[name] = [_e(name), _e(f"{e.get('t')} s"), "not finished", ""]
        elif e.get("kind") == EventKind.STEP_ENDED and isinstance(name, str) and name in steps:
            steps[name][2] = _e(e.get("outcome", ""))
            steps[name][3] = _e(e.get("message", ""))
    a(_table(["step", "started", "outcome", "message"], steps.values(), "no step started"))

    a(f"<h2>4. The last {min(LAST_EVENTS, len(events))} intact events</h2>")
    a(
        _table(
            ["#", "t (s)", "event", "fields"],
            ([_e(e.get("seq")), _e(e.get("t")), _e(e.get("kind")), _fields(e)] for e in events[-LAST_EVENTS:]),
            "no intact event",
        )
    )

    a("<h2>5. Files left in the run folder (not sealed)</h2>")
    a(
        _table(
            ["file", "bytes"],
            ([_e(rel), _e((run_dir / rel).stat().st_size)] for rel in state.files),
            "no other file",
        )
    )
    a(f'<p class="end">End of incomplete record {_e(rid)}</p>')
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>INCOMPLETE {_e(rid)}</title>'
        f"<style>{_CSS}{_EXTRA_CSS}</style></head><body>{''.join(parts)}</body></html>\n"
    )
