"""The ISO/IEC 17025:2017 test report of a run (HTML, and PDF from the same HTML), from its record.

Inputs are only the files of the run folder: ``result.json``, ``events.jsonl``, ``inputs/``
(the station file as run: laboratory, equipment register) and ``can.mf4`` / ``can.blf``.
Nothing is taken from live state, so a report can be re-rendered, amended or audited later.

Every item of 7.8.2.1 a-p, 7.8.3.1 and 7.8.6 appears in the document under its clause number,
either with its content or with "not applicable" and the reason (``docs/reports.md`` maps each
item to its source). The PDF (typeset.py) repeats the report id and "page n of N" on every
page, as the ``@page`` margin boxes of the CSS say for a browser's print, and the document ends
with an end-of-report mark.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.errors import LoadError
from bench.events import EventKind
from bench.report.conformity import basis_html, deviations_html, record_sequence, statements_html
from bench.report.htmltext import e as _e
from bench.report.htmltext import num as _num
from bench.report.operator_entries import operator_rows
from bench.result import RunResult
from bench.sequence import Sequence as SequenceModel
from bench.suggest import did_you_mean

REPORT_PREFIX = "TR-"
NA = "not applicable"


def report_id(run_id: str, amendment: int = 0) -> str:
    return f"{REPORT_PREFIX}{run_id}" + (f"-A{amendment}" if amendment else "")


def load_events(run_dir: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    path = run_dir / "events.jsonl"
    if not path.is_file():
        return out
    for line in path.read_bytes().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # an incomplete last line of a crashed run: the report shows what is whole
    return out


def _station_doc(run_dir: Path, events: list[dict[str, Any]]) -> dict[str, Any]:
    """The station file as run (inputs/), parsed; {} when it cannot be read."""
    from bench.yamlsource import load_yaml, plain

    started = next((e for e in events if e.get("kind") == EventKind.RUN_STARTED), {})
    rel = (started.get("inputs") or {}).get("station")
    if not rel or not (run_dir / rel).is_file():
        return {}
    try:
        doc = plain(load_yaml(run_dir / rel, "station").root)
    except Exception:  # a report is still rendered from a station file that no longer parses
        return {}
    return doc if isinstance(doc, dict) else {}


def _kv(rows: Iterable[tuple[str, str, str]]) -> str:
    """Rows of (clause, label, html value)."""
    body = "".join(
        f'<tr><th><span class="cl">{_e(cl)}</span> {_e(label)}</th><td>{value}</td></tr>' for cl, label, value in rows
    )
    return f'<table class="kv">{body}</table>'


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], empty: str) -> str:
    rows = list(rows)
    if not rows:
        return f'<p class="muted">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _dtc_rows(result: RunResult) -> list[list[str]]:
    """One row per DTC read at the start or the end of the run; a read with none or an error is one row."""
    rows = []
    for read in result.dtcs:
        head = [_e(read.device), _e(read.at), _num(read.t)]
        if read.error:
            rows.append([*head, _na(f"not read: {read.error}"), "", ""])
        elif not read.dtcs:
            rows.append([*head, "none", "", ""])
        rows += [[*head, _e(d.code), f"0x{d.status:02X}", _e(", ".join(d.flags))] for d in read.dtcs]
    return rows


def _na(reason: str) -> str:
    return f'<span class="na">{NA}: {_e(reason)}</span>'


def _missing(reason: str) -> str:
    """A mandatory item the station file does not give: never "not applicable" (see missing_mandatory)."""
    return f'<span class="missing">MISSING (mandatory): {_e(reason)}</span>'


def missing_mandatory(lab: dict[str, Any], amendment: dict[str, Any] | None) -> list[str]:
    """The items of 7.8.2.1 every report must state that the station file does not give.

    Such a report is still rendered (a simulated or development run needs one), but marked NOT FOR
    ISSUE in its header, its title and the footer of every page, and it names what is missing.
    """
    item = lab.get("item") or {}
    out = []
    if not (lab.get("name") and lab.get("address")):
        out.append("7.8.2.1 b) name and address of the laboratory")
    if not lab.get("location"):
        out.append("7.8.2.1 c) location where the tests were performed")
    if not item.get("description"):
        out.append("7.8.2.1 g) description of the item tested")
    if not (amendment or lab.get("authorised_by")):
        out.append("7.8.2.1 o) person authorising the report")
    return out


def _outcome(outcome: str, recorded: bool) -> str:
    """The outcome cell; a measurement without limits that was taken is "recorded": it has no verdict."""
    if recorded and outcome == "PASS":
        return '<span class="rec">recorded</span>'
    return f'<span class="o {_e(outcome)}">{_e(outcome)}</span>'


def _limits(m: Any) -> str:
    lo = None if m.low is None else f"&ge; {_num(m.low)}"
    hi = None if m.high is None else f"&le; {_num(m.high)}"
    return ", ".join(x for x in (lo, hi) if x) + f" {_e(m.unit)}" if (lo or hi) else "no limit"


# A step gets a figure of its own only where the whole-run figure cannot show it: a step shorter
# than MIN_STEP_S is a row of the steps table, and one longer than a tenth of the run (ZOOM) is
# already readable in the whole-run figure. Many timed steps (a test at several points) thus
# share the whole-run figure instead of a page each.
MIN_STEP_S = 1.0
ZOOM = 10.0
MAX_STEP_FIGURES = 3
MAX_DETAIL_FIGURES = 4
DETAIL_S = 2.0  # either side of the recorded instants
DETAIL_ZOOM = 2.0  # the instants a measurement is taken between are worth a figure from this zoom on


def _plots(
    run_dir: Path, result: RunResult, events: list[dict[str, Any]], sequence: SequenceModel | None
) -> list[tuple[str, str]]:
    """(caption, base64 PNG) of the key signals: the whole run, short timed steps, and the recorded instants."""
    import numpy as np

    from bench.report import plots

    started = next((e for e in events if e.get("kind") == EventKind.RUN_STARTED), {})
    dbcs = [run_dir / p for p in started.get("dbc", []) if (run_dir / p).is_file()]
    display, interval = _display_signals(run_dir, started, sequence)
    traces: dict[str, plots.Trace] = {}
    if dbcs:
        wanted = {n: n.split(".", 1)[1] for n in display}
        # A damaged or missing raw log must not stop the report; the events still plot.
        with contextlib.suppress(Exception):
            traces.update(plots.decode_blf(run_dir / "can.blf", dbcs, wanted))
    # Signals not on CAN: from the events (snapshots every record_interval, read-backs, conditions).
    # The record holds nothing finer, so the panel says how often the trace was recorded.
    units = _signal_units(run_dir, started, [n for n in display if n not in traces])
    note = f"recorded every {interval} (record_interval) and at events, held in between"
    for name in display:
        if name in traces:
            continue
        ts: list[float] = []
        vs: list[float] = []
        for e in events:
            vals = (
                e.get("values")
                if e.get("kind") in (EventKind.SNAPSHOT, EventKind.CONDITION_MET, EventKind.SAFE_STATE)
                else None
            )
            if isinstance(vals, dict) and isinstance(vals.get(name), int | float):
                ts.append(float(e["t"]))
                vs.append(float(vals[name]))
        if ts:
            traces[name] = plots.Trace(np.asarray(ts), np.asarray(vs), units.get(name, ""), note=note)
    if not traces:
        return []
    traces = {n: traces[n] for n in display if n in traces}  # in the order the sequence lists them
    markers = [plots.Marker(0.0, "fault injected: " + ", ".join(result.faults), "#6f42c1")] if result.faults else []
    for e in events:
        k = e.get("kind")
        if k == EventKind.CONDITION_MET and e.get("mark"):
            markers.append(plots.Marker(float(e.get("sample_t", e["t"])), f"@{e['mark']}"))
        elif k == EventKind.MONITOR_TRIPPED:
            markers.append(plots.Marker(float(e.get("sample_t") or e["t"]), f"trip: {e.get('monitor')}", "#b30000"))
        elif k == EventKind.CLEANUP_STARTED:
            markers.append(plots.Marker(float(e["t"]), "cleanup", "#555555"))
    for name, tr in traces.items():
        if tr.states and name.endswith("contactors"):
            opened = [k for k, v in tr.states.items() if v.upper() == "OPEN"]
            if opened:
                is_open = np.isin(tr.v, opened)
                edges = np.flatnonzero(is_open[1:] & ~is_open[:-1])
                markers += [plots.Marker(float(tr.t[i + 1]), "contactor open", "#1e7e34") for i in edges[:5]]
    markers = plots.coloured(markers)  # one colour per recorded instant, the same in every figure
    # One line per distinct limit of a signal, naming the measurements that share it: a sequence
    # that measures one signal at 200 points would otherwise draw 400 lines and labels on top of
    # each other (seconds of drawing, and unreadable).
    shared: dict[str, dict[tuple[float, str, str], list[str]]] = {}
    for m in result.measurements:
        sig = m.how.split(" of ", 1)[1].split(" ", 1)[0] if " of " in m.how else None
        if sig in traces:
            for v, what in ((m.low, "min"), (m.high, "max")):
                if v is not None:
                    shared.setdefault(sig, {}).setdefault((float(v), what, m.unit), []).append(m.name)
    limits = {
        sig: [(v, f"{_measurement_names(names)} {what} {v:g} {unit}") for (v, what, unit), names in lines.items()]
        for sig, lines in shared.items()
    }
    out: list[tuple[str, str]] = []
    whole = plots.figure(f"{result.sequence.get('id')}: key signals, whole run", traces, None, markers, limits)
    if whole:
        out.append(("Key signals over the whole run, with limits and events", whole))
    total = max(result.sim_duration_s, 1e-9)
    # The instants a reaction time is measured between, DETAIL_S either side, in one figure per cluster.
    instants = sorted(mk.t for mk in markers if mk.label.startswith("@"))
    clusters: list[list[float]] = []
    for t in instants:
        if clusters and t - clusters[-1][-1] <= 2 * DETAIL_S:
            clusters[-1].append(t)
        else:
            clusters.append([t])
    # Within the run: nothing was recorded before its start or after its end.
    details = [(max(c[0] - DETAIL_S, 0.0), min(c[-1] + DETAIL_S, total), c) for c in clusters[:MAX_DETAIL_FIGURES]]
    details = [d for d in details if d[1] - d[0] <= total / DETAIL_ZOOM]  # else the whole run shows them
    steps = []
    for s in result.steps:
        span = s.ended - s.started
        if s.phase != "steps" or s.kind not in ("wait_until", "wait") or span < MIN_STEP_S:
            continue
        pad = max(1.0, 0.02 * span)
        lo, hi = s.started - pad, s.ended + pad
        if hi - lo > total / ZOOM or any(d_lo <= lo and hi <= d_hi for d_lo, d_hi, _ in details):
            continue
        steps.append((s, lo, hi))
    for s, lo, hi in steps[:MAX_STEP_FIGURES]:
        png = plots.figure(f"step '{s.name}'", traces, (lo, hi), markers, limits)
        if png:
            out.append((f"Step '{s.name}' ({s.started:.3f} s to {s.ended:.3f} s)", png))
    for lo, hi, c in details:
        png = plots.figure("detail around the recorded instants", traces, (lo, hi), markers, limits)
        if png:
            names = ", ".join(mk.label for mk in markers if c[0] <= mk.t <= c[-1] and mk.label.startswith("@"))
            out.append((f"Detail: {names}, up to {DETAIL_S:g} s either side ({lo:.3f} s to {hi:.3f} s)", png))
    return out


def _search_probes(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The probe points of each search step (bench/stepkinds/search.py), by step, in the order probed."""
    out: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        if e.get("kind") == EventKind.SEARCH_PROBE:
            out.setdefault(str(e["step"]), []).append(e)
    return out


