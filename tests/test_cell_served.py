"""The cell-level BMS bench served by `bench sim serve` (stations/sim-cells-served.yaml), and
docs/cell-hil.md kept true to the station file it quotes.

The committed cell sequences run on the wall clock against the served `bms_cells` plant: the
emulator's RS-485 bus on a TCP SCPI port (pyvisa-py), the cell BMS's CAN through python-can's
socketcand client. The nominal BMS passes; a server started with a fault mode makes the same run
FAIL. Each run gets its own server on free ports, so each starts from a fresh plant.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT, bench
from tests.ports import free_port_offset
from tests.served import served_on_free_ports, sim_serve

SERVED = ROOT / "stations" / "sim-cells-served.yaml"
INPROC = ROOT / "stations" / "sim-cells.yaml"
DOC = ROOT / "docs" / "cell-hil.md"
EXCERPT = re.compile(r"^<!-- excerpt: (\S+) -->\n```yaml\n(.*?)^```$", re.MULTILINE | re.DOTALL)

CELL = ROOT / "sequences" / "cell"

# case -> (sequence, fault the server starts with, exit code, verdict)
RUNS = {
    # Open sense line of cell 9 (the first cell of the second ABS unit): flagged and named within
    # the FDTI by the nominal BMS.
    "open-wire": (CELL / "open_wire.yaml", None, 0, "PASS"),
    # Every diagnostic debounces 1 s: the flag comes after the FDTI (500 ms).
    "open-wire-debounce-long": (CELL / "open_wire.yaml", "cell_debounce_long", 1, "FAIL"),
    # A bisection over the served transports: each probe a SCPI write and read-back, the trip seen
    # on CAN frames, on the wall clock.
    "ov-trip": (CELL / "ov_trip.yaml", None, 0, "PASS"),
}


@pytest.mark.parametrize("case", RUNS)
def test_a_cell_sequence_against_the_served_plant(tmp_path: Path, reports: Path, case: str) -> None:
    sequence, fault, rc, verdict = RUNS[case]
    station, _ = served_on_free_ports(SERVED, tmp_path / "stations")
    with sim_serve(station, *(["--fault", fault] if fault else [])) as server:
        assert any(line.split()[:2] == ["scpi", "cells"] for line in server.banner), server.banner
        assert any(line.split()[:2] == ["can", "bench2"] for line in server.banner), server.banner
        r = bench("run", sequence, "--station", station, "--reports", reports, "-q", timeout=120)
    assert r.rc == rc, r.out + r.err
    result = r.result()
    assert result["verdict"] == verdict, result["reason"]
    measured = {m["name"]: m for m in result["measurements"]}
    if case == "open-wire":
        # About the 0.1 s debounce or more; served frame times are mapped onto the bench clock with jitter.
        assert 0.05 <= measured["detection_time"]["value"] / 1000 <= 0.5, measured["detection_time"]
    elif case == "open-wire-debounce-long":
        assert measured["detection_time"]["outcome"] == "FAIL", measured["detection_time"]
        assert measured["detection_time"]["value"] / 1000 >= 1.0, measured["detection_time"]
    else:
        assert measured["ov_trip_point"]["value"] == pytest.approx(4.200, abs=0.002), measured["ov_trip_point"]
    assert all(s["safe"] for s in result["safe_state"]), result["safe_state"]


def test_the_in_process_station_itself_is_served_with_its_own_can_channel() -> None:
    """sim-cells.yaml has no serve: section: its plant is served on the default ports, and on the
    CAN channel its BMS talks on (bench2), not the default bench0."""
    offset = free_port_offset(29536, 5025)
    with sim_serve(INPROC, "--port-offset", str(offset)) as server:
        text = "\n".join(server.banner)
    assert sorted(line.split()[:2] for line in server.banner[1:-1]) == [["can", "bench2"], ["scpi", "cells"]], text
    assert f"socketcand 127.0.0.1:{29536 + offset} channel bench2" in text
    assert f"TCPIP::127.0.0.1::{5025 + offset}::SOCKET" in text


def test_the_excerpts_of_the_station_file_in_the_doc_are_its_text() -> None:
    excerpts = EXCERPT.findall(DOC.read_text(encoding="utf-8"))
    assert len(excerpts) >= 3
    for path, text in excerpts:
        assert text in (ROOT / path).read_text(encoding="utf-8"), f"docs/cell-hil.md quotes {path} wrongly:\n{text}"
