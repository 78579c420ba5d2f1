"""A CAN device waits at connect for what the run refers to, within its own timeout (issue 12, item 5).

The device waits only for the received messages that the sequence or the station's supervisor
(limits, e-stop, safe-state verify) refers to, within 2.5 times the slowest awaited cycle (at
least 1 s) or the station's ``connect_timeout``. The engine's connect limit follows from the
driver's, so a missing message is named, with its frame id and cycle, by the driver: not cut
short by a fixed engine timeout. In-process link, virtual time: nothing sends, so every awaited
message is missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import bench

DBC = """\
VERSION ""

NS_ :

BS_:

BU_: BMS VCU

BO_ 291 BMS_Slow: 8 BMS
 SG_ PackEnergy : 0|16@1+ (0.1,0) [0|6553.5] "kWh" VCU

BO_ 292 BMS_Fast: 8 BMS
 SG_ PackVoltage : 0|16@1+ (0.1,0) [0|6553.5] "V" VCU

BO_ 293 BMS_Unused: 8 BMS
 SG_ FanSpeed : 0|16@1+ (1,0) [0|65535] "rpm" VCU

BO_ 2566844416 BMS_Extended: 8 BMS
 SG_ CellTempMax : 0|8@1+ (1,-40) [-40|215] "degC" VCU

BO_ 512 VCU_Request: 8 VCU
 SG_ ContactorRequest : 0|8@1+ (1,0) [0|1] "" BMS

BA_DEF_ BO_ "GenMsgCycleTime" INT 0 65535;
BA_DEF_DEF_ "GenMsgCycleTime" 0;
BA_ "GenMsgCycleTime" BO_ 291 5400;
BA_ "GenMsgCycleTime" BO_ 292 100;
BA_ "GenMsgCycleTime" BO_ 293 50;
BA_ "GenMsgCycleTime" BO_ 2566844416 1000;
BA_ "GenMsgCycleTime" BO_ 512 100;
"""


WAIT = "wait_until: dut.PackEnergy > 10 kWh\n    timeout: 1 s"


def _files(tmp_path: Path, step: str, extra: str = "", limits: str = "") -> tuple[Path, Path]:
    (tmp_path / "dut.dbc").write_text(DBC)
    station = tmp_path / "station.yaml"
    station.write_text(
        "id: connect-wait\nsimulated: true\nvirtual_time: true\ndevices:\n  dut:\n    driver: can_dbc\n"
        "    config:\n      dbc: dut.dbc\n      node: VCU\n      can: {interface: inproc, channel: dut0}\n"
        + "".join(f"      {line}\n" for line in extra.splitlines() if line)
        + limits
    )
    seq = tmp_path / "seq.yaml"
    seq.write_text(
        'id: CONNECT-WAIT\ntitle: t\nversion: 1.0.0\nbasis: {standard: test, clause: "0"}\nrequires: [dut]\n'
        f"steps:\n  - {step}\n"
    )
    return station, seq


def _fault(run_dir: Path) -> dict[str, Any]:
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    faults = [e for e in events if e["kind"] == "device_fault"]
    assert len(faults) == 1, faults
    fault: dict[str, Any] = faults[0]
    return fault


def test_a_missing_slow_message_is_named_after_its_own_timeout(tmp_path: Path, reports: Path) -> None:
    """A 5.4 s cycle: the driver waits 13.5 s, longer than any fixed 10 s, and names the message."""
    station, seq = _files(tmp_path, WAIT)
    r = bench("run", seq, "--station", station, "--reports", reports, "-q")
    assert r.rc == 3, r.out + r.err
    result = r.result()
    assert result["verdict"] == "ERROR"
    expected = "dut: no frames of BMS_Slow (0x123, every 5.4 s) within 13.5 s"
    assert expected in result["reason"], result["reason"]
    fault = _fault(r.run_dir())
    assert expected in fault["reason"]
    # Raised by the driver at the end of its own wait (virtual time), not by the engine before it.
    assert 13.5 <= fault["t"] < 14.5, fault


def test_only_the_messages_the_run_refers_to_are_awaited_and_each_missing_one_is_named(
    tmp_path: Path, reports: Path
) -> None:
    """BMS_Unused (50 ms) is not referred to: not awaited. A limit and a safe-state verify count."""
    limits = (
        "    safe_state:\n      set: {dut.ContactorRequest: 0}\n      verify: dut.PackVoltage < 60 V\n"
        "limits:\n  - name: cell too hot\n    when: dut.CellTempMax > 60 degC\n"
    )
    station, seq = _files(tmp_path, WAIT, limits=limits)
    r = bench("run", seq, "--station", station, "--reports", reports, "-q")
    assert r.rc == 3, r.out + r.err
    reason = r.result()["reason"]
    assert (
        "no frames of BMS_Extended (0x18FEF000, every 1 s), BMS_Fast (0x124, every 100 ms),"
        " BMS_Slow (0x123, every 5.4 s) within 13.5 s"
    ) in reason, reason
    assert "BMS_Unused" not in reason


def test_the_station_overrides_the_wait(tmp_path: Path, reports: Path) -> None:
    station, seq = _files(tmp_path, WAIT, "connect_timeout: 3 s")
    r = bench("run", seq, "--station", station, "--reports", reports, "-q")
    assert r.rc == 3, r.out + r.err
    assert "no frames of BMS_Slow (0x123, every 5.4 s) within 3 s" in r.result()["reason"]
    assert 3 <= _fault(r.run_dir())["t"] < 4


def test_a_run_that_refers_to_no_received_message_waits_for_none(tmp_path: Path, reports: Path) -> None:
    station, seq = _files(tmp_path, "set: {dut.ContactorRequest: 1}")
    r = bench("run", seq, "--station", station, "--reports", reports, "-q")
    assert r.rc == 0, r.out + r.err


def test_a_bad_connect_timeout_is_one_line(tmp_path: Path) -> None:
    station, _ = _files(tmp_path, WAIT, "connect_timeout: 5 V")
    r = bench("validate", station)
    assert r.rc == 2
    assert r.err.count("\n") == 1 and "connect_timeout" in r.err, r.err
