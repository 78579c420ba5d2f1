"""Back to back: the same sequences with the same parameters on the in-process station and on the
served one (python-can's socketcand client, pyvisa-py on TCP, a pty), in the style of
python-can's ``test/back2back_test.py``: one suite, two transports, the same verdicts.

The pack starts almost full so that the real-time served overcharge run is short (see
tests/served.py). Each served run gets a fresh `bench sim serve`, so both backends start from
the same plant state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import OVERCHARGE, ROOT, Completed, bench
from tests.served import SHORT_OVERCHARGE, Stations, sim_serve, write_stations

BACKENDS = ("inproc", "served")
# name -> (sequence, parameters, tolerance of each measurement between the two backends)
SEQUENCES: dict[str, tuple[Path, list[str], dict[str, float]]] = {
    "overcharge": (
        OVERCHARGE,
        SHORT_OVERCHARGE,
        # The BMS detects on its 100 ms physics tick and reports in 100 ms frames. In virtual time
        # the phases line up exactly (300 ms); on the wall clock, scheduling jitter can move the
        # threshold crossing and the OPEN report into neighbouring cycles: one cycle, plus transport.
        {"reaction_time": 110, "peak_cell_voltage": 0.01, "peak_cell_temperature": 1.0},
    ),
    "analyzer_window": (
        ROOT / "tests" / "sequences" / "analyzer_window.yaml",
        [],
        # On the wall clock the window is 5 s plus the command round trips around START and STOP,
        # and the plant integrates in 100 ms ticks: up to ~150 ms more (3 %) on a loaded 2-core VM.
        {"window_energy": 0.35, "mean_current": 0.05, "enclosure_h2": 0.01},
    ),
}


@pytest.fixture(scope="module")
def stations(tmp_path_factory: pytest.TempPathFactory) -> Stations:
    return write_stations(tmp_path_factory.mktemp("stations"))


@pytest.fixture(scope="module")
def runs(stations: Stations, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Completed]:
    """Every sequence on both backends once per module, so each result can be checked and compared."""
    out: dict[tuple[str, str], Completed] = {}
    reports = tmp_path_factory.mktemp("reports")
    for name, (sequence, params, _) in SEQUENCES.items():
        common = ("run", sequence, "--reports", reports, "-q", *params)
        out[name, "inproc"] = bench(*common, "--station", stations.inproc)
        with sim_serve(stations.served):
            out[name, "served"] = bench(*common, "--station", stations.served, timeout=90)
    return out


def _measurements(result: dict[str, Any]) -> dict[str, float]:
    return {m["name"]: m["value"] for m in result["measurements"]}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sequence", list(SEQUENCES))
class TestBackToBack:
    def test_passes(self, runs: dict[tuple[str, str], Completed], sequence: str, backend: str) -> None:
        run = runs[sequence, backend]
        assert run.rc == 0, run.out + run.err
        result = run.result()
        assert result["verdict"] == "PASS", result["reason"]
        assert result["station"]["virtual_time"] is (backend == "inproc")

    def test_identities_through_the_transport(
        self, runs: dict[tuple[str, str], Completed], sequence: str, backend: str
    ) -> None:
        ids = {d["name"]: d["identity"] for d in runs[sequence, backend].result()["devices"]}
        # A run connects the devices its sequence requires and those the supervisor watches.
        required = {"overcharge": {"psu", "bms", "daq"}, "analyzer_window": {"psu", "bms", "pa", "h2"}}[sequence]
        assert set(ids) == required
        assert ids["psu"]["model"].startswith("PSB")  # *IDN? over pyvisa-py / in-process SCPI
        assert ids["bms"]["software_version"] == "BMS-SIM 1.0.0"  # UDS over socketcand / inproc CAN
        if "daq" in required:
            assert ids["daq"]["model"].startswith("DAQ97")  # *IDN? of the first mainframe, SCPI over TCP / in-process
        if "pa" in required:
            assert ids["pa"]["maker"] == "YOKOGAWA"
            assert ids["h2"]["maker"] == "H2scan"  # ID? over the pty / in-memory stream

    def test_safe_state(self, runs: dict[tuple[str, str], Completed], sequence: str, backend: str) -> None:
        safe = {s["device"]: s["safe"] for s in runs[sequence, backend].result()["safe_state"]}
        assert safe == {"bms": True, "psu": True}


@pytest.mark.parametrize("backend", BACKENDS)
def test_overcharge_measurements(runs: dict[tuple[str, str], Completed], backend: str) -> None:
    meas = _measurements(runs["overcharge", backend].result())
    # detection 200 ms + reaction 100 ms in the simulated BMS, measured on frame timestamps
    assert 250 <= meas["reaction_time"] <= 450
    assert 4.25 <= meas["peak_cell_voltage"] <= 4.30


@pytest.mark.parametrize("sequence", list(SEQUENCES))
def test_same_verdict_steps_and_similar_measurements(runs: dict[tuple[str, str], Completed], sequence: str) -> None:
    a, b = (runs[sequence, k].result() for k in BACKENDS)
    assert a["verdict"] == b["verdict"]
    assert [(s["name"], s["outcome"]) for s in a["steps"]] == [(s["name"], s["outcome"]) for s in b["steps"]]
    ma, mb = _measurements(a), _measurements(b)
    assert ma.keys() == mb.keys()
    for name, tolerance in SEQUENCES[sequence][2].items():
        assert abs(ma[name] - mb[name]) <= tolerance, f"{name}: {ma[name]} in-process, {mb[name]} served"


def test_served_record_has_the_socketcand_traffic(runs: dict[tuple[str, str], Completed]) -> None:
    import can

    run = runs["overcharge", "served"].run_dir()
    ids = {f.arbitration_id for f in can.BLFReader(str(run / "can.blf"))}
    assert {0x100, 0x200, 0x7E0, 0x7E8} <= ids, "cyclic, bench and UDS frames all went through socketcand"
