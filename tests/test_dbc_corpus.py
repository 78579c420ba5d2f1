"""A supplier's DBC loads as it is (issue 12): a corpus of real-world quirks, written by us.

Each file under tests/dbc/ either loads (``bench validate`` on a station that uses it passes,
with a note per opaque unit) or is refused in one line with exit code 2, and nothing cantools
prints reaches the console. Then: names (message-qualified, ambiguous short names), units
(spellings, opaque units, the station's mapping), value-table names with spaces, and roles
(``node``, ``send``, ``cycle_times``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT, Completed, bench
from tests.test_bad_inputs import CONTROL, assert_one_line

CORPUS = ROOT / "tests" / "dbc"

# File -> the notes `bench validate` prints for it (opaque units), in order.
LOADS: dict[str, list[str]] = {
    "vector_xxx_only.dbc": [],
    "odd_units.dbc": ["dut: unit 'Calls' is not in the unit table", "dut: unit 'Count' is not in the unit table"],
    "duplicate_names.dbc": [],
    "mux_cell_voltages.dbc": [],
    "big_endian.dbc": [],
    "value_tables_spaces.dbc": [],
    "no_cycle_times.dbc": [],
    "j1939_two_sources.dbc": [],
    "fd_64_byte.dbc": [],
}
# File -> the station config it needs (an FD message needs an FD bus).
STATION_EXTRA: dict[str, str] = {"fd_64_byte.dbc": "fd: true"}
# File -> what the one line of the refusal says.
REFUSED: dict[str, str] = {
    "refused_duplicate_ids.dbc": "messages Status_A and Status_B have the same frame id 0x100",
    "refused_overlapping_signals.dbc": "signals Current and Voltage overlap in message Status",
    "refused_empty.dbc": "refused_empty.dbc has no messages",
    "refused_frame_too_long.dbc": "message Status is 12 bytes long; a classic CAN frame carries at most 8",
    "refused_signal_twice_in_message.dbc": "signal Temperature is defined twice in message Status",
}

# The `dbc:` key is on this line of every station written by _station.
DBC_LINE = 7


def _station(tmp_path: Path, dbc: str, extra: str = "", name: str = "station.yaml") -> Path:
    path = tmp_path / name
    path.write_text(
        "id: corpus\n"
        "devices:\n"
        "  dut:\n"
        "    driver: can_dbc\n"
        "    config:\n"
        "      can: {interface: inproc, channel: dut0}\n"
        f"      dbc: {CORPUS / dbc}\n" + "".join(f"      {line}\n" for line in extra.splitlines() if line)
    )
    return path


def _sequence(tmp_path: Path, *steps: str, name: str = "seq.yaml") -> Path:
    path = tmp_path / name
    path.write_text(
        'id: CORPUS-SEQ\ntitle: corpus\nversion: 1.0.0\nbasis: {standard: test, clause: "0"}\nrequires: [dut]\n'
        "steps:\n" + "".join(f"  - {s}\n" for s in steps)
    )
    return path


def _validates(tmp_path: Path, station: Path, *steps: str) -> Completed:
    """``bench validate`` of a sequence of ``steps`` on ``station``, which must pass."""
    r = bench("validate", _sequence(tmp_path, *steps), "--station", station)
    assert r.rc == 0, r.err
    return r


def test_every_corpus_file_has_an_expectation() -> None:
    files = {p.name for p in CORPUS.glob("*.dbc")}
    assert files == set(LOADS) | set(REFUSED)
    assert len(files) >= 10


@pytest.mark.parametrize("dbc", sorted(LOADS))
def test_corpus_file_loads_with_notes_for_opaque_units(tmp_path: Path, dbc: str) -> None:
    r = bench("validate", _station(tmp_path, dbc, STATION_EXTRA.get(dbc, "")))
    assert r.rc == 0, r.err
    lines = r.out.strip().splitlines()
    assert lines[0].endswith("station.yaml: ok (station)"), r.out
    notes = [line.strip() for line in lines[1:]]
    assert len(notes) == len(LOADS[dbc]), r.out
    for note, expected in zip(notes, LOADS[dbc], strict=True):
        assert note.startswith(f"note: {expected}"), note
    assert r.err == ""


@pytest.mark.parametrize("dbc", sorted(REFUSED))
def test_corpus_file_is_refused_in_one_line(tmp_path: Path, dbc: str) -> None:
    r = bench("validate", _station(tmp_path, dbc))
    assert_one_line(r, "station.yaml", DBC_LINE, REFUSED[dbc])
    assert "devices.dut.config.dbc: " in r.err
    # cantools' own warning ("Overwriting message ...") or prints never reach the console.
    assert r.out == "", r.out


def test_an_fd_message_on_a_classic_bus_is_refused(tmp_path: Path) -> None:
    r = bench("validate", _station(tmp_path, "fd_64_byte.dbc"))
    assert_one_line(
        r,
        "station.yaml",
        DBC_LINE,
        "message Pack_CellVoltages is a CAN FD frame (64 bytes) and this device's bus is classic",
    )
    assert bench("validate", _station(tmp_path, "fd_64_byte.dbc", "fd: true\ndata_bitrate: 2000000", "fd.yaml")).rc == 0
    # python-can's own keyword inside `can:` says the same.
    station = _station(tmp_path, "fd_64_byte.dbc", name="can_fd.yaml")
    station.write_text(station.read_text().replace("channel: dut0}", "channel: dut0, fd: true}"))
    assert bench("validate", station).rc == 0
    r = bench("validate", _station(tmp_path, "fd_64_byte.dbc", "data_bitrate: 2000000", "rate.yaml"))
    assert_one_line(r, "rate.yaml", 8, "'data_bitrate' is the CAN FD data phase's bit rate: it needs 'fd: true'")


def test_a_file_of_zero_bytes_is_refused_as_empty(tmp_path: Path) -> None:
    empty = tmp_path / "zero.dbc"
    empty.write_bytes(b"")
    r = bench("validate", _station(tmp_path, str(empty)))
    assert_one_line(r, "station.yaml", DBC_LINE, "zero.dbc has no messages (the file is empty)")


# --- names ---------------------------------------------------------------------------------


def test_an_ambiguous_short_name_lists_the_qualified_candidates(tmp_path: Path) -> None:
    """The same signal name in two messages was merged silently, the last definition winning."""
    station = _station(tmp_path, "duplicate_names.dbc", "node: VCU")
    seq = _sequence(tmp_path, "wait_until: dut.MaxCellVoltage > 4 V\n    timeout: 1 s")
    r = bench("validate", seq, "--station", station)
    assert_one_line(
        r,
        "seq.yaml",
        7,
        "'dut.MaxCellVoltage' is ambiguous: MaxCellVoltage is in 2 messages;"
        " write dut.Pack_Summary.MaxCellVoltage or dut.String_Summary.MaxCellVoltage",
    )


def test_qualified_names_and_unique_short_names_validate(tmp_path: Path) -> None:
    station = _station(tmp_path, "duplicate_names.dbc", "node: VCU")
    r = _validates(
        tmp_path,
        station,
        "wait_until: dut.Pack_Summary.MaxCellVoltage > 4 V and dut.String_Summary.MaxCellVoltage > 4 V\n"
        "    timeout: 1 s",
        "check: dut.PackSoc > 10 % and dut.Pack_Summary.PackSoc > 10 %",
        "measure: {name: string_min, signal: dut.String_Summary.MinCellVoltage, min: 2.5 V}",
        "set: {dut.VCU_Request.ContactorRequest: Close}",
        "set: {dut.ContactorRequest: Open}",
    )
    for bad, message in [
        ("check: dut.Pack_Summary.NoSuch > 1 V", "unknown signal 'dut.Pack_Summary.NoSuch'"),
        ("measure: {name: x, signal: dut.MinCellVoltage}", "'dut.MinCellVoltage' is ambiguous"),
        ("set: {dut.Pack_Summary.PackSoc: 5 %}", "cannot be set (it is measured, not commanded)"),
    ]:
        r = bench("validate", _sequence(tmp_path, bad, name="bad.yaml"), "--station", station)
        assert_one_line(r, "bad.yaml", 7, message)


def test_value_table_names_with_spaces_are_written_in_quotes(tmp_path: Path) -> None:
    station = _station(tmp_path, "value_tables_spaces.dbc", "node: TESTER")
    seq = _sequence(
        tmp_path,
        "check: dut.ErrorState == \"No Error\" and dut.OperatingMode != 'Drive - HV on'",
        'wait_until: dut.BMS_State.ErrorState == "over voltage" or dut.ErrorState == Over_Voltage_not\n'
        "    timeout: 1 s",
    )
    r = bench("validate", seq, "--station", station)
    assert_one_line(r, "seq.yaml", 8, "dut.ErrorState has no state 'Over_Voltage_not'")
    # The list of states quotes the names a condition can only write in quotes.
    assert '(states: "No Error", "Over Voltage", "Under Voltage", "Over Temperature", "Signal not available")' in r.err
    r = _validates(
        tmp_path,
        station,
        "check: dut.ErrorState == \"No Error\" and dut.OperatingMode != 'Drive - HV on'",
        "set: {dut.ModeRequest: Wake up}",
        "set: {dut.ModeRequest: '\"HV on\"'}",
    )
    good = _station(tmp_path, "value_tables_spaces.dbc", "node: TESTER\ninitial: {ModeRequest: Wake up}", "good.yaml")
    assert bench("validate", good).rc == 0
    bad = _station(tmp_path, "value_tables_spaces.dbc", "node: TESTER\ninitial: {ModeRequest: Wakeup}", "bad.yaml")
    assert_one_line(
        bench("validate", bad),
        "bad.yaml",
        9,
        """initial: ModeRequest has no state 'Wakeup' (states: "Go to sleep", "Wake up", "HV on")""",
    )


# --- units ---------------------------------------------------------------------------------


def test_common_spellings_map_to_the_unit_table(tmp_path: Path) -> None:
    station = _station(tmp_path, "odd_units.dbc", "node: BENCH")
    r = _validates(
        tmp_path,
        station,
        "check: dut.LinkVoltage > 500 V and dut.LinkCurrent < 300 A and dut.MotorSpeed < 3000 rpm",
        "check: dut.MotorTorque < 2 kJ and dut.VehicleSpeed < 90 km/h and dut.CoolantTemp < 60 degC",
        "check: dut.AmbientTemp > -20 degC and dut.ChargeThroughput < 100 Ah and dut.H2Concentration < 2 %vol",
        "check: dut.IsoResistance > 500 kOhm and dut.TankPressure < 70 MPa and dut.CabinPressure > 90 kPa",
        "check: dut.DcdcPower < 3 kW",
        "set: {dut.SpeedRequest: 1500 rpm}",
    )
    assert "note: dut: unit 'Count'" in r.out, r.out


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("dut.WakeupCount < 5 %", "cannot compare a value in Count with a value in %"),
        ("dut.WakeupCount < 5 V", "cannot compare a value in Count with a value in V"),
        ("dut.WakeupCount < dut.ApiCalls", "cannot compare a value in Count with a value in Calls"),
        ("dut.WakeupCount + dut.ApiCalls > 1", "cannot add a value in Count with a value in Calls"),
        ("dut.WakeupCount * 2 s > 1 Count", "cannot multiply a value in Count with a value in s"),
        ("dut.WakeupCount > 5 Cnt", "unknown unit 'Cnt'"),
        ("dut.LinkVoltage > 5", "unit mismatch"),
    ],
)
def test_an_opaque_unit_mixes_with_nothing_else(tmp_path: Path, condition: str, message: str) -> None:
    station = _station(tmp_path, "odd_units.dbc")
    r = bench("validate", _sequence(tmp_path, f"check: {condition}"), "--station", station)
    assert_one_line(r, "seq.yaml", 7, message)


def test_an_opaque_unit_compares_with_a_plain_number_or_itself(tmp_path: Path) -> None:
    station = _station(tmp_path, "odd_units.dbc")
    r = _validates(
        tmp_path,
        station,
        "check: dut.WakeupCount < 5 and dut.WakeupCount < 5 Count and dut.WakeupCount <= dut.ResetCount",
        "check: dut.WakeupCount * 2 < 10 Count and dut.WakeupCount / dut.ResetCount < 2 and dut.ApiCalls != 0",
        "measure: {name: wakeups, signal: dut.WakeupCount, max: 10 Count}",
    )
    r = bench(
        "validate",
        _sequence(tmp_path, "measure: {name: wakeups, signal: dut.WakeupCount, max: 10 %}", name="bad.yaml"),
        "--station",
        station,
    )
    assert_one_line(r, "bad.yaml", 7, "the 'max' limit is in %, the value in Count")


def test_a_station_maps_units_per_device(tmp_path: Path) -> None:
    station = _station(tmp_path, "odd_units.dbc", 'units: {Count: "1", Calls: "1"}')
    r = bench("validate", station)
    assert r.rc == 0, r.err
    assert "note:" not in r.out, r.out
    _validates(tmp_path, station, "check: dut.WakeupCount + dut.ApiCalls < 5")
    bad = _station(tmp_path, "odd_units.dbc", "units: {Count: Cnt}", name="bad.yaml")
    assert_one_line(
        bench("validate", bad), "bad.yaml", 8, "units: 'Count' maps to 'Cnt', which is not a unit the bench knows"
    )


def test_a_bare_number_next_to_a_percentage_is_still_refused(tmp_path: Path) -> None:
    """Issue 11's rule holds beside the opaque units: `60` next to a value in % is 0.6 %."""
    station = _station(tmp_path, "duplicate_names.dbc")
    r = bench("validate", _sequence(tmp_path, "check: dut.PackSoc < 60"), "--station", station)
    assert_one_line(r, "seq.yaml", 7, "'60' has no unit, but dut.PackSoc is in %: write '60 %'")


