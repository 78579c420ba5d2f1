"""Decision rules (ISO/IEC 17025 7.8.6, ILAC-G8:09/2019) and GUM uncertainty from the register.

A result inside its limit but within U of it passes under simple acceptance and fails under a
guard band w = U: first as pure functions, then end to end on the overcharge sequence.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.report.equipment import Instrument, Range, SignalSource, decide, instant_uncertainty, signal_uncertainty
from tests.conftest import OVERCHARGE, bench
from tests.report_support import station_copy


def test_simple_and_guard_band_differ_inside_the_limit_within_u() -> None:
    # 4.296 V against a 4.300 V limit, U = 5.8 mV: inside the limit, but within U of it.
    assert decide(4.296, None, 4.300, 0.0058, "simple")[0] is True
    ok, text = decide(4.296, None, 4.300, 0.0058, "guard_band")
    assert ok is False and "4.2942" in text
    # Far enough inside: both accept. Outside: both reject.
    assert decide(4.29, None, 4.300, 0.0058, "guard_band")[0] is True
    assert decide(4.31, None, 4.300, 0.0058, "simple")[0] is False
    # A lower limit moves up by U.
    assert decide(0.004, 0.0, 1.0, 0.13, "guard_band")[0] is False
    # A guard band needs U: without it the result is not accepted (never a silent fallback).
    ok, text = decide(4.0, None, 4.3, None, "guard_band")
    assert not ok and "U is unknown" in text


def test_gum_uncertainty_from_spec_and_resolution() -> None:
    ins = Instrument(
        asset_id="DMM-1",
        device="dmm",
        maker="M",
        model="X",
        serial="1",
        signals={
            "voltage": [
                Range(range="10 V", reading_pct=0.02, range_pct=0.04, resolution="1 mV"),
                Range(range="1000 V", reading_pct=0.02, range_pct=0.04),
            ]
        },
    )
    # 5 V on the 10 V range: half-width 0.02 % * 5 + 0.04 % * 10 = 5 mV (rectangular), 1 mV resolution.
    u = signal_uncertainty("dmm.voltage", 5.0, [ins], {})
    assert u is not None
    expected = math.sqrt((0.005 / math.sqrt(3)) ** 2 + (0.001 / math.sqrt(12)) ** 2)
    assert u.u_base == pytest.approx(expected)
    assert u.expanded_base == pytest.approx(2 * expected)
    # 500 V falls on the 1000 V range: 0.1 V + 0.4 V.
    u2 = signal_uncertainty("dmm.voltage", 500.0, [ins], {})
    assert u2 is not None and u2.u_base == pytest.approx(0.5 / math.sqrt(3))
    # A CAN signal source: accuracy and resolution; an unknown signal: None.
    src = {"bms.cell_v_max": SignalSource(accuracy="5 mV", resolution="1 mV", period="100 ms")}
    u3 = signal_uncertainty("bms.cell_v_max", 4.2, [ins], src)
    assert u3 is not None and u3.u_base == pytest.approx(
        math.sqrt((0.005 / math.sqrt(3)) ** 2 + (0.001 / math.sqrt(12)) ** 2)
    )
    assert signal_uncertainty("bms.soc", 50, [ins], src) is None
    # Temperatures are differences: no 273.15 K offset sneaks into an accuracy.
    t = signal_uncertainty("x.t", 300.0, [], {"x.t": SignalSource(accuracy="1 degC")})
    assert t is not None and t.u_base == pytest.approx(1 / math.sqrt(3))
    # An instant fixed by a 100 ms cyclic signal: rectangular over the period.
    inst = instant_uncertainty(["bms.cell_v_max"], src)
    assert inst is not None and inst[1] == pytest.approx(0.1 / math.sqrt(12))


FAST = {"      initial_soc_pct: 50": "      initial_soc_pct: 69"}
# The verdict's peak cell voltage is the DAQ's (U = 0.2 mV); a coarser meter in its place (0.1 % of
# reading, U about 5 mV) gives a band wide enough to put a limit inside it whatever the noise.
COARSE_DAQ = {
    "cell_v_max: [{range: 10 V, reading_pct: 0.0030,": "cell_v_max: [{range: 10 V, reading_pct: 0.1,",
}


@pytest.mark.parametrize(("rule", "rc", "outcome"), [("simple", 0, "PASS"), ("guard_band", 1, "FAIL")])
def test_decision_rule_end_to_end(rule: str, rc: int, outcome: str, tmp_path: Path) -> None:
    station = station_copy(tmp_path, replace={**FAST, **COARSE_DAQ, "decision_rule: simple": f"decision_rule: {rule}"})
    # The peak cell voltage is about 4.2505 V with U = 5 mV; a 4.253 V limit puts it inside, within U.
    r = bench(
        "run", OVERCHARGE, "--station", station, "--reports", tmp_path / "reports", "-q",
        "-p", "observation=1 s", "-p", "cell_v_limit=4.253 V",
        env={"BENCH_REPORT_PDF": "0", "BENCH_KEY_DIR": str(tmp_path / "nokey")},
    )  # fmt: skip
    result = r.result()
    peak = next(m for m in result["measurements"] if m["name"] == "peak_cell_voltage")
    assert peak["value"] <= 4.253 < peak["value"] + peak["uncertainty"], peak
    assert peak["outcome"] == outcome, peak
    assert r.rc == rc, r.out + r.err
    assert result["decision_rule"] == rule
    html = (r.run_dir() / "report.html").read_text()
    if rule == "guard_band":
        assert "not accepted: guard band w = U" in result["reason"]
        assert "guard band w = U (ILAC-G8:09/2019 4.2.2)" in html and "does not conform" in html
    else:
        assert "simple acceptance (ILAC-G8:09/2019 4.2.1, w = 0)" in html
