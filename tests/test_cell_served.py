"""The cell-level BMS bench served by `bench sim serve` (stations/sim-cells-served.yaml), and
docs/cell-hil.md kept true to the station file it quotes.

A cell sequence runs on the wall clock against the served `bms_cells` plant: the emulator's
RS-485 bus on a TCP SCPI port (pyvisa-py), the cell BMS's CAN through python-can's socketcand
client. The nominal BMS passes; a server started with a fault mode makes the same run FAIL.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT, bench
from tests.served import served_on_free_ports, sim_serve

SERVED = ROOT / "stations" / "sim-cells-served.yaml"
DOC = ROOT / "docs" / "cell-hil.md"
EXCERPT = re.compile(r"^<!-- excerpt: (\S+) -->\n```yaml\n(.*?)^```$", re.MULTILINE | re.DOTALL)

# Open the sense line of cell 3 and time the BMS's open-wire flag: within 0.5 s for the nominal
# BMS (debounce 0.1 s, 100 ms status frames), not within 0.5 s when every diagnostic debounces 1 s.
OPEN_WIRE = """\
id: TEST-CELL-OPEN-WIRE-SERVED
title: Open sense line of cell 3, detected within 0.5 s
version: 1.0.0
basis: {standard: test, clause: "0"}
requires: [cells, cbms]
steps:
  - set: {cells.all_current_limit: 0.5 A, cells.all_voltage_set: 3.7 V, cells.all_output: ON, cbms.cmd_clear_faults: NO}
  - wait_until: cbms.cell_v_003 > 3.6 V
    timeout: 5 s
  - set: {cbms.cmd_clear_faults: YES}          # the open lines of the cells before they were on
  - wait: 300 ms
  - set: {cbms.cmd_clear_faults: NO}
  - wait_until: cbms.fault_open_wire == OK
    timeout: 2 s
  - set: {cells.m01c3_fault: OPEN}
  - name: open wire flagged
    wait_until: cbms.fault_open_wire == ACTIVE
    timeout: 0.5 s
    as: t_flag
  - measure: {name: open_wire_cell, signal: cbms.open_wire_cell, min: 3, max: 3}
cleanup:
  - set: {cells.m01c3_fault: NONE, cells.all_output: OFF}
"""


@pytest.mark.parametrize(("fault", "rc", "verdict"), [(None, 0, "PASS"), ("cell_debounce_long", 1, "FAIL")])
def test_a_cell_sequence_against_the_served_plant(
    tmp_path: Path, reports: Path, fault: str | None, rc: int, verdict: str
) -> None:
    station, _ = served_on_free_ports(SERVED, tmp_path / "stations")
    sequence = tmp_path / "open_wire.yaml"
    sequence.write_text(OPEN_WIRE)
    with sim_serve(station, *(["--fault", fault] if fault else [])) as server:
        assert any(line.split()[:2] == ["scpi", "cells"] for line in server.banner), server.banner
        assert any(line.split()[:2] == ["can", "bench2"] for line in server.banner), server.banner
        r = bench("run", sequence, "--station", station, "--reports", reports, "-q", timeout=90)
    assert r.rc == rc, r.out + r.err
    result = r.result()
    assert result["verdict"] == verdict, result["reason"]
    if verdict == "PASS":
        assert {m["name"]: m["value"] for m in result["measurements"]} == {"open_wire_cell": 3}
    else:
        assert "open wire flagged" in result["reason"], result["reason"]


def test_the_excerpts_of_the_station_file_in_the_doc_are_its_text() -> None:
    excerpts = EXCERPT.findall(DOC.read_text(encoding="utf-8"))
    assert len(excerpts) >= 3
    for path, text in excerpts:
        assert text in (ROOT / path).read_text(encoding="utf-8"), f"docs/cell-hil.md quotes {path} wrongly:\n{text}"
