"""R100-9G overcharge: the end conditions of GB 38031-2025 8.2.14.4 as the sequence encodes them.

End condition (d) is one total measured from the start of the charge; with a BMS that never
reacts the run must not last longer than that, however late the cell voltage crosses the
threshold. Virtual time makes hours of charging cost seconds.
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import OVERCHARGE, bench
from tests.report_support import station_copy

HOUR_S = 3600.0
# A small rated capacity lets the C/3 precondition accept 1 A: at 1 A the 120 Ah pack gains
# under 1 % SOC an hour, so the overcharge heats nothing and no temperature end intervenes.
SLOW_CHARGE = ("-p", "rated_capacity=3Ah", "-p", "charge_current=1A", "-p", "soc_max=100%")


def _run(tmp_path: Path, start_soc_pct: float, *args: str) -> dict:
    # The pack starts where the station's model puts it (a lab charges a real pack there first).
    station = station_copy(tmp_path, replace={"initial_soc_pct: 50": f"initial_soc_pct: {start_soc_pct:g}"})
    done = bench(
        "run", OVERCHARGE, "--station", station, "--reports", tmp_path, "-p", "observation=1min", *args, timeout=600
    )
    assert done.rc in (0, 1), done.out + done.err
    return done.result()


def _non_reacting_bms(tmp_path: Path, start_soc_pct: float, max_duration_h: float) -> tuple[dict, dict]:
    """A slow charge of a BMS that never interrupts it: a FAIL, with the run's marks."""
    result = _run(
        tmp_path,
        start_soc_pct,
        "--fault",
        "overvoltage_protection_disabled",
        *SLOW_CHARGE,
        "-p",
        f"max_duration={max_duration_h:g}h",
    )
    assert result["verdict"] == "FAIL"
    return result["marks"], result


def test_a_non_reacting_bms_ends_max_duration_after_the_start_of_charge(tmp_path: Path) -> None:
    # Start at 100 % SOC: at 1 A the BMS's highest cell reads above 4.25 V after about 0.8 h, in
    # the second half of a 1.5 h test. Two waits of max_duration each would run to about 2.3 h.
    max_duration_h = 1.5
    marks, result = _non_reacting_bms(tmp_path, 100.0, max_duration_h)
    threshold_after = marks["t_threshold"] - marks["t_charge"]
    assert threshold_after > 0.5 * HOUR_S, f"the threshold should be crossed late, at {threshold_after:.0f} s"
    # The run ends when the interruption wait times out; cleanup takes a few seconds more.
    charge_to_end = result["sim_duration_s"] - marks["t_charge"]
    assert charge_to_end <= max_duration_h * HOUR_S, f"{charge_to_end:.0f} s from the start of charge"


def test_a_bms_that_never_reaches_its_threshold_ends_at_max_duration(tmp_path: Path) -> None:
    # From 95 % at 1 A the cells stay below the threshold: end condition (d) alone ends the test.
    max_duration_h = 1.0
    marks, result = _non_reacting_bms(tmp_path, 95.0, max_duration_h)
    assert "t_threshold" not in marks
    charge_to_end = result["sim_duration_s"] - marks["t_charge"]
    assert max_duration_h * HOUR_S - 120 <= charge_to_end <= max_duration_h * HOUR_S


def test_the_charge_current_above_the_maximum_normal_current_is_refused(tmp_path: Path) -> None:
    done = bench("run", OVERCHARGE, "--reports", tmp_path, "-p", "charge_current=70A", "-p", "max_normal_current=60A")
    assert done.rc == 1, done.out + done.err
    assert "charge rate at most the maximum normal current" in done.out
    assert done.result()["verdict"] == "FAIL"
