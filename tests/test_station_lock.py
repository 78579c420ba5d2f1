"""One run at a time on a station: a second run, campaign or job is refused while the first holds it.

The lock is an flock on ``<BENCH_STATE_DIR>/<station id>.lock``, so it dies with its process: a
holder killed with SIGKILL leaves the file behind, and the next run takes the station anyway.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.errors import BenchError
from bench.plan import build_plan
from tests.conftest import OVERCHARGE, ROOT, SIM_STATION, bench, start_bench
from tests.served import SHORT_OVERCHARGE, sim_serve, write_stations

SUPPLY_ON = ROOT / "tests" / "sequences" / "supply_on.yaml"
BUSY_EXIT = 7


def start_run(*args: str | Path, state: Path) -> subprocess.Popen[str]:
    return start_bench("run", *args, env={"BENCH_STATE_DIR": str(state)})


def wait_for_holder(lock: Path, proc: subprocess.Popen[str], timeout: float = 30) -> dict[str, Any]:
    """The holder's record in the lock file, once the run in ``proc`` has taken the station."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the first run ended early: {proc.communicate()}"
        try:
            holder: dict[str, Any] = json.loads(lock.read_text())
            if holder.get("pid") == proc.pid:
                return holder
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"{lock}: no holder record of pid {proc.pid}")


def assert_refused_naming(err: str, holder: dict[str, Any]) -> None:
    lines = [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    line = lines[0]
    assert line.startswith("error: station '") and "is busy" in line, line
    for part in (f"pid {holder['pid']}", holder["user"], holder["run_id"], holder["since"]):
        assert str(part) in line, (part, line)


def test_second_run_on_a_served_station_is_refused(tmp_path: Path) -> None:
    """Both runs against one `bench sim serve`: the second is refused and the first passes untouched."""
    stations = write_stations(tmp_path / "stations")
    state = tmp_path / "state"
    reports = tmp_path / "reports"
    with sim_serve(stations.served):
        first = start_run(
            OVERCHARGE, "--station", stations.served, "--reports", reports, *SHORT_OVERCHARGE, state=state
        )
        try:
            holder = wait_for_holder(state / "sim-served.lock", first)
            second = bench(
                "run", OVERCHARGE, "--station", stations.served, "--reports", reports, *SHORT_OVERCHARGE,
                env={"BENCH_STATE_DIR": str(state)},
            )  # fmt: skip
            assert second.rc == BUSY_EXIT, second.out + second.err
            assert len(second.err.strip().splitlines()) == 1 and not second.out, second.out + second.err
            assert_refused_naming(second.err, holder)
            assert holder["user"] and holder["since"].endswith("Z")
            # Nothing of the second run was recorded: the only run folder is the first's.
            assert [p.name for p in reports.iterdir()] == [holder["run_id"]]
            out, err = first.communicate(timeout=120)
        finally:
            if first.poll() is None:
                first.kill()
                first.communicate()
    assert first.returncode == 0, out + err
    result = json.loads((reports / holder["run_id"] / "result.json").read_text())
    assert result["verdict"] == "PASS", result["reason"]
    # The first run's BMS reaction is its own (~300 ms in the served back-to-back test).
    reaction = next(m for m in result["measurements"] if m["name"] == "reaction_time")
    assert 150 <= reaction["value"] <= 600, reaction


def station_copy(tmp_path: Path, station_id: str) -> Path:
    text = SIM_STATION.read_text().replace("../dbc/", f"{ROOT / 'dbc'}/").replace("id: sim\n", f"id: {station_id}\n")
    path = tmp_path / f"{station_id}.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path, subprocess.Popen[str]]]:
    """A long `bench run` on the wall clock holding station 'held' (in-process simulators)."""
    state = tmp_path / "state"
    monkeypatch.setenv("BENCH_STATE_DIR", str(state))
    station = station_copy(tmp_path, "held")
    proc = start_run(
        SUPPLY_ON, "--station", station, "--reports", tmp_path / "reports", "--realtime", "-q", "-p", "voltage=10 V",
        state=state,
    )  # fmt: skip
    try:
        yield station, state, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_run_plan_is_refused_while_the_station_is_held(held: tuple[Path, Path, subprocess.Popen[str]]) -> None:
    """The path of lab jobs and campaign cells (bench/runner.py) takes the same lock."""
    from bench.runner import run_plan

    station, state, proc = held
    holder = wait_for_holder(state / "held.lock", proc)
    plan = build_plan(SUPPLY_ON, station, {"voltage": "10 V", "hold": "1 s"})
    with pytest.raises(BenchError) as exc:
        run_plan(plan, station.parent / "other-reports")
    assert exc.value.exit_code == BUSY_EXIT
    assert_refused_naming(f"error: {exc.value}", holder)
    assert not (station.parent / "other-reports").exists()


def test_campaign_is_refused_while_the_station_is_held(held: tuple[Path, Path, subprocess.Popen[str]]) -> None:
    station, state, proc = held
    holder = wait_for_holder(state / "held.lock", proc)
    reports = station.parent / "campaigns"
    r = bench(
        "campaign", SUPPLY_ON, "--station", station, "--faults", "none", "-p", "hold=1 s", "--reports", reports,
        env={"BENCH_STATE_DIR": str(state)},
    )  # fmt: skip
    assert r.rc == BUSY_EXIT, r.out + r.err
    # The campaign's banner line, then the refusal; no cell ran.
    assert_refused_naming(r.err, holder)
    assert r.err.strip().splitlines()[-1].startswith("error: station 'held' is busy")
    assert not reports.exists() or not any(reports.iterdir())


def test_lock_dies_with_its_holder(held: tuple[Path, Path, subprocess.Popen[str]]) -> None:
    station, state, proc = held
    wait_for_holder(state / "held.lock", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    # The killed run's holder record is still in the file; it must not block the next run.
    assert json.loads((state / "held.lock").read_text())["pid"] == proc.pid
    r = bench(
        "run", SUPPLY_ON, "--station", station, "--reports", station.parent / "after", "-q",
        "-p", "voltage=10 V", "-p", "hold=1 s", env={"BENCH_STATE_DIR": str(state)},
    )  # fmt: skip
    assert r.rc == 0, r.out + r.err
