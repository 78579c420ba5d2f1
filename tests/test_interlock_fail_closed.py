"""A supervisor trip whose latch cannot be written: said truthfully, and every later run refused.

The state folder is a real file system that turns read-only while the run goes on (as a failing
disk does), between the start of the run and the trip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench.errors import BenchError
from bench.plan import build_plan
from tests.conftest import ROOT, SIM_STATION, bench
from tests.rofs import make_read_only, writable_mount

SUPPLY_ON = ROOT / "tests" / "sequences" / "supply_on.yaml"
LATCHED_EXIT = 6


def tight_station(tmp_path: Path) -> Path:
    """sim.yaml whose supervisor trips at 50 V: supply_on.yaml's 100 V trips it."""
    text = SIM_STATION.read_text().replace("../dbc/", f"{ROOT / 'dbc'}/").replace("id: sim\n", "id: unlatchable\n")
    assert "when: psu.voltage > 1005 V" in text
    path = tmp_path / "unlatchable.yaml"
    path.write_text(text.replace("when: psu.voltage > 1005 V", "when: psu.voltage > 50 V"))
    return path


def test_unwritable_latch_is_reported_and_refuses_later_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.runner import run_plan

    station = tight_station(tmp_path)
    reports = tmp_path / "reports"
    with writable_mount(tmp_path / "state") as state:
        monkeypatch.setenv("BENCH_STATE_DIR", str(state))
        plan = build_plan(SUPPLY_ON, station, {"hold": "10 s"})

        def disk_fails(kind: str, t: float, fields: dict[str, Any]) -> None:
            # The run has passed its start checks; the state folder fails before the trip.
            if kind == "step_started" and fields.get("step") == "supply on":
                make_read_only(state)

        result = run_plan(plan, reports, listeners=[disk_fails])
        assert not (state / "unlatchable.latch.json").exists(), "the latch must really have failed"

        # Truthful everywhere: the result, result.json, the events and the report.
        assert result.verdict.value == "ERROR", result.reason
        assert "supervisor limit 'supply voltage above the supply's rating' tripped" in result.reason
        assert "interlock could NOT be latched" in result.reason, result.reason
        assert "interlock latched" not in result.reason, result.reason
        run = reports / result.run_id
        on_disk = json.loads((run / "result.json").read_text())
        assert on_disk["reason"] == result.reason
        events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
        kinds = [e["kind"] for e in events]
        assert "interlock_not_latched" in kinds
        for e in events:
            assert "interlock latched" not in json.dumps(e), e
        assert "interlock could NOT be latched" in (run / "report.html").read_text()
        assert {s.device: s.safe for s in result.safe_state} == {"psu": True, "bms": True}

        # Fail closed: the next run on this station is refused before anything moves, by the
        # runner (the path of lab jobs and campaigns) and by `bench run`, with exit code 6.
        with pytest.raises(BenchError) as exc:
            run_plan(build_plan(SUPPLY_ON, station, {"voltage": "10 V", "hold": "1 s"}), reports)
        assert exc.value.exit_code == LATCHED_EXIT
        assert "not writable" in str(exc.value) and "interlock" in str(exc.value)
        r = bench("run", SUPPLY_ON, "--station", station, "--reports", reports, "-p", "voltage=10 V", "-p", "hold=1 s")
        assert r.rc == LATCHED_EXIT, r.out + r.err
        assert len(r.err.strip().splitlines()) == 1 and f"state folder {state}" in r.err, r.err
        assert sorted(p.name for p in reports.iterdir()) == [result.run_id]
        # Nor can the operator's reset be recorded while the folder is read-only: one line, not a traceback.
        reset = bench(
            "reset-interlock", "--station", station, "--reason", "checked", env={"BENCH_STATE_DIR": str(state)}
        )
        assert reset.rc == LATCHED_EXIT and len(reset.err.strip().splitlines()) == 1, reset.err
        assert "not writable" in reset.err


def test_console_says_the_latch_failed(tmp_path: Path) -> None:
    """`bench run` prints the failed latch as it happens and in its summary."""
    station = tight_station(tmp_path)
    with writable_mount(tmp_path / "state") as state:
        # The folder turns read-only from outside, after the run's start checks (wall clock).
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.cli", "run", str(SUPPLY_ON), "--station", str(station), "--realtime",
             "--reports", str(tmp_path / "reports"), "-p", "hold=5 s"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "BENCH_STATE_DIR": str(state), "COLUMNS": "200"},
        )  # fmt: skip
        deadline = time.monotonic() + 30
        # Once the run holds the station (its holder record written), before its devices connect.
        lock = state / "unlatchable.lock"
        while not (lock.exists() and lock.read_text()) and time.monotonic() < deadline:
            time.sleep(0.01)
        make_read_only(state)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, out + err
    assert "interlock latched" not in out, out
    assert "interlock could NOT be latched" in out, out
    # As it happens (the progress line of the event), not only in the summary at the end.
    assert any(line.split("  ", 1)[-1].startswith("interlock could NOT be latched: ") for line in out.splitlines()), out
