"""VERIFY-BMS-MEASUREMENT judges the BMS's cell extremes on the lab's DAQ: a BMS that measures every
cell 50 mV low fails on the per-cell comparison, not only on the 192-cell sum; a sound one passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT, bench

SEQUENCE = ROOT / "sequences" / "verification" / "bms_measurement.yaml"
PER_CELL = (
    "cell_v_max_bms_minus_daq",
    "cell_v_min_bms_minus_daq",
    "cell_t_max_bms_minus_daq",
    "cell_t_min_bms_minus_daq",
)


@pytest.mark.parametrize(
    ("fault", "verdict", "outcomes"),
    [
        ([], "PASS", ("PASS", "PASS", "PASS", "PASS")),
        (["--fault", "cell_voltage_sensor_offset"], "FAIL", ("FAIL", "FAIL", "PASS", "PASS")),
    ],
)
def test_per_cell_comparison_with_the_daq(
    tmp_path: Path, fault: list[str], verdict: str, outcomes: tuple[str, ...]
) -> None:
    done = bench("run", SEQUENCE, "--reports", tmp_path, *fault, timeout=300)
    result = done.result()
    assert result["verdict"] == verdict, done.out + done.err
    meas = {m["name"]: m for m in result["measurements"]}
    assert tuple(meas[name]["outcome"] for name in PER_CELL) == outcomes
    if fault:
        # The DAQ reads the true cell: the difference is the BMS's own 50 mV error.
        assert meas["cell_v_max_bms_minus_daq"]["value"] == pytest.approx(-0.050, abs=0.002)
    else:
        assert abs(meas["cell_v_max_bms_minus_daq"]["value"]) < 0.002
        assert abs(meas["cell_t_max_bms_minus_daq"]["value"]) < 0.5