def _measurement_names(names: list[str]) -> str:
    """The measurements that share a limit line: up to three by name, more as first … last (count)."""
    return ", ".join(names) if len(names) <= 3 else f"{names[0]} … {names[-1]} ({len(names)} measurements)"


def _display_signals(run_dir: Path, started: dict[str, Any], sequence: SequenceModel | None) -> tuple[list[str], str]:
    """The sequence's display signals and its record_interval (as written).

    From the sequence the run loaded; a report rendered later reads them from the copy in inputs/
    (parsing it again costs seconds for a long sequence, so a run's own report does not).
    """
    from bench.yamlsource import load_yaml, plain

    if sequence is not None:
        return [s for s in sequence.display if "." in s], sequence.record_interval
    rel = (started.get("inputs") or {}).get("sequence")
    try:
        doc = plain(load_yaml(run_dir / rel, "sequence").root) if rel else {}
    except Exception:
        doc = {}
    doc = doc if isinstance(doc, dict) else {}
    shown = doc.get("display", [])
    interval = str(doc.get("record_interval") or SequenceModel.model_fields["record_interval"].default)
    return [s for s in shown if isinstance(s, str) and "." in s], interval


def _signal_units(run_dir: Path, started: dict[str, Any], names: Sequence[str]) -> dict[str, str]:
    """Units of signals not on CAN, from the drivers of the station as run (inputs/); a device whose
    driver cannot be built from the copy (a DBC path that is not kept) gives none."""
    from bench.plan import build_catalog, build_drivers
    from bench.station import load_station

    rel = (started.get("inputs") or {}).get("station")
    if not names or not rel:
        return {}
    try:
        station = load_station(run_dir / rel)
    except Exception:  # a station file that no longer parses: the plots go without units
        return {}
    units: dict[str, str] = {}
    for device in sorted({n.split(".", 1)[0] for n in names}):
        with contextlib.suppress(Exception):
            catalog = build_catalog(build_drivers(station, [device]))
            units.update({n: catalog[n].unit.text for n in names if n in catalog})
    return units


