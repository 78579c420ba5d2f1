"""Failures over the served transports: each ends the run ERROR (or ABORTED) with one clear line
naming the device, cleanup runs, the other devices are still brought to their safe state, and
the supply ends off.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Completed, bench
from tests.served import MuteInstrument, dump_yaml, free_ports, load_yaml, scpi_query, sim_serve, write_stations

SEQUENCE = """\
id: SERVED-FAILURES
title: supply on, then a step that may fail
version: 1.0.0
basis: {standard: test, clause: failures over served transports}
requires: [psu, bms, h2]
parameters:
  high_voltage: 100 V
  hold: 30 s
steps:
  - name: supply on at a low voltage
    set: {psu.voltage_set: 100 V, psu.current_set: 1 A, psu.output: ON}
  - name: raise the voltage
    set: {psu.voltage_set: $high_voltage}
  - name: hold
    wait: $hold
cleanup:
  - name: supply off
    set: {psu.output: OFF}
"""


@pytest.fixture
def sequence(tmp_path: Path) -> Path:
    path = tmp_path / "served_failures.yaml"
    path.write_text(SEQUENCE)
    return path


def _events(run: Completed) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run.run_dir() / "events.jsonl").read_text().splitlines()]


def _check_common(run: Completed, device: str, verdicts: set[str] | None = None) -> dict[str, Any]:
    result = run.result()
    assert result["verdict"] in (verdicts or {"ERROR", "ABORTED"}), result["reason"]
    assert run.rc in (3, 4), run.out + run.err
    assert "Traceback" not in run.out + run.err
    reason = result["reason"]
    assert "\n" not in reason, "one line"
    assert re.search(rf"(^|device |: ){device}: ", reason), f"the reason names the device: {reason}"
    kinds = [e["kind"] for e in _events(run)]
    assert "cleanup_started" in kinds
    safe = {s["device"]: s["safe"] for s in result["safe_state"]}
    assert safe.get("bms") is True, "the other devices are still brought to their safe state"
    return result


def test_instrument_that_does_not_answer(tmp_path: Path, sequence: Path) -> None:
    mute = MuteInstrument()
    try:
        st = write_stations(
            tmp_path, psu={"transport": {"visa": f"TCPIP::127.0.0.1::{mute.port}::SOCKET", "timeout": "1 s"}}
        )
        with sim_serve(st.served):
            run = bench("run", sequence, "--station", st.served, "--reports", tmp_path / "r", "-q", timeout=90)
    finally:
        mute.close()
    result = _check_common(run, "psu")
    assert "*IDN?" in result["reason"] and "no reply within 1 s" in result["reason"], result["reason"]
    assert "OUTP ON" not in mute.received, "a supply that does not answer is never switched on"
    assert mute.received[:1] == ["*IDN?"]


def test_closed_port(tmp_path: Path, sequence: Path) -> None:
    (closed,) = free_ports(1)
    st = write_stations(tmp_path, psu={"transport": {"visa": f"TCPIP::127.0.0.1::{closed}::SOCKET", "timeout": "1 s"}})
    with sim_serve(st.served):
        run = bench("run", sequence, "--station", st.served, "--reports", tmp_path / "r", "-q", timeout=90)
    result = _check_common(run, "psu")
    assert f"cannot reach TCPIP::127.0.0.1::{closed}::SOCKET" in result["reason"], result["reason"]
    assert "refused" in result["reason"].lower()


def test_closed_can_port_still_makes_the_supply_safe(tmp_path: Path, sequence: Path) -> None:
    (closed,) = free_ports(1)
    st = write_stations(tmp_path)
    station = load_yaml(st.served)
    station["devices"]["bms"]["config"]["can"]["port"] = closed  # the server stays on st.can_port
    dump_yaml(station, st.served)
    with sim_serve(st.served):
        run = bench("run", sequence, "--station", st.served, "--reports", tmp_path / "r", "-q", timeout=90)
    result = run.result()
    assert result["verdict"] == "ERROR" and run.rc == 3, result["reason"]
    assert result["reason"] == f"bms: cannot reach socketcand at 127.0.0.1:{closed}: Connection refused"
    assert len(run.err.strip().splitlines()) <= 1, "python-can's retry loop is not reached"
    # The supply comes after the BMS in the station, and is still connected and made safe.
    assert {s["device"]: s["safe"] for s in result["safe_state"]} == {"psu": True}
    assert result["wall_duration_s"] < 10


def test_instrument_error_fails_the_step_with_its_words(tmp_path: Path, sequence: Path) -> None:
    # The driver is told the supply takes 1100 V, the instrument knows better (1000 V rating).
    st = write_stations(tmp_path, psu={"voltage_max": "1100 V"})
    with sim_serve(st.served):
        run = bench(
            "run", sequence, "--station", st.served, "--reports", tmp_path / "r", "-q", "-p", "high_voltage=1050 V"
        )
        supply_output = scpi_query(st.scpi["psu"], "OUTP?")
    result = _check_common(run, "psu", {"ERROR"})
    assert '-222,"Data out of range"' in result["reason"], result["reason"]
    assert "raise the voltage" in result["reason"]
    assert {s["device"]: s["safe"] for s in result["safe_state"]}["psu"] is True
    assert supply_output == "OFF", "the supply ends off"


def test_serial_sensor_that_goes_silent(tmp_path: Path, sequence: Path) -> None:
    st = write_stations(tmp_path)
    with sim_serve(st.served, "--fault", "h2_sensor_silent"):
        run = bench("run", sequence, "--station", st.served, "--reports", tmp_path / "r", "-q", timeout=90)
        supply_output = scpi_query(st.scpi["psu"], "OUTP?")
    result = _check_common(run, "h2")
    assert "no data from" in result["reason"] and str(st.serial_dir / "h2") in result["reason"], result["reason"]
    steps = {s["name"]: s["outcome"] for s in result["steps"]}
    assert steps["supply on at a low voltage"] == "PASS", "the supply was on when the sensor went silent"
    assert steps["supply off"] == "PASS"
    assert {s["device"]: s["safe"] for s in result["safe_state"]}["psu"] is True
    assert supply_output == "OFF", "the supply ends off"


def test_serial_port_that_goes_away(tmp_path: Path, sequence: Path) -> None:
    # The server closes the pty under the bench (a pulled USB adapter): the port fails on its next
    # read, without waiting for the sensor's silence timeout.
    st = write_stations(tmp_path)
    with sim_serve(st.served, "--fault", "h2_sensor_disconnected"):
        run = bench("run", sequence, "--station", st.served, "--reports", tmp_path / "r", "-q", timeout=90)
        supply_output = scpi_query(st.scpi["psu"], "OUTP?")
        port_left = (st.serial_dir / "h2").exists()
    result = _check_common(run, "h2")
    assert f"lost serial port {st.serial_dir / 'h2'}" in result["reason"], result["reason"]
    assert "no data from" not in result["reason"]
    steps = {s["name"]: s["outcome"] for s in result["steps"]}
    assert steps["supply on at a low voltage"] == "PASS", "the supply was on when the port went"
    assert steps["supply off"] == "PASS"
    assert {s["device"]: s["safe"] for s in result["safe_state"]}["psu"] is True
    assert supply_output == "OFF", "the supply ends off"
    assert not port_left, "the port is gone"
