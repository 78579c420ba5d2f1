"""The calibration gate holds on every entry point, not only `bench run`.

Lab jobs and campaign cells run through bench/runner.py as `bench run` does; an instrument past
its calibration due date on a physical station refuses them all alike, before anything moves.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.plan import build_plan
from tests.conftest import bench
from tests.report_support import physical, short_sequence, station_copy

EXPIRED = {"due: 2027-01-15": "due: 2020-01-15"}
REFUSED = "calibration due 2020-01-15 has passed"


@pytest.fixture
def expired_station(tmp_path: Path) -> Path:
    station = station_copy(tmp_path, replace=EXPIRED)
    physical(station)
    return station


def test_run_plan_refuses_out_of_cal(tmp_path: Path, expired_station: Path) -> None:
    """The path of lab jobs (bench/lab/agent.py) and campaign cells."""
    from bench.runner import run_plan

    plan = build_plan(short_sequence(tmp_path), expired_station, {})
    with pytest.raises(BenchError) as exc:
        run_plan(plan, tmp_path / "reports")
    assert exc.value.exit_code == 2
    assert "SIM-PSU-01" in str(exc.value) and REFUSED in str(exc.value)
    assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").iterdir()), "nothing ran"
    # The override is the same as `bench run --allow-out-of-cal`.
    result = run_plan(plan, tmp_path / "reports", allow_out_of_cal="lab backlog, approved by QM", full_report=False)
    assert any("approved by QM" in d for d in result.deviations), result.deviations


def test_campaign_cell_refuses_out_of_cal(tmp_path: Path, expired_station: Path) -> None:
    r = bench(
        "campaign", short_sequence(tmp_path), "--station", expired_station, "--faults", "none",
        "--reports", tmp_path / "campaigns",
    )  # fmt: skip
    assert r.rc == 1, r.out + r.err
    (matrix_file,) = (tmp_path / "campaigns").glob("*/fault-matrix.json")
    (cell,) = json.loads(matrix_file.read_text())["cells"]
    assert cell["verdict"] == "ERROR" and REFUSED in cell["reason"], cell
    assert not cell["run_id"], "the cell never started a run"
