"""ISO 26262 fault-reaction timing: the measured times follow the item's real reaction.

The FDTI / FTTI sequences measure from the instant a fault is injected to the first frame (or
position-switch sample) that shows the detection and the safe state. If the simulated item
reacts later, the measured safe-state time must move by the same amount, within one cycle of
the frame or sample that shows it, and the detection time must not move at all.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT, bench
from tests.report_support import station_copy

BMS_LOST = ROOT / "sequences" / "iso26262" / "bms_message_lost.yaml"
FCCU_IMPLAUSIBLE = ROOT / "sequences" / "iso26262" / "fccu_implausible_value.yaml"
BMS_STATUS_CYCLE_MS = 100.0  # BMS_Status GenMsgCycleTime
FCIO_POLL_MS = 50.0  # the valve position switch's poll interval on the station
SHIFT_S = 0.5


def _times(sequence: Path, station: Path, reports: Path) -> dict[str, float]:
    # The longer reaction is outside the sequence's fault handling budget on purpose: only the
    # times matter here, so the budget (fdti + frti) and the FTTI above it are widened.
    run = bench("run", sequence, "--station", station, "--reports", reports, "-q", "-p", "frti=9 s", "-p", "ftti=10 s")
    result = run.result()
    assert result["verdict"] == "PASS", result["reason"]
    return {m["name"]: m["value"] for m in result["measurements"]}


@pytest.mark.parametrize(
    ("sequence", "setting", "cycle_ms"),
    [
        # The BMS's reaction_time_s sits in its bms: section; 0.1 s on the station.
        (
            BMS_LOST,
            ("        oc_threshold_a: 140", "        oc_threshold_a: 140\n        reaction_time_s: {t}"),
            BMS_STATUS_CYCLE_MS,
        ),
        # The FCCU's is a top-level key of its simulator entry.
        (FCCU_IMPLAUSIBLE, ("      reaction_time_s: 0.1", "      reaction_time_s: {t}"), FCIO_POLL_MS),
    ],
    ids=["bms-contactors", "fccu-valve"],
)
def test_safe_state_time_moves_with_the_reaction_time(
    tmp_path: Path, sequence: Path, setting: tuple[str, str], cycle_ms: float
) -> None:
    old, new = setting
    times = []
    for i, reaction in enumerate((0.1, 0.1 + SHIFT_S)):
        station = station_copy(tmp_path, replace={old: new.format(t=reaction)}, name=f"st{i}.yaml")
        times.append(_times(sequence, station, tmp_path / f"reports{i}"))
    fast, slow = times
    shift_ms = slow["safe_state_time"] - fast["safe_state_time"]
    assert abs(shift_ms - SHIFT_S * 1000) <= cycle_ms, (
        f"safe state moved {shift_ms} ms for a {SHIFT_S * 1000} ms change"
    )
    assert abs(slow["detection_time"] - fast["detection_time"]) <= cycle_ms
    # Both in ms, on frame timestamps: the detection comes before the safe state.
    assert 0 < fast["detection_time"] <= fast["safe_state_time"]
