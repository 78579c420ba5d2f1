"""The new instruments and the DUT's UDS identity, end to end on the in-process station in
virtual time: the real CLI, the real drivers, the simulators behind their protocol text."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.conftest import ROOT, SIM_STATION, bench

ENERGY = ROOT / "tests" / "sequences" / "energy_window.yaml"


def _station(tmp_path: Path, old: str, new: str) -> Path:
    """A copy of the default station with one text change, its DBC paths made absolute."""
    text = SIM_STATION.read_text().replace("../dbc/", f"{ROOT / 'dbc'}/")
    assert old in text
    path = tmp_path / "station.yaml"
    path.write_text(text.replace(old, new))
    return path


def test_integration_window_and_every_identity_in_the_record(reports: Path) -> None:
    run = bench("run", ENERGY, "--reports", reports)
    assert run.rc == 0, run.out + run.err
    result = run.result()
    energy = {m["name"]: m for m in result["measurements"]}
    # 60 A into a ~743 V pack for the 10 min window: ~7.4 kWh, and the integral agrees with
    # the mean power over the same window.
    assert 7.0 < energy["charge_energy"]["value"] < 8.0
    assert energy["charge_energy"]["unit"] == "kWh"
    assert abs(energy["mean_power"]["value"] / 6 - energy["charge_energy"]["value"]) < 0.05
    assert energy["enclosure_h2"]["value"] < 0.01
    ids = {d["name"]: d["identity"] for d in result["devices"]}
    assert ids["bms"] == {
        "vin": "WDB9634031L000001",
        "ecu_serial": "BMS-SN-0000012345",
        "software_version": "BMS-SIM 1.0.0",
    }
    assert ids["psu"]["maker"] == "EA Elektro-Automatik" and ids["psu"]["model"] == "PSB 11000-80 4U"
    assert ids["pa"] == {
        "maker": "YOKOGAWA",
        "model": "WT5000",
        "serial": "SIM0000PA1",
        "firmware": "F1.02 (simulated)",
    }
    assert ids["h2"]["maker"] == "H2scan" and ids["h2"]["serial"] == "SIM00H2001"
    html = (run.run_dir() / "report.html").read_text()
    for text in ("WDB9634031L000001", "BMS-SN-0000012345", "BMS-SIM 1.0.0", "WT5000", "SIM0000PA1", "HY-OPTIMA 740"):
        assert text in html
    events = [json.loads(line) for line in (run.run_dir() / "events.jsonl").read_text().splitlines()]
    connected = {e["device"]: e["identity"] for e in events if e["kind"] == "device_connected"}
    assert connected == ids


def test_wrong_software_version_refuses_the_run(reports: Path, tmp_path: Path) -> None:
    station = _station(tmp_path, "software_version: BMS-SIM 1.0.0}}", "software_version: BMS-SIM 2.0.0}}")
    run = bench("run", ENERGY, "--station", station, "--reports", reports)
    assert run.rc == 3, run.out + run.err
    reason = (
        "bms: DUT reports software version 'BMS-SIM 1.0.0' but the station expects 'BMS-SIM 2.0.0'"
        " (uds.expect.software_version)"
    )
    verdict_lines = [line for line in run.out.splitlines() if line.startswith("ERROR")]
    assert verdict_lines == [f"ERROR {reason}"]
    assert not run.err.strip(), run.err
    result = run.result()
    assert result["verdict"] == "ERROR" and result["reason"] == reason
    assert [s for s in result["steps"] if s["phase"] == "steps"] == []


def test_dut_that_does_not_answer_uds_is_a_clear_error(reports: Path, tmp_path: Path) -> None:
    # A DUT with a different response id never answers the tester: a clear timeout, not a hang.
    station = _station(tmp_path, "rx_id: 0x7E8", "rx_id: 0x7E9")
    run = bench("run", ENERGY, "--station", station, "--reports", reports)
    assert run.rc == 3
    assert re.search(r"bms: UDS identification failed: no UDS response on 0x7E9 within 1 s", run.out), run.out


def test_silent_h2_sensor_ends_the_run_naming_the_port(reports: Path) -> None:
    run = bench("run", ENERGY, "--fault", "h2_sensor_silent", "--reports", reports)
    assert run.rc == 3, run.out + run.err
    assert run.result()["reason"] == "device h2: no data from inproc:h2 for 3 s"
    safe = {s["device"]: s["safe"] for s in run.result()["safe_state"]}
    assert safe == {"bms": True, "psu": True}


def test_h2_sensor_fault_flag_trips_the_monitor(reports: Path) -> None:
    run = bench("run", ENERGY, "--fault", "h2_sensor_fault_flag", "--reports", reports)
    assert run.rc == 4, run.out + run.err
    assert "monitor 'enclosure hydrogen' tripped" in run.result()["reason"]


def test_h2_sensor_offset_shows_in_the_measurement(reports: Path) -> None:
    run = bench("run", ENERGY, "--fault", "h2_sensor_offset", "--reports", reports)
    assert run.rc == 0, run.out + run.err
    h2 = next(m for m in run.result()["measurements"] if m["name"] == "enclosure_h2")
    assert 0.19 < h2["value"] < 0.21
