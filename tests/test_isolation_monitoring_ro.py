"""R100 isolation monitoring: Ro follows the bus's own isolation Ri (FMVSS 305 S8(3), S8(4)).

The same sequence, with the same parameters, on two simulated items whose isolation Ri differs
tenfold: each time Ro is computed from the Ri measured just before it goes in, lands inside
S8(4)'s interval 1/(1/(95 U) - 1/Ri) <= Ro < 1/(1/(100 U) - 1/Ri), brings the bus to about
97.5 Ohm/V, and the warning test passes.
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
    done = bench("run", SEQUENCE, "--station", station, "--reports", tmp_path / "reports")
    assert done.rc == 0, done.out + done.err
    meas = {m["name"]: m["value"] for m in done.result()["measurements"]}
    ri = meas["ri_measured"]
    assert ri == pytest.approx(ri_kohm, abs=1.0)
    u = U_MAX_V / 1000.0  # kOhm per Ohm/V
    [ro] = _inserted_ro_kohm(done.run_dir())
    assert ro == pytest.approx(1.0 / (1.0 / (TARGET_OHM_PER_V * u) - 1.0 / ri), rel=1e-3)
    assert 1.0 / (1.0 / (95.0 * u) - 1.0 / ri) <= ro < 1.0 / (1.0 / (100.0 * u) - 1.0 / ri)
    assert 95.0 <= meas["isolation_with_ro"] <= 100.0
