"""Corpus DBCs in a run against `bench sim serve`, with frames from a stock python-can client.

The frames are encoded with cantools and sent by python-can's own ``socketcand`` interface to
a served channel with no plant behind it, as any socketcand client of a lab would send them.
The bench reaches the channel as a physical bench reaches its bus.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import can
import cantools
import pytest

from tests.conftest import bench
from tests.served import free_ports, sim_serve

CORPUS = Path(__file__).parent / "dbc"
DUPLICATE_NAMES = CORPUS / "duplicate_names.dbc"
NO_CYCLE_TIMES = CORPUS / "no_cycle_times.dbc"
CHANNEL = "dut0"


def _station(tmp_path: Path, dbc: Path, port: int, extra: str = "") -> Path:
    path = tmp_path / "station.yaml"
    path.write_text(
        "id: corpus-served\n"
        "devices:\n"
        "  dut:\n"
        "    driver: can_dbc\n"
        "    config:\n"
        f"      dbc: {dbc}\n"
        f"      can: {{interface: socketcand, host: 127.0.0.1, port: {port}, channel: {CHANNEL}}}\n"
        + "".join(f"      {line}\n" for line in extra.splitlines() if line)
        + f"serve:\n  simulators: []\n  can: {{port: {port}, channels: [{CHANNEL}]}}\n"
    )
    return path


@contextlib.contextmanager
def sending(port: int, frames: list[can.Message], period: float = 0.05) -> Iterator[None]:
    """A stock python-can socketcand client that sends ``frames`` every ``period`` until the block ends."""
    bus = can.Bus(interface="socketcand", host="127.0.0.1", port=port, channel=CHANNEL)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            for frame in frames:
                bus.send(frame)
            stop.wait(period)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        bus.shutdown()


def _frame(dbc: Path, message: str, values: dict[str, Any]) -> can.Message:
    db = cantools.database.load_file(str(dbc))
    assert isinstance(db, cantools.database.can.Database)
    m = db.get_message_by_name(message)
    return can.Message(
        arbitration_id=m.frame_id, is_extended_id=m.is_extended_frame, is_fd=m.is_fd, data=m.encode(values)
    )


SEQUENCE = """\
id: CORPUS-DUPLICATE-NAMES
title: The qualified name selects its own message
version: 1.0.0
basis: {standard: test, clause: "0"}
requires: [dut]
steps:
  - name: pack maximum above 4.1 V
    wait_until: dut.Pack_Summary.MaxCellVoltage > 4.1 V
    timeout: 5 s
  - measure: {name: pack_max, signal: dut.Pack_Summary.MaxCellVoltage, min: 4.15 V, max: 4.25 V}
  - measure: {name: string_max, signal: dut.String_Summary.MaxCellVoltage, min: 3.85 V, max: 3.95 V}
"""


@pytest.mark.parametrize(("pack_v", "string_v", "rc", "verdict"), [(4.2, 3.9, 0, "PASS"), (3.9, 4.2, 1, "FAIL")])
def test_the_qualified_name_selects_its_message_in_a_run(
    tmp_path: Path, reports: Path, pack_v: float, string_v: float, rc: int, verdict: str
) -> None:
    """Both messages carry MaxCellVoltage; only the pack's may satisfy the wait (it used to be the last one seen)."""
    (port,) = free_ports(1)
    station = _station(tmp_path, DUPLICATE_NAMES, port, "node: VCU")
    seq = tmp_path / "seq.yaml"
    seq.write_text(SEQUENCE)
    frames = [
        _frame(DUPLICATE_NAMES, "Pack_Summary", {"MaxCellVoltage": pack_v, "MinCellVoltage": 3.5, "PackSoc": 50}),
        _frame(DUPLICATE_NAMES, "String_Summary", {"StringId": 0, "MaxCellVoltage": string_v, "MinCellVoltage": 3.5}),
        _frame(DUPLICATE_NAMES, "String_Summary", {"StringId": 1, "StringCurrent": 12.5}),
    ]
    with sim_serve(station), sending(port, frames):
        r = bench("run", seq, "--station", station, "--reports", reports, timeout=90)
    assert r.rc == rc, r.out + r.err
    result = r.result()
    assert result["verdict"] == verdict
    if verdict == "PASS":
        meas = {m["name"]: m["value"] for m in result["measurements"]}
        assert meas == {"pack_max": pytest.approx(4.2), "string_max": pytest.approx(3.9)}