_CSS = """
@page{size:A4;margin:22mm 15mm 20mm 15mm;
@top-left{content:"Test report " string(rid);font:8pt 'DejaVu Sans';color:#444}
@top-right{content:string(lab);font:8pt 'DejaVu Sans';color:#444}
@bottom-left{content:"Report " string(rid);font:8pt 'DejaVu Sans';color:#444}
@bottom-right{content:"page " counter(page) " of " counter(pages);font:8pt 'DejaVu Sans';color:#444}}
body{font-family:'DejaVu Sans',sans-serif;font-size:9.5pt;color:#1b1b1b;line-height:1.35;max-width:60em;margin:1em auto;padding:0 1em}
#rid{string-set:rid content()}#labname{string-set:lab content()}
h1{font-size:16pt;margin:.1em 0}h2{font-size:11.5pt;margin-top:1.3em;border-bottom:1px solid #bbb;padding-bottom:.15em}
table{border-collapse:collapse;width:100%;margin:.4em 0;font-size:8.5pt}
th,td{border:1px solid #ccc;padding:.2em .4em;text-align:left;vertical-align:top}th{background:#f1f1f1}
table.kv th{width:17em}.cl{color:#666;font-weight:normal;font-size:7.5pt}
.verdict{display:inline-block;padding:.15em .7em;border-radius:.25em;font-weight:bold;color:#fff}
.PASS{background:#1e7e34}.FAIL{background:#c82333}.ERROR{background:#b35900}.ABORTED{background:#6f42c1}.SKIPPED{background:#6c757d}
span.o{display:inline-block;padding:0 .35em;border-radius:.2em;color:#fff;font-size:8pt}
.na{color:#666;font-style:italic}.nb{white-space:nowrap}.muted{color:#666}.hash{font-family:'DejaVu Sans Mono',monospace;font-size:7.5pt;word-break:break-all}
.stmt{border-left:3px solid #1f4e9c;padding:.2em .6em;background:#f6f8fb}
figure{margin:.6em 0;page-break-inside:avoid}figure img{width:100%}figcaption{font-size:8pt;color:#444}
.amend{border:2px solid #b35900;padding:.4em .7em;background:#fff6ec}
.nfi{border:3px solid #b00020;padding:.4em .7em;background:#fdecee}.missing{color:#b00020;font-weight:bold}
.rec{font-style:italic;color:#444}
.end{text-align:center;margin-top:2em;font-weight:bold;border-top:2px solid #333;padding-top:.4em}
"""


