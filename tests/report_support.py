"""Helpers shared by the report and integrity tests: temporary station copies and short sequences."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import ROOT, SIM_STATION

# A short sequence: it needs only the supply and takes seconds even on the wall clock, so a
# physical-like station (simulated: false -> real time) can run it in a test.
SHORT_SEQUENCE = """\
id: TEST-REPORT-SHORT
title: short supply check for report tests
version: 0.1.0
basis: {standard: test, clause: reporting}
requires: [psu, bms]
parameters:
  hold: {default: 1 s}
steps:
  - name: supply off
    set: {psu.output: OFF}
  - name: hold
    wait: $hold
  - measure: {name: cell_voltage, signal: bms.cell_v_max, stat: max, since: hold, max: 4.3 V}
  - measure: {name: supply_voltage, signal: psu.voltage, max: 1000 V}
cleanup:
  - name: supply off again
    set: {psu.output: OFF}
"""


def station_copy(tmp: Path, *, replace: dict[str, str] | None = None, append: str = "", name: str = "st.yaml") -> Path:
    """sim.yaml copied to ``tmp`` with its relative paths made absolute and text replaced."""
    text = SIM_STATION.read_text(encoding="utf-8").replace("../dbc/", f"{ROOT / 'dbc'}/")
    for old, new in (replace or {}).items():
        assert old in text, f"{old!r} not in sim.yaml"
        text = text.replace(old, new)
    path = tmp / name
    path.write_text(text + append, encoding="utf-8")
    return path


def short_sequence(tmp: Path) -> Path:
    path = tmp / "short.yaml"
    path.write_text(SHORT_SEQUENCE, encoding="utf-8")
    return path


def physical(text_station: Path) -> None:
    """Make a station copy 'physical': not simulated, wall clock (its plants still run in-process)."""
    text = text_station.read_text(encoding="utf-8")
    text = re.sub(r"^simulated: true$", "simulated: false", text, flags=re.M)
    text = re.sub(r"^virtual_time: true$", "virtual_time: false", text, flags=re.M)
    text_station.write_text(text, encoding="utf-8")


def plain_text(html: str) -> str:
    import html as h

    text = re.sub(r"<style>.*?</style>", " ", html, flags=re.S)
    text = re.sub(r"<[^>]+>", " ", text)
    return re.sub(r"\s+", " ", h.unescape(text))


def pdf_pages(path: Path) -> list[str]:
    from pypdf import PdfReader

    return [re.sub(r"\s+", " ", p.extract_text() or "") for p in PdfReader(str(path)).pages]