# --- roles ---------------------------------------------------------------------------------


def test_a_node_not_in_the_file_lists_the_nodes(tmp_path: Path) -> None:
    r = bench("validate", _station(tmp_path, "duplicate_names.dbc", "node: BENCH"))
    assert_one_line(r, "station.yaml", 8, "node 'BENCH' is not in")
    assert "(nodes: BMS, VCU)" in r.err
    r = bench("validate", _station(tmp_path, "vector_xxx_only.dbc", "node: Vector__XXX"))
    assert_one_line(r, "station.yaml", 8, "node 'Vector__XXX' is not in")
    assert "(it names no nodes)" in r.err


def test_without_a_node_the_device_listens_and_send_names_what_it_sends(tmp_path: Path) -> None:
    listener = _station(tmp_path, "vector_xxx_only.dbc")
    seq = _sequence(tmp_path, "set: {dut.hvil_enable: On}")
    assert_one_line(bench("validate", seq, "--station", listener), "seq.yaml", 7, "cannot be set")
    sender = _station(tmp_path, "vector_xxx_only.dbc", "send: [HVIL_Control]", name="sender.yaml")
    assert bench("validate", seq, "--station", sender).rc == 0
    # A message another node sends is not the bench's to send.
    bad = _station(tmp_path, "duplicate_names.dbc", "node: VCU\nsend: [Pack_Summary]", name="bad.yaml")
    assert_one_line(bench("validate", bad), "bad.yaml", 9, "send: Pack_Summary is sent by BMS, not by VCU")
    bad = _station(tmp_path, "duplicate_names.dbc", "send: [NoSuch]", name="bad2.yaml")
    assert_one_line(bench("validate", bad), "bad2.yaml", 8, "send: 'NoSuch' is not a message of")
    # With node and send, the node's other messages are not sent.
    only = _station(tmp_path, "no_cycle_times.dbc", "node: BENCH\nsend: []", name="only.yaml")
    seq = _sequence(tmp_path, "set: {dut.VoltageSetpoint: 14 V}", name="set.yaml")
    assert_one_line(bench("validate", seq, "--station", only), "set.yaml", 7, "cannot be set")