# A report that lacks a mandatory item says so on every page, not only on the first.
_NOT_FOR_ISSUE_CSS = """
@page{@bottom-center{content:"NOT FOR ISSUE";font:bold 8pt 'DejaVu Sans';color:#b00020}}
"""


def build_html(
    run_dir: Path,
    *,
    issued: str | None = None,
    amendment: dict[str, Any] | None = None,
    with_plots: bool = True,
    sequence: SequenceModel | None = None,
) -> str:
    """The report document for the run in ``run_dir`` (amended when ``amendment`` is given)."""
    result = RunResult.model_validate_json((run_dir / "result.json").read_text(encoding="utf-8"))
    events = load_events(run_dir)
    station = _station_doc(run_dir, events)
    lab = station.get("laboratory") or {}
    rid = amendment["report_id"] if amendment else report_id(result.run_id)
    issued = issued or result.ended_utc[:10]
    seq = result.sequence
    basis = seq.get("basis") or {}
    customer = lab.get("customer") or {}
    item = lab.get("item") or {}
    parts: list[str] = []
    a = parts.append
    missing = missing_mandatory(lab, amendment)
    not_for_issue = " \u2014 NOT FOR ISSUE" if missing else ""

    a(f'<header><p class="muted">ISO/IEC 17025:2017 7.8.2.1 a)</p><h1>Test Report{not_for_issue}</h1>')
    a(f"<p><b>{_e(seq.get('title', ''))}</b> &mdash; {_e(seq.get('id'))} v{_e(seq.get('version'))}</p>")
    a(
        f'<p>Report id: <b id="rid">{_e(rid)}</b> &nbsp; Verdict: <span class="verdict {_e(result.verdict)}">{_e(result.verdict)}</span></p></header>'
    )
    if amendment:
        a(
            '<div class="amend"><b>Amended report (ISO/IEC 17025 7.8.8).</b> '
            f"This report {_e(rid)} supersedes report {_e(amendment['supersedes'])}, which remains on record unchanged. "
            f"Reason: {_e(amendment['reason'])}. Amended by {_e(amendment['by'])} on {_e(amendment['issued'])}.</div>"
        )

    if missing:
        a(
            '<div class="nfi"><b>NOT FOR ISSUE.</b> This document may not be issued as a test report: the '
            "station file does not give these items, which ISO/IEC 17025:2017 7.8.2.1 requires in every report: "
            + "; ".join(_e(x) for x in missing)
            + ". A station whose reports are issued states them in its <code>laboratory:</code> section.</div>"
        )
    a("<h2>1. Identification</h2>")
    a(
        _kv(
            [
                ("7.8.2.1 a)", "Title", "Test Report"),
                (
                    "7.8.2.1 b)",
                    "Laboratory",
                    f'<span id="labname">{_e(lab["name"])}</span>, {_e(lab.get("address", ""))}'
                    if lab.get("name")
                    else _missing("no laboratory stated in the station file"),
                ),
                (
                    "7.8.2.1 c)",
                    "Location of the tests",
                    _e(lab["location"]) if lab.get("location") else _missing("no location stated in the station file"),
                ),
                (
                    "7.8.2.1 d)",
                    "Report identification",
                    f"{_e(rid)} (run {_e(result.run_id)}); every page carries this id and &quot;page n of N&quot;; "
                    "the report ends with an end-of-report mark",
                ),
                (
                    "7.8.2.1 e)",
                    "Customer",
                    f"{_e(customer['name'])}" + (f", {_e(customer['contact'])}" if customer.get("contact") else "")
                    if customer.get("name")
                    else _na("internal test, no customer stated in the station file"),
                ),
                ("7.8.2.1 j)", "Date of issue", _e(issued)),
                (
                    "7.8.2.1 o)",
                    "Authorised by",
                    (_e(amendment["by"]) if amendment else _e(lab["authorised_by"]))
                    if (amendment or lab.get("authorised_by"))
                    else _missing("no authorising person stated in the station file"),
                ),
            ]
        )
    )

    a("<h2>2. Method (7.8.2.1 f)</h2>")
    a(
        _kv(
            [
                (
                    "7.8.2.1 f)",
                    "Sequence",
                    f"{_e(seq.get('id'))}, version {_e(seq.get('version'))}: {_e(seq.get('title'))}",
                ),
                ("7.8.2.1 f)", "Basis", basis_html(basis)),
                ("7.8.2.1 f)", "Sequence SHA-256", f'<span class="hash">{_e(seq.get("sha256"))}</span>'),
                ("", "Station", _e(f"{result.station.get('id')}: {result.station.get('title', '')}")),
                ("", "Controller software", _e(f"hil-bench {result.code_version}")),
                ("", "Operator", _e(result.operator) if result.operator else _na("not recorded")),
                (
                    "7.8.2.1 k)",
                    "Sampling plan and method",
                    _e(lab["sampling"])
                    if lab.get("sampling")
                    else _na("the item was tested as submitted; no sampling by the laboratory"),
                ),
            ]
        )
    )

    a("<h2>3. Item tested (7.8.2.1 g, h)</h2>")
    dut = item.get("device")
    ident = next((d for d in result.devices if d.name == dut), None)
    ident_txt = ", ".join(f"{k}: {v}" for k, v in ident.identity.items()) if ident and ident.identity else ""
    a(
        _kv(
            [
                (
                    "7.8.2.1 g)",
                    "Description",
                    _e(item["description"])
                    if item.get("description")
                    else _missing("no item described in the station file"),
                ),
                (
                    "7.8.2.1 g)",
                    "Identification (read from the item)",
                    _e(f"{dut}: {ident_txt}")
                    if ident_txt
                    else _na(
                        f"the item{' ' + dut if dut else ''} reported no identity (no UDS identification on this station)"
                    ),
                ),
                *operator_rows(result),
                (
                    "7.8.2.1 g)",
                    "Condition",
                    _e(item["condition"]) if item.get("condition") else _na("no condition stated on receipt"),
                ),
                (
                    "7.8.2.1 h)",
                    "Date of receipt",
                    _e(item["received"])
                    if item.get("received")
                    else _na("date of receipt not recorded in the station file"),
                ),
                ("7.8.2.1 i)", "Date(s) of performance", _e(f"{result.started_utc} to {result.ended_utc} (UTC)")),
            ]
        )
    )

    a("<h2>4. Test conditions (7.8.3.1 a)</h2>")
    env = result.environment
    sim = bool(result.station.get("simulated"))
    a(
        _kv(
            [
                (
                    "7.8.3.1 a)",
                    "Ambient temperature",
                    _e(env["temperature"]) if env.get("temperature") else _na("not measured on this station"),
                ),
                (
                    "7.8.3.1 a)",
                    "Relative humidity",
                    _e(env["humidity"]) if env.get("humidity") else _na("not measured on this station"),
                ),
                ("7.8.3.1 a)", "Source of the values", _e(env.get("source", "")) or _na("no environment stated")),
                (
                    "",
                    "Bench",
                    _e(
                        ("simulated station (in-process models)" if sim else "physical station")
                        + (", virtual time" if result.station.get("virtual_time") else ", wall-clock time")
                        + f", seed {result.seed}"
                    ),
                ),
                (
                    "",
                    "Parameters",
                    ", ".join(
                        f"{_e(p.name)} = {_e(p.value)}" + (" <b>(overridden)</b>" if p.overridden else "")
                        for p in result.parameters
                    ),
                ),
            ]
        )
    )

    a("<h2>5. Equipment and calibration (6.4.13, 6.5)</h2>")
    ids = {d.name: d.identity for d in result.devices}

    def _read(q: dict[str, Any]) -> str:
        got = ids.get(q["device"], {})
        if not got:
            return "not read"
        same = all(str(got.get(k, "")) == str(q[k]) for k in ("maker", "model", "serial"))
        return "matches the register" if same else "DIFFERS: " + ", ".join(f"{k}: {v}" for k, v in got.items())

    a(
        _table(
            [
                "asset id",
                "instrument",
                "serial",
                "calibration certificate",
                "calibrated / due",
                "status",
                "identity at connect",
            ],
            (
                [
                    f'<span class="nb">{_e(q["asset_id"])}</span>',
                    _e(f"{q['maker']} {q['model']}" + (f" (firmware {q['firmware']})" if q.get("firmware") else "")),
                    f'<span class="nb">{_e(q["serial"])}</span>',
                    f'<span class="nb">{_e(q["certificate"] or "none")}</span>',
                    _e(f"{q['calibrated']} / {q['due']}" if q["due"] else "not calibrated"),
                    _e(q["status"]),
                    _e(_read(q)),
                ]
                for q in result.equipment
            ),
            "no equipment register on this station: measurement uncertainty from instruments is not evaluated",
        )
    )
    acc = [
        [_e(q["asset_id"]), _e(sig), _e(t)] for q in result.equipment for sig, ts in q["accuracy"].items() for t in ts
    ]
    if acc:
        a(_table(["asset id", "signal", "accuracy specification"], acc, ""))

    a("<h2>6. Results (7.8.2.1 m, 7.8.3.1 c)</h2>")
    a(
        f'<p>Overall verdict: <span class="verdict {_e(result.verdict)}">{_e(result.verdict)}</span> &mdash; {_e(result.reason)}</p>'
    )
    a(
        _table(
            ["measurement", "value", "expanded uncertainty U (k = 2)", "unit", "limits", "conformity", "how"],
            (
                [
                    _e(m.name),
                    _num(m.value),
                    _num(m.uncertainty)
                    if m.uncertainty is not None
                    # The one budget line of an unknown U says why: "not evaluated: <signal>: <what is missing>".
                    else '<span class="na">not evaluated</span>'
                    + "".join(f": {_e(b.partition(': ')[2])}" for b in m.uncertainty_budget),
                    _e(m.unit),
                    _limits(m),
                    _outcome(m.outcome, not m.has_limits),
                    _e(m.how),
                ]
                for m in result.measurements
            ),
            "no measurements were taken",
        )
    )
    budgets = [m for m in result.measurements if m.uncertainty_budget and m.uncertainty is not None]
    if budgets:
        a(
            "<p><b>Uncertainty budgets</b> (GUM: rectangular components combined in quadrature, U = 2&middot;u<sub>c</sub>):</p><ul>"
        )
        for m in budgets:
            a(f"<li>{_e(m.name)}: " + "; ".join(_e(b) for b in m.uncertainty_budget) + "</li>")
        a("</ul>")
    for step, probes in _search_probes(events).items():
        first = probes[0]
        a(
            f"<p><b>Probe points of search &quot;{_e(step)}&quot;</b> ({_e(first['name'])}), in the order probed; "
            "the condition was watched for the dwell at each:</p>"
        )
        a(
            _table(
                ["probe", f"{_e(first['signal'])} [{_e(first['unit'])}]", "condition", "set at [s]", "true at [s]"],
                (
                    [
                        str(p["probe"]),
                        _num(p["value"]),
                        "<b>true</b>" if p["met"] else "false",
                        _num(p["commanded_t"]),
                        _num(p["sample_t"]),
                    ]
                    for p in probes
                ),
                "",
            )
        )

    a("<h2>7. Statement of conformity (7.8.6)</h2>")
    rule = result.decision_rule
    rule_text = (
        "guard band w = U (ILAC-G8:09/2019 4.2.2): a result is accepted only if it lies inside the limits by at "
        "least its expanded uncertainty U; probability of false acceptance below 2.5 %"
        if rule == "guard_band"
        else "simple acceptance (ILAC-G8:09/2019 4.2.1, w = 0): a result is accepted if it lies within the limits; "
        "the probability of false acceptance can reach 50 % for a result at a limit"
    )
    a(f'<p class="stmt">Decision rule (7.8.6.1, 7.8.6.2 c): {_e(rule_text)}.</p>')
    # 7.8.6.2 b): each limit conforms to the specification its origin names, never to the basis as a whole.
    model = sequence if sequence is not None else record_sequence(run_dir, events)
    a(
        '<p class="stmt">Specification met (7.8.6.2 b): each limit is stated against its own origin: a regulation '
        "only where the sequence declares the limit to be the regulation's, the item specification, or the "
        "laboratory's method.</p>"
    )
    a(statements_html(result.measurements, model, rule, str(seq.get("id"))))

    a("<h2>8. Deviations from the method (7.8.2.1 n)</h2>")
    a(deviations_html(model, result.deviations))

    a("<h2>9. Results from external providers (7.8.2.1 p)</h2>")
    ext = [q for q in result.equipment if q.get("external")]
    if ext:
        a(
            "<ul>"
            + "".join(f"<li>{_e(q['asset_id'])}: results provided by {_e(q['external'])}</li>" for q in ext)
            + "</ul>"
        )
    else:
        a("<p>None: every result in this report was obtained by the laboratory itself.</p>")

    a("<h2>10. Steps and safe state</h2>")
    # Steps that only took a value without limits, or an operator's text, carry no verdict either.
    recorded_steps = {m.step for m in result.measurements if not m.has_limits}
    recorded_steps |= {e.step for e in result.operator_entries}
    a(
        _table(
            ["#", "phase", "step", "outcome", "start [s]", "end [s]", "message"],
            (
                [
                    str(s.index + 1),
                    _e(s.phase),
                    _e(s.name),
                    _outcome(s.outcome, s.name in recorded_steps),
                    _num(s.started),
                    _num(s.ended),
                    _e(s.message),
                ]
                for s in result.steps
            ),
            "no steps ran",
        )
    )
    a(
        _table(
            ["device", "safe", "read back"],
            ([_e(s.device), "yes" if s.safe else "<b>NO</b>", _e(s.detail)] for s in result.safe_state),
            "no safe state was read back",
        )
    )
    a("<h3>Diagnostic trouble codes</h3>")
    a(
        _table(
            ["device", "read", "t [s]", "DTC", "status", "status bits"],
            _dtc_rows(result),
            "no device of this run has a DTC memory the bench reads (no UDS on this station)",
        )
    )

    if with_plots:
        figs = _plots(run_dir, result, events, sequence)
        if figs:
            a("<h2>11. Plots of key signals</h2>")
            for caption, png in figs:
                a(
                    f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{png}"><figcaption>{_e(caption)}</figcaption></figure>'
                )

    a("<h2>12. Record</h2>")
    a(
        "<p>The raw record of this test (hash-chained event log, raw CAN traffic as BLF and MF4 with the DBC attached, "
        "inputs, result.json) is kept in the run folder; its manifest lists the SHA-256 of every file and is signed "
        "with the station key. <code>bench verify</code> proves it unchanged.</p>"
    )
    a('<h2>13. Statements</h2><p class="stmt">7.8.2.1 l) The results relate only to the items tested.</p>')
    a(
        '<p class="stmt">7.8.2.1 NOTE: This report shall not be reproduced except in full without the written '
        "approval of the laboratory.</p>"
    )
    a(f'<p class="end">End of report {_e(rid)}</p>')
    title = f"Test Report {rid}{not_for_issue}"
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{_CSS}{_NOT_FOR_ISSUE_CSS if missing else ''}</style></head><body>{''.join(parts)}</body></html>\n"
    )


