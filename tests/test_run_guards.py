"""Guards every run passes before anything moves: a safe station id, writable state and reports folders.

Each refusal is one line with its exit code, and nothing is recorded or commanded.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import ROOT, SIM_STATION, bench
from tests.rofs import read_only_folder

SUPPLY_ON = ROOT / "tests" / "sequences" / "supply_on.yaml"
SHORT = ["-q", "-p", "voltage=10 V", "-p", "hold=1 s"]


def station_with_id(tmp_path: Path, station_id: str) -> Path:
    text = SIM_STATION.read_text().replace("../dbc/", f"{ROOT / 'dbc'}/")
    assert "id: sim\n" in text
    path = tmp_path / "station.yaml"
    path.write_text(text.replace("id: sim\n", f"id: {station_id}\n"))
    return path


def test_station_id_cannot_leave_the_state_folder(tmp_path: Path) -> None:
    state = tmp_path / "deep" / "er" / "state"
    state.mkdir(parents=True)
    station = station_with_id(tmp_path, "../../../outside")
    reports = tmp_path / "reports"
    r = bench("run", SUPPLY_ON, "--station", station, "--reports", reports, *SHORT, env={"BENCH_STATE_DIR": str(state)})
    assert r.rc == 2, r.out + r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.err, r.err
    line = next(n for n, text in enumerate(station.read_text().splitlines(), 1) if text.startswith("id:"))
    assert f"station.yaml:{line}: id: String should match pattern" in lines[0], lines[0]
    # Nothing was written anywhere: not outside the state folder, not a run folder.
    assert not list(tmp_path.rglob("outside*")), list(tmp_path.rglob("outside*"))
    assert not reports.exists() or not any(reports.iterdir())


def test_reset_interlock_refuses_a_path_as_station_id(tmp_path: Path) -> None:
    station = station_with_id(tmp_path, "a/../../b")
    r = bench("reset-interlock", "--station", station, "--reason", "test", env={"BENCH_STATE_DIR": str(tmp_path / "s")})
    assert r.rc == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert not list(tmp_path.rglob("b.interlock.jsonl"))


def test_read_only_reports_folder_is_refused_before_anything_moves(tmp_path: Path) -> None:
    with read_only_folder(tmp_path / "ro") as reports:
        r = bench("run", SUPPLY_ON, "--reports", reports, *SHORT)
        assert r.rc == 2, r.out + r.err
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in r.err and "internal error" not in r.err, r.err
        assert lines[0].startswith(f"error: reports folder {reports}") and "not writable" in lines[0], lines[0]
        assert not any(reports.iterdir())
    # Below a read-only folder too: the reports folder cannot be made.
    with read_only_folder(tmp_path / "ro2") as parent:
        r = bench("run", SUPPLY_ON, "--reports", parent / "reports", *SHORT)
        assert r.rc == 2 and len(r.err.strip().splitlines()) == 1, r.err
        assert "reports folder" in r.err and "not writable" in r.err


def test_unwritable_state_folder_refuses_the_run(tmp_path: Path) -> None:
    """No latch could be written if the supervisor tripped: the run is refused, as a latched interlock is."""
    reports = tmp_path / "reports"
    with read_only_folder(tmp_path / "state") as state:
        r = bench("run", SUPPLY_ON, "--reports", reports, *SHORT, env={"BENCH_STATE_DIR": str(state)})
        assert r.rc == 6, r.out + r.err
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in r.err, r.err
        assert f"state folder {state}" in lines[0] and "not writable" in lines[0], lines[0]
        assert "interlock" in lines[0]
    assert not reports.exists() or not any(reports.iterdir())


def test_guards_leave_a_good_run_alone(tmp_path: Path) -> None:
    r = bench("run", SUPPLY_ON, "--reports", tmp_path / "reports", *SHORT)
    assert r.rc == 0, r.out + r.err
    assert os.listdir(tmp_path / "reports")