@pytest.mark.parametrize(
    ("cycle_times", "message"),
    [
        ("{NoSuch: 100 ms}", "cycle_times: 'NoSuch' is not a message of"),
        ("{DCDC_Event: 5 V}", "cycle_times: DCDC_Event must be a time from 1 ms to 1 h, got '5 V'"),
        ("[DCDC_Event]", "'cycle_times' must map message names to durations"),
    ],
)
def test_bad_cycle_times_are_refused(tmp_path: Path, cycle_times: str, message: str) -> None:
    station = _station(tmp_path, "no_cycle_times.dbc", f"cycle_times: {cycle_times}")
    assert_one_line(bench("validate", station), "station.yaml", 8, message)


def test_no_control_characters_in_notes(tmp_path: Path) -> None:
    r = bench("validate", _station(tmp_path, "odd_units.dbc"))
    assert not CONTROL.search(r.out)
    assert re.search(r"note: dut: unit 'Count' is not in the unit table \(dut\.ResetCount, dut\.WakeupCount\)", r.out)


@pytest.mark.parametrize(
    ("spelling", "reference", "scale"),
    [
        ("Volt", "V", 1),
        ("volt", "V", 1),
        ("Ampere", "A", 1),
        ("As", "A*s", 1),
        ("mAh", "A*h", 1e-3),
        ("rpm", "1/min", 1),
        ("RPM", "1/min", 1),
        ("Nm", "J", 1),
        ("km/h", "m/s", 1 / 3.6),
        ("Ohm", "ohm", 1),
        ("kOhm", "ohm", 1e3),
        ("Ω", "ohm", 1),
        ("°C", "degC", 1),
        ("deg C", "degC", 1),
        ("DegC", "degC", 1),
        ("%vol", "%", 1),
        ("ppm", "%", 1e-4),
        ("kPa", "Pa", 1e3),
        ("MPa", "bar", 10),
        ("kW", "W", 1e3),
        ("mV", "V", 1e-3),
        ("mA", "A", 1e-3),
    ],
)
def test_a_spelling_means_its_unit(spelling: str, reference: str, scale: float) -> None:
    from bench.units import parse_unit

    unit, ref = parse_unit(spelling), parse_unit(reference)
    assert unit.dim == ref.dim and not unit.opaque
    # 20 of the spelling is 20 * scale of the reference, offsets included (a lone Celsius is absolute).
    assert unit.to_base(20) == pytest.approx(ref.to_base(20 * scale))