def write_pdf(html_text: str, target: Path) -> Path:
    """PDF from the same HTML, typeset by Typst (typeset.py); fonts are the system's DejaVu, nothing is fetched."""
    from bench.report import typeset

    return typeset.write_pdf(html_text, target)


def render_report(
    run_dir: Path,
    out_dir: Path,
    *,
    pdf: bool = True,
    amendment: dict[str, Any] | None = None,
    issued: str | None = None,
) -> list[Path]:
    text = build_html(run_dir, amendment=amendment, issued=issued)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path = out_dir / "report.html"
    html_path.write_text(text, encoding="utf-8")
    written = [html_path]
    if pdf:
        written.append(write_pdf(text, out_dir / "report.pdf"))
    return written


def render_campaign(runs: Sequence[Path], output: Path, trends: Sequence[str] = ()) -> Path:
    """A summary over many runs: one row per run with its report id, verdict and measurements,
    and for each name in ``trends`` that measurement's X/MR control chart across the runs."""
    # Amendment folders (<run>.A1) and anything else without a result are not runs.
    runs = [r for r in runs if (r / "result.json").is_file()]
    results = [RunResult.model_validate_json((run / "result.json").read_text(encoding="utf-8")) for run in runs]
    trend_html = "".join(_campaign_trend(name, results) for name in trends)
    rows = []
    for r in results:
        meas = "; ".join(
            f"{m.name} = {m.value:.6g}"
            + (f" ± {m.uncertainty:.2g}" if m.uncertainty is not None else "")
            + f" {m.unit} {m.outcome_text()}"
            for m in r.measurements
            if m.value is not None
        )
        rows.append(
            [
                _e(report_id(r.run_id)),
                _e(f"{r.sequence.get('id')} v{r.sequence.get('version')}"),
                _e(r.started_utc),
                f'<span class="o {_e(r.verdict)}">{_e(r.verdict)}</span>',
                _e(", ".join(r.faults) or "none"),
                _e(meas),
            ]
        )
    body = _table(["report", "sequence", "performed (UTC)", "verdict", "faults", "measurements"], rows, "no runs")
    counts: dict[str, int] = {}
    for r in results:
        counts[r.verdict.value] = counts.get(r.verdict.value, 0) + 1
    summary = ", ".join(f"{k}: {n}" for k, n in sorted(counts.items()))
    text = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Campaign report</title><style>{_CSS}</style>'
        f"</head><body><h1>Campaign report</h1><p>{len(runs)} runs ({_e(summary)}), generated "
        f"{_e(dt.datetime.now(dt.UTC).date().isoformat())}. Each run's full report is in its own folder; this "
        "summary is not a test report in the sense of ISO/IEC 17025 7.8.</p>"
        f'{body}{trend_html}<p class="end">End of campaign report</p></body></html>\n'
    )
    output.write_text(text, encoding="utf-8")
    return output


