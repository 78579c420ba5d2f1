"""`bench report campaign --trend NAME`: the X/MR control chart of one measurement across the runs
of a summary, from the run folders themselves (the same chart as `bench db trend`)."""

from __future__ import annotations

import re
from pathlib import Path

from bench.plan import build_plan
from bench.results.spc import MIN_CHART_POINTS, chart
from bench.runner import run_plan
from tests.conftest import ROOT, bench

CELL_STATION = ROOT / "stations" / "sim-cells.yaml"
OV_TRIP = ROOT / "sequences" / "cell" / "ov_trip.yaml"


def _trip_points(reports: Path, runs: int) -> list[float]:
    plan = build_plan(OV_TRIP, CELL_STATION)
    found = []
    for seed in range(1, runs + 1):  # each seed is another BMS: other channel errors and noise
        result = run_plan(plan, reports, seed=seed, full_report=False)
        found += [m.value for m in result.measurements if m.name == "ov_trip_point" and m.value is not None]
    return found


def test_the_campaign_report_charts_a_measurement_across_its_runs(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    values = _trip_points(reports, 12)
    assert len(values) == 12
    out = tmp_path / "campaign.html"
    r = bench("report", "campaign", *sorted(reports.iterdir()), "-o", out, "--trend", "ov_trip_point")
    assert r.rc == 0, r.err
    html = out.read_text()
    assert "<h2>Trend of ov_trip_point [V]</h2>" in html
    assert re.search(r'<img alt="X/MR chart of ov_trip_point" src="data:image/png;base64,[A-Za-z0-9+/=]{2000,}">', html)
    # The limits stated are those of the series the runs recorded, oldest first.
    c = chart(values)  # the order does not change the mean or the sigma of a series without trend
    assert f"12 runs, mean {c.centre:.6g}" in html


def test_a_measurement_no_run_recorded_is_one_line(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    _trip_points(reports, 1)
    r = bench("report", "campaign", *reports.iterdir(), "-o", tmp_path / "c.html", "--trend", "ov_trip_pint")
    assert r.rc == 2
    assert r.err.strip().count("\n") == 0, r.err
    assert "no run of the summary recorded a measurement 'ov_trip_pint'" in r.err and "ov_trip_point" in r.err
    assert not (tmp_path / "c.html").exists()


def test_too_few_runs_for_a_chart_say_so_in_the_report(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    _trip_points(reports, MIN_CHART_POINTS - 1)
    out = tmp_path / "c.html"
    r = bench("report", "campaign", *reports.iterdir(), "-o", out, "--trend", "ov_trip_point")
    assert r.rc == 0, r.err
    html = out.read_text()
    assert "<h2>Trend of ov_trip_point [V]</h2>" in html and "<img" not in html
    assert f"a control chart needs at least {MIN_CHART_POINTS} values, got {MIN_CHART_POINTS - 1}" in html
