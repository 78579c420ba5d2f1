"""The cell-level sequences on the simulated cell BMS (stations/sim-cells.yaml), in virtual time.

CELL-OV-TRIP's search finds the over-voltage trip point of the nominal BMS within 2 mV of the
threshold the station configures, and a BMS whose threshold is 30 mV high FAILs the acceptance
limit. CELL-V-ACCURACY judges every channel at every point with a stated uncertainty, and a gain
error on one channel FAILs exactly that channel's measures, which the report names.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from simulators.cell_bms import GAIN_ERROR_CELL, OV_THRESHOLD_ERROR_V
from tests.conftest import ROOT, bench

STATION = ROOT / "stations" / "sim-cells.yaml"
OV_TRIP = ROOT / "sequences" / "cell" / "ov_trip.yaml"
V_ACCURACY = ROOT / "sequences" / "cell" / "v_accuracy.yaml"
CHANNELS = 16
POINTS = ("3v0", "3v7", "4v1")
ERROR_NAME = re.compile(r"cell_(\d\d)_error_at_(\dv\d)")


def _bms_config() -> dict[str, Any]:
    """The BMS's own settings in the station's bms_cells simulator entry."""
    station = YAML(typ="safe").load(STATION.read_text(encoding="utf-8"))
    (entry,) = [s for s in station["simulators"] if s["kind"] == "bms_cells"]
    bms: dict[str, Any] = entry["config"]["bms"]
    return bms


def _run(tmp_path: Path, sequence: Path, *fault: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]], Path]:
    args = ["--fault", *fault] if fault else []
    done = bench("run", sequence, "--station", STATION, "--reports", tmp_path, "-q", *args)
    result = done.result()
    return result, {m["name"]: m for m in result["measurements"]}, done.run_dir()


def test_ov_trip_point_of_the_nominal_bms_is_its_configured_threshold(tmp_path: Path) -> None:
    threshold = float(_bms_config()["ov_threshold_v"])
    result, meas, _ = _run(tmp_path, OV_TRIP)
    assert result["verdict"] == "PASS", result["reason"]
    trip = meas["ov_trip_point"]
    assert trip["unit"] == "V" and trip["outcome"] == "PASS"
    assert abs(trip["value"] - threshold) <= 0.002
    # The interval of the last two probes (1 mV) gives the uncertainty, with the emulator's own.
    assert trip["uncertainty"] is not None and 0 < trip["uncertainty"] < 0.005
    assert "bisection of cells.m01c3_voltage_set" in trip["how"]


def test_a_threshold_30_mv_high_fails_the_acceptance_limit(tmp_path: Path) -> None:
    threshold = float(_bms_config()["ov_threshold_v"])
    result, meas, _ = _run(tmp_path, OV_TRIP, "cell_ov_threshold_30mv_high")
    assert result["verdict"] == "FAIL"
    trip = meas["ov_trip_point"]
    assert trip["outcome"] == "FAIL"
    assert abs(trip["value"] - (threshold + OV_THRESHOLD_ERROR_V)) <= 0.002
    assert trip["value"] > trip["high"]
    # The reaction to a cell well above either threshold is still in time: only the trip point fails.
    assert meas["ov_reaction_time"]["outcome"] == "PASS"


def _errors(meas: dict[str, dict[str, Any]]) -> dict[tuple[int, str], dict[str, Any]]:
    out = {}
    for name, m in meas.items():
        found = ERROR_NAME.fullmatch(name)
        if found:
            out[(int(found.group(1)), found.group(2))] = m
    return out


def test_every_channel_error_is_reported_with_its_uncertainty(tmp_path: Path) -> None:
    result, meas, _ = _run(tmp_path, V_ACCURACY)
    assert result["verdict"] == "PASS", result["reason"]
    errors = _errors(meas)
    assert set(errors) == {(n, p) for n in range(1, CHANNELS + 1) for p in POINTS}
    for m in errors.values():
        assert m["unit"] == "mV" and m["outcome"] == "PASS"
        assert m["uncertainty"] is not None and m["uncertainty"] > 0
        assert m["low"] < m["value"] < m["high"]
    # The uncertainty of the reference grows with the voltage (0.05 % of reading + 2 mV).
    assert errors[(1, "3v0")]["uncertainty"] < errors[(1, "4v1")]["uncertainty"]


def test_a_channel_with_a_gain_error_fails_and_the_report_names_it(tmp_path: Path) -> None:
    result, meas, run = _run(tmp_path, V_ACCURACY, "cell_gain_error")
    assert result["verdict"] == "FAIL"
    failed = {key for key, m in _errors(meas).items() if m["outcome"] == "FAIL"}
    assert failed == {(GAIN_ERROR_CELL, p) for p in POINTS}
    for p in POINTS:
        m = meas[f"cell_{GAIN_ERROR_CELL:02d}_error_at_{p}"]
        assert m["value"] > m["high"] and m["uncertainty"] > 0
    report = html.unescape((run / "report.html").read_text(encoding="utf-8"))
    not_conforming = set(re.findall(r"(cell_\d\d_error_at_\dv\d) = [^<]*? does not conform", report))
    assert not_conforming == {f"cell_{GAIN_ERROR_CELL:02d}_error_at_{p}" for p in POINTS}


@pytest.mark.parametrize("sequence", sorted((ROOT / "sequences" / "cell").glob("*.yaml")), ids=lambda p: p.stem)
def test_each_cell_sequence_passes_on_the_nominal_bms(tmp_path: Path, sequence: Path) -> None:
    result, _, _ = _run(tmp_path, sequence)
    assert result["verdict"] == "PASS", result["reason"]
    # Every sequence ends with the emulator's outputs off and the balancing off, read back.
    assert all(s["safe"] for s in result["safe_state"]), result["safe_state"]
