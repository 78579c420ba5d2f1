"""A J1939 device in a run: frames by PGN, a DM1 over TP.BAM as signals, a pinned source address.

The device is tests/dbc/j1939_two_sources.dbc behind ``bench sim serve``. A stock python-can
``socketcand`` client plays the packs: it sends the status PGN and the DM1 with two DTCs over
BAM, every frame written out by hand here (TP.CM_BAM, then two TP.DT packets 50 ms apart).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import can
import pytest

from tests.conftest import bench
from tests.served import free_ports, sim_serve

DBC = Path(__file__).parent / "dbc" / "j1939_two_sources.dbc"
CHANNEL = "j1939"
PACK_A, PACK_B = 0xF3, 0xF4

# DM1 payload: lamp byte AWL on (bits 4-3 = 01), flash byte all "off" (0xFF), then per DTC:
# SPN bits 8-1, SPN bits 16-9, SPN bits 19-17 + FMI, CM bit + occurrence count.
LAMPS = bytes([0x04, 0xFF])
SPN1569_FMI31 = bytes([0x21, 0x06, 0x1F, 0x01])  # 1569 = 0x621
SPN168_FMI4 = bytes([0xA8, 0x00, 0x04, 0x02])
SPN190_FMI2 = bytes([0xBE, 0x00, 0x02, 0x01])


def _bam(source: int, payload: bytes) -> list[can.Message]:
    """TP.CM_BAM announcing a DM1 (PGN 0xFECA) of 10 bytes in 2 packets, then the TP.DT packets."""
    assert len(payload) == 10
    cm = can.Message(
        arbitration_id=0x1CECFF00 | source,
        is_extended_id=True,
        data=bytes([0x20, 10, 0, 2, 0xFF, 0xCA, 0xFE, 0x00]),
    )
    dt1 = can.Message(arbitration_id=0x1CEBFF00 | source, is_extended_id=True, data=bytes([1]) + payload[:7])
    dt2 = can.Message(
        arbitration_id=0x1CEBFF00 | source, is_extended_id=True, data=bytes([2]) + payload[7:] + b"\xff" * 4
    )
    return [cm, dt1, dt2]


def _status(source: int, priority: int, soc_percent: float) -> can.Message:
    """PGN 0xFF10 (pack status) with the given priority: voltage 700 V, current 10 A, SoC."""
    can_id = priority << 26 | 0xFF10 << 8 | source
    volts, amps, soc = round(700 / 0.05), round((10 + 1600) / 0.05), round(soc_percent / 0.4)
    data = volts.to_bytes(2, "little") + amps.to_bytes(2, "little") + bytes([soc, 0xFF, 0xFF, 0xFF])
    return can.Message(arbitration_id=can_id, is_extended_id=True, data=data)


def _no_dtc_dm1(source: int) -> can.Message:
    """A single-frame DM1 with no DTC active: lamps off, the all-zero DTC."""
    return can.Message(
        arbitration_id=0x18FECA00 | source, is_extended_id=True, data=bytes([0, 0xFF, 0, 0, 0, 0, 0xFF, 0xFF])
    )


@contextlib.contextmanager
def packs(port: int, cycle: list[list[can.Message]], seen: list[int]) -> Iterator[None]:
    """A stock socketcand client sends each group of ``cycle`` (frames 50 ms apart) every 0.5 s.

    ``seen`` collects the identifiers of the frames the bench sends on the channel.
    """
    bus = can.Bus(interface="socketcand", host="127.0.0.1", port=port, channel=CHANNEL)
    stop = threading.Event()

    def drain() -> None:
        while (msg := bus.recv(timeout=0)) is not None:
            seen.append(msg.arbitration_id)

    def run() -> None:
        while not stop.is_set():
            for group in cycle:
                for frame in group:
                    bus.send(frame)
                    stop.wait(0.05)
                drain()
            stop.wait(0.3)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        bus.shutdown()


def _station(tmp_path: Path, port: int, j1939: str) -> Path:
    path = tmp_path / "station.yaml"
    path.write_text(
        "id: j1939-device\n"
        "devices:\n"
        "  dut:\n"
        "    driver: can_dbc\n"
        "    config:\n"
        f"      dbc: {DBC}\n"
        "      node: BENCH\n"
        f"      can: {{interface: socketcand, host: 127.0.0.1, port: {port}, channel: {CHANNEL}}}\n"
        f"      j1939: {j1939}\n"
        f"serve:\n  simulators: []\n  can: {{port: {port}, channels: [{CHANNEL}]}}\n"
    )
    return path


SEQUENCE = """\
id: J1939-DM1
title: Pack A reports its two DTCs in DM1
version: 1.0.0
basis: {standard: SAE J1939-73, clause: "5.7.1"}
requires: [dut]
steps:
  - name: a DM1 with two DTCs
    wait_until: dut.DM1.active_count == 2 and dut.PackA_Status.StateOfCharge > 50 %
    timeout: 4 s
  - check: dut.DM1.spn1569_fmi31 == active and dut.DM1.spn168_fmi4 == active and dut.DM1.awl == on
  - check: dut.DM1.mil == off and dut.DM1.rsl == off
