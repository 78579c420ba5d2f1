"""A step kind is one module: a kind defined here, registered, loads, plans and runs on the simulated station.

Nothing else of the bench is edited for it: the sequence model takes it into its step union,
the plan compiles and describes it through the kind, and the sequencer runs its executor.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import Field

from bench import stepkinds
from bench.compiler import Compiler
from bench.errors import LoadError
from bench.plan import build_plan, load_sequence
from bench.result import Outcome, Verdict
from bench.runcontext import RunContext
from bench.runner import run_plan
from bench.sequence import Sequence
from bench.stepkinds.base import KindPlan, PlanStep, StepFailed, StepKind, StepModel, StepSite
from tests.conftest import SIM_STATION

# -- the whole kind: model, plan, compile, description, executor ---------------------------


class EchoStep(StepModel):
    echo: str = Field(description="a signal whose present value the step reports")
    below: str | None = Field(None, description="fail unless the value is below this")


@dataclass
class EchoPlan(KindPlan):
    signal: str
    below: float | None

    def signals(self) -> set[str]:
        return {self.signal}


def compile_echo(c: Compiler, step: EchoStep, site: StepSite) -> EchoPlan:
    info = c.resolve(step.echo, site.at("echo"))
    below = c.set_value(info.name, step.below, site.at("below")).value if step.below is not None else None
    return EchoPlan(info.name, below)


def describe_echo(ps: PlanStep[EchoPlan]) -> str:
    return f"echo {ps.plan.signal}"


async def run_echo(ctx: RunContext, step: PlanStep[EchoPlan]) -> str:
    value = ctx.bus.values.get(step.plan.signal)
    shown = ctx.shown(ctx.values([step.plan.signal]))
    if step.plan.below is not None and (value is None or value >= step.plan.below):
        raise StepFailed(Outcome.FAIL, f"not below: {shown}")
    return shown


ECHO: StepKind[EchoStep, EchoPlan] = StepKind("echo", EchoStep, compile_echo, describe_echo, run_echo)

# -------------------------------------------------------------------------------------------

SEQUENCE = """\
id: TEST-ECHO
title: a step kind defined by a test
version: 1.0.0
basis: {{standard: test, clause: step kinds}}
requires: [psu, bms]
steps:
  - name: supply on
    set: {{psu.voltage_set: 100 V, psu.current_set: 1 A, psu.output: ON}}
  - name: output voltage up
    wait_until: psu.voltage > 90 V
    timeout: 5 s
  - name: show the voltage
    echo: psu.voltage_set
  - echo: psu.voltage_set
    below: {below}
cleanup:
  - name: supply off
    set: {{psu.output: OFF}}
"""


@pytest.fixture
def echo_kind() -> Iterator[None]:
    stepkinds.register(ECHO)
    try:
        yield
    finally:
        stepkinds.unregister("echo")


def _sequence(tmp_path: Path, below: str = "200 V") -> Path:
    path = tmp_path / "echo.yaml"
    path.write_text(SEQUENCE.format(below=below))
    return path


def test_an_unregistered_kind_is_refused_with_the_list_of_kinds(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match=r"a step needs exactly one of: set, wait, .*, clear_dtcs, search$"):
        load_sequence(_sequence(tmp_path))


def test_a_registered_kind_is_in_the_schema_and_the_error_message(echo_kind: None, tmp_path: Path) -> None:
    schema = json.dumps(Sequence.model_json_schema(by_alias=True))
    assert "EchoStep" in schema
    bad = tmp_path / "bad.yaml"
    bad.write_text(SEQUENCE.format(below="200 V").replace("echo: psu.voltage_set\n", "ech: psu.voltage_set\n", 1))
    with pytest.raises(LoadError, match=r"a step needs exactly one of: .*, clear_dtcs, search, echo"):
        load_sequence(bad)


def test_a_registered_kind_is_checked_at_load_with_its_line(echo_kind: None, tmp_path: Path) -> None:
    with pytest.raises(
        LoadError, match=r"echo\.yaml:15: steps\[3\]\.below: the value of psu\.voltage_set \(V\) must be a voltage"
    ):
        build_plan(_sequence(tmp_path, below="2 A"), SIM_STATION)


def test_a_registered_kind_plans_and_runs(echo_kind: None, tmp_path: Path) -> None:
    plan = build_plan(_sequence(tmp_path), SIM_STATION)
    echo = [s for s in plan.steps if s.kind == "echo"]
    assert [s.name for s in echo] == ["show the voltage", "04 echo"]
    assert [s.text for s in echo] == ["echo psu.voltage_set"] * 2
    assert plan.wanted is not None and "psu.voltage_set" in plan.wanted
    result = run_plan(plan, tmp_path / "reports", full_report=False)
    assert result.verdict == Verdict.PASS, result.reason
    ran = {s.name: s for s in result.steps}
    assert ran["show the voltage"].kind == "echo"
    assert ran["show the voltage"].message == "psu.voltage_set = 100 V"
    started = [
        json.loads(line)
        for line in (tmp_path / "reports" / result.run_id / "events.jsonl").read_text().splitlines()
        if '"step_started"' in line
    ]
    assert {"step": "show the voltage", "step_kind": "echo", "text": "echo psu.voltage_set"}.items() <= next(
        e for e in started if e.get("step") == "show the voltage"
    ).items()


def test_a_failed_step_of_a_registered_kind_ends_the_steps(echo_kind: None, tmp_path: Path) -> None:
    plan = build_plan(_sequence(tmp_path, below="50 V"), SIM_STATION)
    result = run_plan(plan, tmp_path / "reports", full_report=False)
    assert result.verdict == Verdict.FAIL
    assert "step '04 echo': not below: psu.voltage_set = 100 V" in result.reason


def test_unregistering_takes_the_kind_out_of_the_language(tmp_path: Path) -> None:
    stepkinds.register(ECHO)
    stepkinds.unregister("echo")
    assert "echo" not in stepkinds.names()
    with pytest.raises(LoadError, match="a step needs exactly one of"):
        load_sequence(_sequence(tmp_path))
