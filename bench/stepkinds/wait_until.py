"""``wait_until``: wait for a condition, at most a timeout; record the instant it became true."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ConfigDict, Field, field_validator

from bench.compiler import Compiler
from bench.events import EventKind
from bench.expr import Compiled
from bench.result import Outcome, rounded
from bench.stepkinds.base import KindPlan, PlanStep, StepFailed, StepKind, StepModel, StepSite, as_text
from bench.units import format_duration, format_value

if TYPE_CHECKING:
    from bench.runcontext import RunContext


class WaitUntilStep(StepModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "BMS interrupts the charge",
                    "wait_until": "bms.contactors == OPEN or psu.current < 0.5 A",
                    "timeout": "$max_duration",
                    "as": "t_interrupt",
                }
            ]
        }
    )

    wait_until: str = Field(description="condition to wait for")
    timeout: str = Field(description="maximum time to wait")
    as_: str | None = Field(None, alias="as", description="record the instant the condition became true as @name")
    on_timeout: Literal["fail", "continue"] = Field(
        "fail", description="what a timeout means: 'fail' the step, or 'continue' with the next step"
    )

    _text = field_validator("timeout", mode="before")(as_text)


@dataclass
class WaitUntilPlan(KindPlan):
    cond: Compiled
    cond_text: str
    timeout: float
    on_timeout: str

    def signals(self) -> set[str]:
        return set(self.cond.signals)

    def time_limit(self) -> float:
        return self.timeout


def compile_wait_until(c: Compiler, step: WaitUntilStep, site: StepSite) -> WaitUntilPlan:
    cond = c.condition(step.wait_until, site.at("wait_until"), site.marks)
    timeout = c.duration(step.timeout, site.at("timeout"))
    site.record_mark(c, step.as_, cond)
    return WaitUntilPlan(cond, step.wait_until, timeout, step.on_timeout)


def describe(ps: PlanStep[WaitUntilPlan]) -> str:
    return f"wait until {ps.plan.cond_text} (timeout {format_duration(ps.plan.timeout)})"


async def run_wait_until(ctx: RunContext, step: PlanStep[WaitUntilPlan]) -> str:
    w = step.plan
    try:
        t = await ctx.wait_for(w.cond, w.timeout)
    except TimeoutError:
        values = ctx.values(w.cond.signals)
        msg = f"timed out after {format_duration(w.timeout)} waiting for {w.cond_text} ({ctx.shown(values)})"
        ctx.event(EventKind.WAIT_TIMEOUT, step=step.name, values=values)
        if w.on_timeout == "continue":
            return msg
        raise StepFailed(Outcome.FAIL, msg) from None
    return condition_met(ctx, step, w.cond, t)


def condition_met(ctx: RunContext, step: PlanStep[Any], cond: Compiled, t: float) -> str:
    """Record that the step's condition became true at ``t`` (a sample's time); its message."""
    rel = ctx.rel(t)
    if step.mark:
        ctx.bus.marks[step.mark] = rel
    values = ctx.values(cond.signals)
    ctx.event(EventKind.CONDITION_MET, step=step.name, mark=step.mark, sample_t=rounded(rel), values=values)
    shown = ctx.shown(values)
    return f"true at {format_value(rel, 's')}" + (f" (@{step.mark})" if step.mark else "") + f": {shown}"


KIND = StepKind("wait_until", WaitUntilStep, compile_wait_until, describe, run_wait_until)