def test_a_message_given_a_cycle_time_by_the_station_is_missed_at_connect(tmp_path: Path, reports: Path) -> None:
    """The DBC gives DCDC_Event no cycle time; the station does, so its absence is noticed and named.

    The sequence refers to it (a device waits at connect only for the messages the run refers to).
    """
    (port,) = free_ports(1)
    station = _station(
        tmp_path, NO_CYCLE_TIMES, port, "node: BENCH\ncycle_times: {DCDC_Status: 100 ms, DCDC_Event: 500 ms}"
    )
    seq = tmp_path / "seq.yaml"
    seq.write_text(
        SEQUENCE.replace(
            "dut.Pack_Summary.MaxCellVoltage > 4.1 V", "dut.OutputVoltage > 13 V and dut.EventCode == 0"
        ).split("  - measure")[0]
    )
    status = _frame(NO_CYCLE_TIMES, "DCDC_Status", {"OutputVoltage": 14.0, "OutputCurrent": 20.0})
    with sim_serve(station), sending(port, [status]):
        r = bench("run", seq, "--station", station, "--reports", reports, timeout=90)
    assert r.rc == 3, r.out + r.err
    assert r.result()["verdict"] == "ERROR"
    assert "no frames of DCDC_Event (0x601, every 500 ms) within 1.25 s" in r.out
    # Sent too, the run connects and passes.
    event = _frame(NO_CYCLE_TIMES, "DCDC_Event", {"EventCode": 0})
    with sim_serve(station), sending(port, [status, event]):
        r = bench("run", seq, "--station", station, "--reports", reports, timeout=90)
    assert r.rc == 0, r.out + r.err


# Per loadable corpus file: the station's extra config, the condition a run waits for, and the
# frames (message -> values) that make it true and false. duplicate_names.dbc has its own test.
def _fd_cells(checksum: int) -> dict[str, float]:
    """Every signal of the 64-byte FD message: 24 cells, 12 temperatures, pack voltage, counters."""
    values: dict[str, float] = {f"Cell{i:02d}_Voltage": 3.6 for i in range(1, 25)}
    values |= {f"Sensor{i:02d}_Temperature": 25 for i in range(1, 13)}
    return values | {"PackVoltage": 86.4, "AliveCounter": 1, "Checksum": checksum}


