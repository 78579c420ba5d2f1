"""R100 protection tests judged as the regulation words them, on the lab's own instruments.

* External short circuit: a protection that interrupts **or limits** the current passes, so a
  pack whose main fuse interrupts the short (contactors still closed) passes, and a BMS whose
  overcurrent trip is missing, opening late on its under-voltage trip, does not.
* Overcharge: the verdict's cell voltage is the DAQ's. A BMS that reads every cell 50 mV low
  trips with its cells really at 4.30 V while it reports 4.25 V: the DAQ sees it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import OVERCHARGE, ROOT, bench

SHORT_CIRCUIT = ROOT / "sequences" / "r100" / "short_circuit.yaml"


def _run(sequence: Path, tmp_path: Path, fault: str) -> dict[str, Any]:
    done = bench("run", sequence, "--reports", tmp_path, "--fault", fault, "-p", "observation=1min", timeout=600)
    assert done.rc in (0, 1), done.out + done.err
    return done.result()


def _measurements(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in result["measurements"]}


def test_a_short_interrupted_by_the_pack_fuse_passes(tmp_path: Path) -> None:
    result = _run(SHORT_CIRCUIT, tmp_path, "short_protected_by_fuse")
    assert result["verdict"] == "PASS"
    meas = _measurements(result)
    assert meas["interrupt_time"]["value"] <= 500
    steps = {s["name"]: s for s in result["steps"]}
    # The fuse interrupted the current: the contactors never opened.
    after = steps["no short-circuit current after observation"]["message"]
    assert "bms.contactors = CLOSED" in after and "bms.pack_current = 0 A" in after


def test_a_bms_without_its_overcurrent_trip_fails_the_short_circuit(tmp_path: Path) -> None:
    result = _run(SHORT_CIRCUIT, tmp_path, "overcurrent_protection_disabled")
    assert result["verdict"] == "FAIL"
    assert "contactors opened by the short-circuit protection" in result["reason"]


def test_the_overcharge_verdict_rests_on_the_daq_not_on_the_bms(tmp_path: Path) -> None:
    result = _run(OVERCHARGE, tmp_path, "cell_voltage_sensor_offset")
    assert result["verdict"] == "FAIL"
    meas = _measurements(result)
    assert 45 <= meas["bms_cell_voltage_error"]["value"] <= 55
    assert meas["bms_cell_voltage_error"]["outcome"] == "FAIL"
    # The cells really reached 4.30 V (the BMS reported 4.25 V when it tripped).
    assert meas["peak_cell_voltage"]["value"] >= 4.295