def _campaign_trend(name: str, results: Sequence[RunResult]) -> str:
    """The X/MR chart of measurement ``name`` over the runs that recorded it, oldest first, with the
    Nelson tests' findings (the same chart as `bench db trend`, from the run folders themselves)."""
    from bench.report.plots import png_base64
    from bench.results.chart import trend_figure
    from bench.results.rows import parse_utc
    from bench.results.spc import SpcError, chart

    points = sorted(
        (r.started_utc, r.run_id, m.value, m.unit)
        for r in results
        for m in r.measurements
        if m.name == name and m.value is not None
    )
    if not points:
        recorded = sorted({m.name for r in results for m in r.measurements})
        raise LoadError(
            f"--trend {name}: no run of the summary recorded a measurement '{name}'" + did_you_mean(name, recorded)
        )
    units = sorted({p[3] for p in points})
    if len(units) > 1:
        raise LoadError(f"--trend {name}: the runs recorded it in different units ({', '.join(units)})")
    head = f"<h2>Trend of {_e(name)} [{_e(units[0])}]</h2>"
    try:
        c = chart([p[2] for p in points])
    except SpcError as exc:
        return f"{head}<p>{_e(exc)}</p>"
    png = png_base64(trend_figure(c, [parse_utc(p[0]) for p in points], f"{name} [{units[0]}]", units[0]))
    found = "".join(
        f"<li>{_e(v.line())}: {_e(', '.join(report_id(points[i][1]) for i in v.points))}</li>" for v in c.violations
    )
    return (
        f"{head}<p>{len(points)} runs, mean {c.centre:.6g}, control limits {c.lcl:.6g} .. {c.ucl:.6g}"
        f" (individuals chart, sigma from the mean moving range).</p>"
        f'<figure><img alt="X/MR chart of {_e(name)}" src="data:image/png;base64,{png}"></figure>'
        + (f"<ul>{found}</ul>" if found else "<p>No Nelson test flags a point.</p>")
    )
