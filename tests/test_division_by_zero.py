"""A check or a measured expression that divides by zero says so, not "no sample yet".

The divisor here is the supply's voltage minus itself: zero whenever the supply has been read,
so the only honest reason the step cannot be evaluated is the division.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.plan import build_plan
from bench.result import Outcome
from bench.runner import run_plan
from tests.conftest import SIM_STATION

SEQUENCE = """\
id: TEST-DIVISION-BY-ZERO
title: an expression whose divisor is zero at run time
version: 1.0.0
basis: {{standard: test, clause: expressions}}
requires: [psu, bms]
steps:
  - name: supply on
    set: {{psu.voltage_set: 100 V, psu.current_set: 1 A, psu.output: ON}}
  - name: output voltage up
    wait_until: psu.voltage > 90 V
    timeout: 5 s
  - name: ratio
    {step}
cleanup:
  - name: supply off
    set: {{psu.output: OFF}}
"""

STEPS = {
    "check": "check: psu.voltage / (psu.voltage - psu.voltage) > 1",
    "measure": "measure: {name: ratio, expr: psu.voltage * psu.voltage / (psu.voltage - psu.voltage), unit: V}",
}


@pytest.mark.parametrize("kind", sorted(STEPS))
def test_division_by_zero_is_named(tmp_path: Path, kind: str) -> None:
    sequence = tmp_path / "division.yaml"
    sequence.write_text(SEQUENCE.format(step=STEPS[kind]))
    plan = build_plan(sequence, SIM_STATION)
    result = run_plan(plan, tmp_path / "reports", full_report=False)
    ratio = next(s for s in result.steps if s.name == "ratio")
    assert ratio.outcome == Outcome.ERROR, ratio
    assert "division by zero" in ratio.message, ratio.message
    assert "no sample yet" not in ratio.message
    assert all(s.safe for s in result.safe_state), result.safe_state