RUNS: dict[str, tuple[str, str, dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]] = {
    "vector_xxx_only.dbc": (
        "send: [HVIL_Control]",
        "dut.hvil_closed == Closed and dut.HVIL_Status.hvil_current > 10 mA",
        {"HVIL_Status": [{"hvil_closed": 1, "hvil_current": 20}]},
        {"HVIL_Status": [{"hvil_closed": 0, "hvil_current": 20}]},
    ),
    "odd_units.dbc": (
        "node: BENCH",
        "dut.MotorSpeed > 1000 rpm and dut.VehicleSpeed < 90 km/h and dut.CoolantTemp < 60 degC"
        " and dut.AmbientTemp > 0 degC and dut.WakeupCount < 5 and dut.IsoResistance > 1 MOhm",
        {
            "Drive_Values": [{"LinkVoltage": 650, "LinkCurrent": -20, "MotorSpeed": 1500, "MotorTorque": 120}],
            "Vehicle_Values": [{"VehicleSpeed": 80, "CoolantTemp": 45, "AmbientTemp": 21, "ChargeThroughput": 7200}],
            "Diag_Counters": [{"WakeupCount": 3, "ApiCalls": 100, "ResetCount": 1, "H2Concentration": 0}],
            "Insulation": [{"IsoResistance": 2000, "TankPressure": 350, "CabinPressure": 101.3, "DcdcPower": 2.5}],
        },
        {
            "Drive_Values": [{"LinkVoltage": 650, "LinkCurrent": -20, "MotorSpeed": 1500, "MotorTorque": 120}],
            "Vehicle_Values": [{"VehicleSpeed": 80, "CoolantTemp": 45, "AmbientTemp": 21, "ChargeThroughput": 7200}],
            "Diag_Counters": [{"WakeupCount": 9, "ApiCalls": 100, "ResetCount": 1, "H2Concentration": 0}],
            "Insulation": [{"IsoResistance": 2000, "TankPressure": 350, "CabinPressure": 101.3, "DcdcPower": 2.5}],
        },
    ),
    "mux_cell_voltages.dbc": (
        "",
        "dut.Cell01 > 3.5 V and dut.Cell_Voltages.Cell12 > 3.5 V",
        {"Cell_Voltages": [{"CellBlock": b, **{f"Cell{3 * b + i:02d}": 3.6 for i in (1, 2, 3)}} for b in range(4)]},
        {
            "Cell_Voltages": [
                {"CellBlock": b, **{f"Cell{3 * b + i:02d}": 3.6 if 3 * b + i != 12 else 3.2 for i in (1, 2, 3)}}
                for b in range(4)
            ]
        },
    ),
    "big_endian.dbc": (
        "node: BENCH",
        "dut.DcLinkVoltage > 700 V and dut.DcCurrent < -100 A and dut.MotorTemp > 80 degC and dut.ErrorCode == 1234",
        {"Inverter_Status": [{"DcLinkVoltage": 750.5, "DcCurrent": -150.5, "MotorTemp": 95, "ErrorCode": 1234}]},
        {"Inverter_Status": [{"DcLinkVoltage": 750.5, "DcCurrent": 150.5, "MotorTemp": 95, "ErrorCode": 1234}]},
    ),
    "value_tables_spaces.dbc": (
        "node: TESTER",
        "dut.ErrorState == \"Over Voltage\" and dut.OperatingMode == 'Drive - HV on'",
        {"BMS_State": [{"ErrorState": 1, "OperatingMode": 2}]},
        {"BMS_State": [{"ErrorState": 0, "OperatingMode": 2}]},
    ),
    "fd_64_byte.dbc": (
        "fd: true",
        "dut.Cell24_Voltage > 3.5 V and dut.Checksum == 171",
        {"Pack_CellVoltages": [_fd_cells(checksum=171)]},
        {"Pack_CellVoltages": [_fd_cells(checksum=170)]},
    ),
    "j1939_two_sources.dbc": (
        "",
        "dut.PackA_Status.StateOfCharge > 50 % and dut.PackB_Status.StateOfCharge < 50 %",
        {
            "PackA_Status": [{"PackVoltage": 700, "PackCurrent": 10, "StateOfCharge": 80}],
            "PackB_Status": [{"PackVoltage": 700, "PackCurrent": 10, "StateOfCharge": 20}],
        },
        {
            "PackA_Status": [{"PackVoltage": 700, "PackCurrent": 10, "StateOfCharge": 20}],
            "PackB_Status": [{"PackVoltage": 700, "PackCurrent": 10, "StateOfCharge": 80}],
        },
    ),
    "no_cycle_times.dbc": (
        "node: BENCH\ncycle_times: {DCDC_Status: 100 ms}",
        "dut.OutputVoltage > 13 V",
        {"DCDC_Status": [{"OutputVoltage": 14.0, "OutputCurrent": 20.0}]},
        {"DCDC_Status": [{"OutputVoltage": 12.0, "OutputCurrent": 20.0}]},
    ),
}

WAIT = """\
id: CORPUS-WAIT
title: A corpus file's signals in a run
version: 1.0.0
basis: {standard: test, clause: "0"}
requires: [dut]
steps:
  - wait_until: CONDITION
    timeout: 3 s
"""


def test_every_loadable_corpus_file_runs() -> None:
    from tests.test_dbc_corpus import LOADS

    assert set(RUNS) | {DUPLICATE_NAMES.name} == set(LOADS)


@pytest.mark.parametrize("dbc", sorted(RUNS))
def test_a_corpus_file_drives_a_sequence_to_pass_and_fail(tmp_path: Path, reports: Path, dbc: str) -> None:
    extra, condition, right, wrong = RUNS[dbc]
    (port,) = free_ports(1)
    station = _station(tmp_path, CORPUS / dbc, port, extra)
    seq = tmp_path / "seq.yaml"
    seq.write_text(WAIT.replace("CONDITION", condition))
    with sim_serve(station):
        for frames, rc, verdict in ((right, 0, "PASS"), (wrong, 1, "FAIL")):
            sent = [_frame(CORPUS / dbc, name, values) for name, pages in frames.items() for values in pages]
            with sending(port, sent, period=0.02):
                r = bench("run", seq, "--station", station, "--reports", reports, timeout=90)
            assert r.rc == rc, r.out + r.err
            assert r.result()["verdict"] == verdict
