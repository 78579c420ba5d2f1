"""``prompt``: ask the operator to confirm, or to enter a value that is then judged like a measurement."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from pydantic import Field, field_validator

from bench.compiler import Compiler
from bench.errors import BenchError, ExpressionError
from bench.events import EventKind
from bench.expr import Compiled, constant, expect_dim
from bench.prompts import NO, YES, Answers
from bench.result import Outcome
from bench.runcontext import RunContext
from bench.stepkinds.base import (
    KindPlan,
    PlanStep,
    Scalar,
    StepFailed,
    StepKind,
    StepModel,
    StepSite,
    StrictModel,
    as_text,
)
from bench.stepkinds.measure import MeasurePlan, record_measurement
from bench.units import DIMENSIONLESS, Quantity, Unit, format_duration, parse_quantity, parse_unit


class PromptSpec(StrictModel):
    text: str = Field(description="what the operator is asked")
    when: str | None = Field(None, description="ask only once this condition holds (waits for it)")
    value: bool = Field(False, description="ask for a value instead of a confirmation")
    unit: str | None = Field(None, description="unit of the value")
    min: Scalar | None = None
    max: Scalar | None = None
    timeout: str = Field("30 min", description="how long to wait for the gate condition and the answer")

    _text = field_validator("min", "max", "timeout", mode="before")(as_text)


class PromptStep(StepModel):
    prompt: PromptSpec


@dataclass
class PromptPlan(KindPlan):
    text: str
    gate: Compiled | None
    gate_text: str
    value: bool
    unit: Unit
    low: float | None
    high: float | None
    timeout: float

    def signals(self) -> set[str]:
        return set(self.gate.signals) if self.gate else set()


def compile_prompt(c: Compiler, step: PromptStep, site: StepSite) -> PromptPlan:
    loc = site.at("prompt")
    p = step.prompt
    gate = c.condition(p.when, [*loc, "when"], site.marks) if p.when else None
    unit = Unit("", DIMENSIONLESS, 1.0)
    if p.unit is not None:
        try:
            unit = parse_unit(p.unit)
        except ExpressionError as exc:
            raise c.fail([*loc, "unit"], exc) from None
    if not p.value and (p.unit or p.min is not None or p.max is not None):
        raise c.fail([*loc, "unit"], "unit, min and max need 'value: true'")
    limits: list[float | None] = []
    for bound in ("min", "max"):
        text = getattr(p, bound)
        if text is None:
            limits.append(None)
            continue
        try:
            q = constant(str(text), c.scope())
            expect_dim(q, unit.dim, f"the '{bound}' of the answer")
        except ExpressionError as exc:
            raise c.fail([*loc, bound], exc) from None
        limits.append(unit.from_base(q.base))
    timeout = c.duration(p.timeout, [*loc, "timeout"])
    return PromptPlan(p.text, gate, p.when or "", p.value, unit, limits[0], limits[1], timeout)


def describe(ps: PlanStep[PromptPlan]) -> str:
    gate = f" (once {ps.plan.gate_text})" if ps.plan.gate else ""
    return f"ask the operator: {ps.plan.text}{gate}"


async def run_prompt(ctx: RunContext, step: PlanStep[PromptPlan]) -> str:
    p = step.plan
    if p.gate is not None:
        try:
            await ctx.wait_for(p.gate, p.timeout)
        except TimeoutError:
            shown = ctx.shown(ctx.values(p.gate.signals))
            raise StepFailed(
                Outcome.FAIL,
                f"'{p.gate_text}' did not hold within {format_duration(p.timeout)}; not asked ({shown})",
            ) from None
    answers = ctx.opt.answers or Answers()
    try:
        async with asyncio.timeout(p.timeout):
            answer, source = await answers.ask(step.name, p.text)
    except TimeoutError:
        raise StepFailed(Outcome.FAIL, f"no answer within {format_duration(p.timeout)}") from None
    except BenchError as exc:
        raise StepFailed(Outcome.ERROR, str(exc)) from None
    ctx.event(EventKind.PROMPT_ANSWERED, step=step.name, prompt=p.text, answer=answer, source=source)
    if not p.value:
        if answer.lower() in YES:
            return f"confirmed ({source})"
        if answer.lower() in NO:
            raise StepFailed(Outcome.FAIL, f"operator did not confirm: '{p.text}' ({source})")
        raise StepFailed(Outcome.ERROR, f"answer '{answer}' is neither yes nor no ({source})")
    try:
        q = parse_quantity(answer)
    except ExpressionError as exc:
        raise StepFailed(Outcome.ERROR, f"answer '{answer}': {exc} ({source})") from None
    if q.dim != p.unit.dim and q.dim == DIMENSIONLESS and q.unit.text == "":
        q = Quantity(p.unit.to_base(q.base), p.unit.dim, p.unit)  # a bare number is in the prompt's unit
    if q.dim != p.unit.dim:
        raise StepFailed(Outcome.ERROR, f"answer '{answer}' is not in {p.unit.text or 'plain numbers'} ({source})")
    m = MeasurePlan(
        step.name,
        None,
        None,
        f"answer of the operator ({source})",
        "value",
        None,
        None,
        p.low,
        p.high,
        p.unit,
        p.unit.factor,
    )
    return record_measurement(ctx, step, m, p.unit.from_base(q.base), f"entered by the operator ({source})")


KIND = StepKind("prompt", PromptStep, compile_prompt, describe, run_prompt)
