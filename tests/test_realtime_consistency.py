"""Virtual time changes when things happen on the wall clock, never what happens.

The reference overcharge sequence, shortened (the pack starts just below the BMS's over-voltage
trip, a short observation), runs once in virtual time and once with ``--realtime`` on the same
station. Both must reach the same verdict with the same outcome of every measurement, and the
BMS's reaction time (from the frame that shows the cell voltage above the threshold to the frame
that shows the contactors open) must agree within one cycle of those frames: on the wall clock
the BMS's debounce ticks and its frames land a little late, so the crossing can fall one tick
later, and no more.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cantools

from tests.conftest import OVERCHARGE, ROOT, bench
from tests.report_support import station_copy

# The messages whose frames stamp the two instants of the reaction time: bms.cell_v_max
# (threshold crossed) and bms.contactors (charge interrupted).
MESSAGES = ("BMS_CellStats", "BMS_Status")
# On the wall clock each of the two instants is a frame's timestamp, late by the loop's
# scheduling latency: a few ms, tens of ms on the loaded 2-core machine.
LATENCY_S = 0.05
# About 5 s of charge before the trip, then 2 s of observation: some 10 s on the wall clock.
SHORTENED = ("-p", "soc_max=100 %", "-p", "observation=2 s")
START_SOC = {"initial_soc_pct: 50": "initial_soc_pct: 99.5"}


def _cycle_s() -> float:
    db = cantools.database.load_file(str(ROOT / "dbc" / "bms.dbc"))
    assert isinstance(db, cantools.database.can.Database)
    cycles = [db.get_message_by_name(name).cycle_time for name in MESSAGES]
    assert all(cycles), f"a GenMsgCycleTime is missing: {dict(zip(MESSAGES, cycles, strict=True))}"
    return max(c for c in cycles if c) / 1000.0


def _run(station: Path, reports: Path, *extra: str) -> dict[str, Any]:
    done = bench("run", OVERCHARGE, "--station", station, "--reports", reports, "-q", *SHORTENED, *extra)
    assert done.rc in (0, 1), done.err or done.out
    result: dict[str, Any] = done.result()
    started = json.loads((done.run_dir() / "events.jsonl").read_text().splitlines()[0])
    result["virtual_time"] = started["virtual_time"]
    return result


def test_realtime_run_agrees_with_virtual_time(tmp_path: Path) -> None:
    station = station_copy(tmp_path, replace=START_SOC)
    reports = tmp_path / "reports"
    virtual = _run(station, reports)
    real = _run(station, reports, "--realtime")

    assert virtual["virtual_time"] is True and real["virtual_time"] is False
    # The wall-clock run took its simulated time on the wall clock.
    assert real["wall_duration_s"] >= 0.9 * real["sim_duration_s"], real["wall_duration_s"]
    assert virtual["verdict"] == real["verdict"] == "PASS", (virtual["reason"], real["reason"])
    outcomes = [{m["name"]: m["outcome"] for m in r["measurements"]} for r in (virtual, real)]
    assert outcomes[0] == outcomes[1]

    reaction = [next(m["value"] for m in r["measurements"] if m["name"] == "reaction_time") for r in (virtual, real)]
    cycle_ms = _cycle_s() * 1000.0
    assert abs(reaction[1] - reaction[0]) <= cycle_ms + LATENCY_S * 1000.0, (
        f"reaction time {reaction[0]} ms in virtual time, {reaction[1]} ms on the wall clock (one cycle: {cycle_ms} ms)"
    )