"""
PINNED = "{source: 0xF3, bench_address: 0xF8, dtcs: [{spn: 1569, fmi: 31}, {spn: 168, fmi: 4}]}"


@pytest.mark.parametrize(
    ("second_dtc", "rc", "verdict"), [(SPN168_FMI4, 0, "PASS"), (SPN190_FMI2, 1, "FAIL")], ids=["right", "wrong"]
)
def test_a_dm1_with_two_dtcs_over_bam_is_checked_by_a_sequence(
    tmp_path: Path, reports: Path, second_dtc: bytes, rc: int, verdict: str
) -> None:
    (port,) = free_ports(1)
    station = _station(tmp_path, port, PINNED)
    seq = tmp_path / "seq.yaml"
    seq.write_text(SEQUENCE)
    seen: list[int] = []
    # Pack A's status with priority 3, not the DBC's 6: matched by PGN.
    cycle = [[_status(PACK_A, 3, 80)], _bam(PACK_A, LAMPS + SPN1569_FMI31 + second_dtc)]
    with sim_serve(station), packs(port, cycle, seen):
        r = bench("run", seq, "--station", station, "--reports", reports, timeout=90)
    assert r.rc == rc, r.out + r.err
    result = r.result()
    assert result["verdict"] == verdict
    steps = result["steps"]
    assert steps[0]["outcome"] == "PASS", steps[0]  # reassembled: two DTCs, whichever they are
    assert steps[1]["outcome"] == verdict
    # The bench's command goes out with the bench's address from the station (0xF8), not the DBC's 0xF9.
    assert 0x0CFF20F8 in seen and 0x0CFF20F9 not in seen, [hex(i) for i in set(seen)]


def test_a_dm1_from_another_source_is_ignored_when_the_station_pins_one(tmp_path: Path, reports: Path) -> None:
    """Pack B (0xF4) reports both DTCs; the station pins pack A (0xF3), whose DM1 has none."""
    (port,) = free_ports(1)
    station = _station(tmp_path, port, PINNED)
    seq = tmp_path / "seq.yaml"
    seq.write_text(SEQUENCE)
    cycle = [
        [_status(PACK_A, 6, 80), _no_dtc_dm1(PACK_A)],
        _bam(PACK_B, LAMPS + SPN1569_FMI31 + SPN168_FMI4),
        [_status(PACK_B, 6, 90)],
    ]
    with sim_serve(station), packs(port, cycle, []):
        r = bench("run", seq, "--station", station, "--reports", reports, timeout=90)
    assert r.rc == 1, r.out + r.err
    steps = r.result()["steps"]
    assert r.result()["verdict"] == "FAIL" and steps[0]["outcome"] == "FAIL", steps[0]
    # Unpinned, the same frames pass: pack B's DM1 is the one with the DTCs.
    station = _station(tmp_path, port, "{dtcs: [{spn: 1569, fmi: 31}, {spn: 168, fmi: 4}]}")
    cycle = [[_status(PACK_A, 6, 80)], _bam(PACK_B, LAMPS + SPN1569_FMI31 + SPN168_FMI4)]
    with sim_serve(station), packs(port, cycle, []):
        r = bench("run", seq, "--station", station, "--reports", reports, timeout=90)
    assert r.rc == 0, r.out + r.err


def test_j1939_station_keys_are_checked(tmp_path: Path) -> None:
    from tests.test_bad_inputs import assert_one_line

    for j1939, message in [
        ("{source: 300}", "j1939: source must be a source address 0..253"),
        ("{bench_adress: 0xF9}", "j1939: unknown key 'bench_adress'"),
        ("{dtcs: [{spn: 1569}]}", "j1939: dtcs takes {spn: 0..524287, fmi: 0..31} entries"),
        ("[0xF3]", "'j1939' must be a mapping"),
    ]:
        assert_one_line(bench("validate", _station(tmp_path, 1, j1939)), "station.yaml", 9, message)


def test_a_j1939_key_makes_any_dbc_a_j1939_device(tmp_path: Path) -> None:
    """big_endian.dbc says nothing of J1939; `j1939: {}` in the station makes its DM1 signals exist."""
    from tests.test_bad_inputs import assert_one_line

    seq = tmp_path / "seq.yaml"
    seq.write_text(SEQUENCE.replace("dut.PackA_Status.StateOfCharge > 50 %", "dut.DM1.pl == off").split("  - check")[0])
    for j1939, rc in (("\n      j1939: {}", 0), ("", 2)):
        station = tmp_path / "station.yaml"
        station.write_text(
            "id: any-dbc\ndevices:\n  dut:\n    driver: can_dbc\n    config:\n"
            f"      dbc: {DBC.parent / 'big_endian.dbc'}\n      can: {{interface: inproc, channel: x}}{j1939}\n"
        )
        r = bench("validate", seq, "--station", station)
        if rc == 0:
            assert r.rc == 0, r.err
        else:
            assert_one_line(r, "seq.yaml", 8, "unknown signal 'dut.DM1.active_count'")
