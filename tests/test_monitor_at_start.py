"""A monitor that is already true when the steps start stops them before any command.

docs/sequences.md: a monitor acts whenever its condition is true, including at arming time.
The condition here (contactors open) holds from the first sample of the simulated rig on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.plan import build_plan
from bench.result import Verdict
from bench.runner import run_plan
from tests.conftest import SIM_STATION

SEQUENCE = """\
id: TEST-MONITOR-AT-START
title: a monitor whose condition holds before the first step
version: 1.0.0
basis: {{standard: test, clause: monitors}}
requires: [psu, bms]
monitors:
  - name: contactors open
    when: bms.contactors == OPEN
    then: {then}
steps:
  - name: supply on
    set: {{psu.voltage_set: 100 V, psu.current_set: 1 A, psu.output: ON}}
  - name: hold
    wait: 30 s
cleanup:
  - name: supply off
    set: {{psu.output: OFF}}
"""


def events(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(("then", "verdict"), [("abort", Verdict.ABORTED), ("fail", Verdict.FAIL)])
def test_monitor_true_at_start_stops_before_any_command(tmp_path: Path, then: str, verdict: Verdict) -> None:
    sequence = tmp_path / "monitor_at_start.yaml"
    sequence.write_text(SEQUENCE.format(then=then))
    plan = build_plan(sequence, SIM_STATION)
    result = run_plan(plan, tmp_path / "reports", full_report=False)
    assert result.verdict == verdict, result.reason
    assert "monitor 'contactors open' tripped" in result.reason
    ev = events(tmp_path / "reports" / result.run_id)
    kinds = [e["kind"] for e in ev]
    tripped = kinds.index("monitor_tripped")
    # Nothing was commanded by the steps: the only `set` events are the cleanup's and the safe state's.
    assert not [e for e in ev if e["kind"] == "step_started" and e["phase"] == "steps"], kinds
    first_set = kinds.index("set")
    assert tripped < kinds.index("cleanup_started") < first_set
    assert [s.outcome.value for s in result.steps if s.phase == "steps"] == []
    assert all(s.safe for s in result.safe_state), result.safe_state
    assert "steps not performed (run ended early): supply on, hold" in result.deviations
