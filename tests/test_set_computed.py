"""A ``set`` value computed when the step runs, from signals and @marks: in the signal's unit and
range, or an ERROR that commands nothing of the step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.errors import LoadError
from bench.plan import Plan, build_plan
from bench.result import Verdict
from bench.runner import run_plan
from tests.conftest import SIM_STATION

SEQUENCE = """\
id: TEST-SET-COMPUTED
title: a set value computed from a measured signal
version: 1.0.0
basis: {{standard: test, clause: set, method: lab}}
requires: [psu]
steps:
  - name: supply on
    set: {{psu.voltage_set: 100 V, psu.current_set: 1 A, psu.output: ON}}
  - name: output voltage up
    wait_until: psu.voltage > 90 V
    timeout: 5 s
  - name: follow the output
    set: {{psu.voltage_set: {value}, psu.current_set: 2 A}}
cleanup:
  - name: supply off
    set: {{psu.output: OFF}}
"""


def _plan(tmp_path: Path, value: str) -> Plan:
    path = tmp_path / "computed.yaml"
    path.write_text(SEQUENCE.format(value=value))
    return build_plan(path, SIM_STATION)


def _sets(run: Path) -> list[dict[str, float]]:
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    return [e["requested"] for e in events if e["kind"] == "set"]


def test_the_value_is_computed_from_the_signal_when_the_step_runs(tmp_path: Path) -> None:
    plan = _plan(tmp_path, "psu.voltage * 2")
    step = next(s for s in plan.steps if s.name == "follow the output")
    # In the file's order, which is the order the values are commanded in.
    assert step.text == "set psu.voltage_set = psu.voltage * 2, psu.current_set = 2 A"
    assert plan.wanted is not None and "psu.voltage" in plan.wanted
    result = run_plan(plan, tmp_path / "reports", full_report=False)
    assert result.verdict == Verdict.PASS, result.reason
    followed = [s for s in _sets(tmp_path / "reports" / result.run_id) if "current_set" in s and s["current_set"] == 2]
    assert len(followed) == 1
    # The supply's output read about 100 V when the step ran.
    assert followed[0]["voltage_set"] == pytest.approx(200.0, rel=0.02)


def test_a_computed_value_out_of_the_signals_range_commands_nothing(tmp_path: Path) -> None:
    result = run_plan(_plan(tmp_path, "psu.voltage * 20"), tmp_path / "reports", full_report=False)
    assert result.verdict == Verdict.ERROR
    assert "psu.voltage_set = psu.voltage * 20 is" in result.reason and "out of its range" in result.reason
    # Neither value of the step went out: the current stays at the first step's 1 A.
    assert not any(s.get("current_set") == 2 for s in _sets(tmp_path / "reports" / result.run_id))


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (
            "psu.voltage / 1 s",
            r"steps\[2\]\.set\.psu\.voltage_set: the value of psu\.voltage_set \(V\) must be a voltage",
        ),
        ("psu.output", r"psu\.voltage_set"),
    ],
)
def test_a_computed_value_of_the_wrong_kind_is_refused_at_load(tmp_path: Path, value: str, error: str) -> None:
    with pytest.raises(LoadError, match=error):
        _plan(tmp_path, value)
