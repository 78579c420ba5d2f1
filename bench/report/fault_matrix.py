"""The fault matrix as one self-contained HTML page: sequences x fault modes, verdict and reason per cell."""

from __future__ import annotations

import html

from bench.matrix import NOMINAL, Matrix

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:1.5em;
color:#1b1b1b;line-height:1.35}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.8em}
th,td{border:1px solid #d0d0d0;padding:.25em .4em;vertical-align:top}
th{background:#f2f2f2}th.f{writing-mode:vertical-rl;transform:rotate(180deg);white-space:nowrap}
td.c{text-align:center;font-weight:bold;color:#fff;min-width:2.5em}
.PASS{background:#1e7e34}.FAIL{background:#c82333}.ERROR{background:#b35900}.ABORTED{background:#6f42c1}
.nominal{border-right:3px solid #333}td.c.same{color:#666;font-weight:normal}
.muted{color:#666}ul.find li{color:#c82333}
"""
_SHORT = {"PASS": "P", "FAIL": "F", "ABORTED": "A", "ERROR": "E"}


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def render_matrix_html(m: Matrix) -> str:
    columns = [NOMINAL, *m.faults]
    head = "".join(f'<th class="f{" nominal" if c == NOMINAL else ""}">{_e(c)}</th>' for c in columns)
    rows = []
    for seq, path in m.sequences.items():
        cells = []
        for f in columns:
            c = m.cell(seq, f)
            if c is None:
                cells.append('<td class="muted">-</td>')
                continue
            title = f"{c.verdict}: {c.reason}" + (" (unsafe end)" if c.unsafe_end else "") + f" [run {c.run_id}]"
            if c.same_as:
                cells.append(f'<td class="c same" title="{_e(title)}">=</td>')
                continue
            extra = " nominal" if f == NOMINAL else ""
            cells.append(f'<td class="c {c.verdict}{extra}" title="{_e(title)}">{_SHORT.get(c.verdict, "?")}</td>')
        caught = sum(1 for f in m.faults if (c := m.cell(seq, f)) is not None and c.caught)
        rows.append(f'<tr><th title="{_e(path)}">{_e(seq)}</th>{"".join(cells)}<td class="muted">{caught}</td></tr>')
    caught_by = []
    for f in m.faults:
        n = sum(1 for s in m.sequences if (c := m.cell(s, f)) is not None and c.caught)
        caught_by.append(f'<td class="muted">{n}</td>')
    findings = m.findings()
    find_html = (
        '<ul class="find">' + "".join(f"<li>{_e(x)}</li>" for x in findings) + "</ul>"
        if findings
        else "<p>The nominal simulator passes every sequence, every fault mode is caught by at least one"
        " sequence, and every sequence is made to fail by at least one fault mode.</p>"
    )
    detail = []
    for c in m.cells:
        meas = "; ".join(f"{x['name']} = {x['value']} {x['unit']} ({x['outcome']})" for x in c.measurements)
        detail.append(
            f"<tr><td>{_e(c.sequence)}</td><td>{_e(c.fault)}</td><td class='c {c.verdict}'>{_e(c.verdict)}</td>"
            f"<td>{_e(c.reason)}{' <b>(unsafe end)</b>' if c.unsafe_end else ''}</td><td>{_e(meas)}</td>"
            f"<td class='muted'>{_e(c.run_id)}</td><td class='muted'>{c.sim_s:g} s / {c.wall_s:g} s</td></tr>"
        )
    params = ", ".join(f"{k} = {v}" for k, v in m.params.items()) or "none (every sequence at its defaults)"
    runs = sum(1 for c in m.cells if not c.same_as)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Fault matrix {_e(m.campaign_id)}</title>
<style>{_CSS}</style></head><body>
<h1>Fault matrix</h1>
<p>Campaign <b>{_e(m.campaign_id)}</b>, started {_e(m.started_utc)}, station <code>{_e(m.station)}</code>,
{len(m.sequences)} sequences x {len(columns)} simulator configurations (nominal + {len(m.faults)} fault modes),
{runs} runs in {m.wall_s:.0f} s.</p>
<p>Parameters applied to every sequence that declares them: {_e(params)}.</p>
<p>P = PASS, F = FAIL, A = ABORTED (caught by the sequence), E = ERROR (caught by the bench: it stopped on a
device fault, the run is not valid).
= : not run, the fault is in a simulator this sequence does not start, so its run is the nominal run
({len(m.cells) - runs} cells). Hover over a cell for its reason; every run has its own record under
<code>runs/</code>.</p>
<h2>Findings</h2>{find_html}
<h2>Matrix</h2>
<table><tr><th>sequence</th>{head}<th>faults caught</th></tr>
{"".join(rows)}
<tr><th>sequences catching</th>{"".join(['<td class="muted nominal">-</td>', *caught_by])}<td></td></tr>
</table>
<h2>Cells</h2>
<table><tr><th>sequence</th><th>fault</th><th>verdict</th><th>reason</th><th>measurements</th><th>run</th>
<th>simulated / wall</th></tr>
{"".join(detail)}
</table>
</body></html>
"""
