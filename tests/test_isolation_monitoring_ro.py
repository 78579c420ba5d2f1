"""R100 isolation monitoring: Ro follows the bus's own isolation Ri (FMVSS 305 S8(3), S8(4)).

The same sequence on two simulated items whose isolation Ri differs tenfold: with Ri given, Ro
is the one that brings the bus to 97.5 Ohm/V and the warning test passes; with another item's
Ri, the Ri measured before the insertion puts Ro outside S8(4)'s interval and the run fails
before Ro goes in.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, bench
from tests.report_support import station_copy

SEQUENCE = ROOT / "sequences" / "r100" / "isolation_monitoring.yaml"
U_MAX_V = 806.4
TARGET_OHM_PER_V = 97.5


def _station_with_ri(tmp_path: Path, ri_kohm: float) -> Path:
    anchor = "iso_warning_ohm_per_v: 100\n"
    return station_copy(tmp_path, replace={anchor: f"{anchor}        iso_resistance_kohm: {ri_kohm:g}\n"})


def _inserted_ro_kohm(run: Path) -> list[float]:
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    return [e["readback"]["iso_ro"] for e in events if e["kind"] == "set" and e["readback"].get("iso_ro", 0.0) > 0.0]


@pytest.mark.parametrize("ri_kohm", [5000.0, 500.0])
def test_ro_is_computed_from_the_measured_ri(tmp_path: Path, ri_kohm: float) -> None:
    station = _station_with_ri(tmp_path, ri_kohm)
    done = bench("run", SEQUENCE, "--station", station, "--reports", tmp_path / "reports", "-p", f"ri={ri_kohm:g}kOhm")
    assert done.rc == 0, done.out + done.err
    meas = {m["name"]: m["value"] for m in done.result()["measurements"]}
    assert meas["ri_measured"] == pytest.approx(ri_kohm, abs=1.0)
    expected_ro = 1.0 / (1.0 / (TARGET_OHM_PER_V * U_MAX_V / 1000.0) - 1.0 / ri_kohm)
    assert _inserted_ro_kohm(done.run_dir()) == [pytest.approx(expected_ro, rel=1e-4)]
    assert 95.0 <= meas["isolation_with_ro"] <= 100.0


def test_a_ro_for_another_items_ri_is_not_inserted(tmp_path: Path) -> None:
    # The item's Ri is 500 kOhm; Ro computed for the default 5 MOhm (79.9 kOhm) would leave the bus
    # at about 85 Ohm/V, below S8(4)'s 95 Ohm/V.
    station = _station_with_ri(tmp_path, 500.0)
    done = bench("run", SEQUENCE, "--station", station, "--reports", tmp_path / "reports")
    assert done.rc == 1, done.out + done.err
    assert "Ro within S8(4)'s interval for the measured Ri" in done.out
    assert _inserted_ro_kohm(done.run_dir()) == []
