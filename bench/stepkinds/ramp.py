"""``ramp``: move commanded signals together from a value to another at a rate, optionally until a condition."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import ConfigDict, Field, field_validator

from bench.compiler import MIN_RAMP_INTERVAL_S, Compiler, SetValue
from bench.errors import ExpressionError
from bench.events import EventKind
from bench.expr import Compiled, constant, expect_dim
from bench.result import Outcome
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
from bench.stepkinds.wait_until import condition_met
from bench.units import TIME, format_value

if TYPE_CHECKING:
    from bench.runcontext import RunContext


class RampSpec(StrictModel):
    """Which commanded signals move, from where to where, how fast and in which steps."""

    signals: list[str] = Field(min_length=1, description="signals that follow the ramp together")
    from_: Scalar | None = Field(
        None, alias="from", description="start value, e.g. '0 %vol' [default: the first signal's present value]"
    )
    to: Scalar = Field(description="end value")
    rate: Scalar = Field(description="change per unit of time, e.g. '0.1 %vol/s' or '2 degC/min'")
    interval: Scalar = Field("100 ms", description="time between two setpoints")

    _text = field_validator("from_", "to", "rate", "interval", mode="before")(as_text)


class RampStep(StepModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "concentration rises to the warning",
                    "ramp": {
                        "signals": ["fccu.h2_conc_1", "fccu.h2_conc_2"],
                        "from": "0 %vol",
                        "to": "$ramp_end",
                        "rate": "0.2 %vol/s",
                    },
                    "until": "fccu.lamp_h2_warning == ON",
                    "as": "t_warn",
                }
            ]
        }
    )

    ramp: RampSpec = Field(description="moves commanded signals together at a rate, one setpoint every interval")
    until: str | None = Field(None, description="stop the ramp as soon as this condition holds")
    as_: str | None = Field(None, alias="as", description="record the instant 'until' became true as @name")
    on_end: Literal["fail", "continue"] = Field(
        "fail", description="with 'until': what the end of the ramp without the condition means"
    )


@dataclass
class RampPlan(KindPlan):
    ramped: list[str]  # the signals that follow the ramp
    start: float | None  # in the signals' own unit; None: from the present value
    end: float
    rate: float  # signal unit per second, > 0
    interval: float
    unit: str
    until: Compiled | None  # stop as soon as it holds
    until_text: str
    on_end: str

    def signals(self) -> set[str]:
        return set(self.ramped) | (set(self.until.signals) if self.until else set())


def compile_ramp(c: Compiler, step: RampStep, site: StepSite) -> RampPlan:
    loc = site.at("ramp")
    r = step.ramp
    infos = []
    for i, sig in enumerate(r.signals):
        info = c.resolve(sig, [*loc, "signals", i])
        if not info.writable or info.choices:
            raise c.fail([*loc, "signals", i], f"'{sig}' cannot be ramped (not a commanded quantity)")
        infos.append(info)
    r.signals = [info.name for info in infos]
    unit = infos[0].unit
    for i, info in enumerate(infos[1:], 1):
        if info.unit.dim != unit.dim or info.unit.factor != unit.factor:
            raise c.fail([*loc, "signals", i], f"'{r.signals[i]}' is not in the unit of '{r.signals[0]}' ({unit.text})")
    values: list[float | None] = []
    for key in ("from", "to"):
        text = r.from_ if key == "from" else r.to
        if text is None:
            values.append(None)
            continue
        sv = c.set_value(r.signals[0], str(text), [*loc, key])
        for sig in r.signals[1:]:
            c.set_value(sig, sv.text, [*loc, key])
        values.append(sv.value)
    assert values[1] is not None
    rate_dim = tuple(a - b for a, b in zip(unit.dim, TIME, strict=True))
    try:
        q = constant(str(r.rate), c.scope())
        expect_dim(q, rate_dim, f"the rate of {r.signals[0]} ({unit.text or 'no unit'} per unit of time)")  # type: ignore[arg-type]
    except ExpressionError as exc:
        raise c.fail([*loc, "rate"], exc) from None
    rate = q.base / unit.factor
    if rate <= 0:
        raise c.fail([*loc, "rate"], "the rate must be above zero (the direction comes from 'from' and 'to')")
    interval = c.duration(str(r.interval), [*loc, "interval"], MIN_RAMP_INTERVAL_S, "the interval")
    until = None
    if step.until is not None:
        until = c.condition(step.until, site.at("until"), site.marks)
    elif step.as_:
        raise c.fail(site.at("as"), "'as' records when 'until' became true; this ramp has no 'until'")
    site.record_mark(c, step.as_, until)
    return RampPlan(
        list(r.signals), values[0], values[1], rate, interval, unit.text, until, step.until or "", step.on_end
    )


def describe(ps: PlanStep[RampPlan]) -> str:
    r = ps.plan
    until = f" until {r.until_text}" if r.until is not None else ""
    start = "its present value" if r.start is None else format_value(r.start, r.unit)
    return (
        f"ramp {', '.join(r.ramped)} from {start} to {format_value(r.end, r.unit)}"
        f" at {format_value(r.rate, r.unit)}/s{until}"
    )


async def run_ramp(ctx: RunContext, step: PlanStep[RampPlan]) -> str:
    r = step.plan
    start = r.start if r.start is not None else ctx.bus.values.get(r.ramped[0])
    if start is None:
        raise StepFailed(Outcome.ERROR, f"{r.ramped[0]} has no value yet to ramp from")
    span = abs(r.end - start)
    direction = 1.0 if r.end >= start else -1.0
    duration = span / r.rate

    async def ramp() -> None:
        t0 = ctx.now()
        while True:
            done = min(span, r.rate * (ctx.now() - t0))
            value = start + direction * done
            await ctx.apply([SetValue(sig, value, format_value(value, r.unit)) for sig in r.ramped])
            if done >= span:
                return
            await asyncio.sleep(r.interval)

    task = ctx.loop.create_task(ramp(), name=f"ramp {step.name}")
    last = f"{', '.join(r.ramped)} = {format_value(r.end, r.unit)}"
    if r.until is None:
        await task
        return f"reached {last}"
    # The condition is watched on its samples while the ramp runs; the end of the ramp plus
    # one interval bounds the wait so that a reply in flight still counts.
    waiter = ctx.loop.create_task(ctx.wait_for(r.until, duration + r.interval), name=f"until {step.name}")
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task.done() and not task.cancelled() and (failed := task.exception()) is not None:
            raise failed  # a setpoint that could not be applied ends the step now, not at the timeout
        t = await waiter
    except TimeoutError:
        values = ctx.values(r.until.signals)
        msg = f"ramp ended at {last} without {r.until_text} ({ctx.shown(values)})"
        ctx.event(EventKind.WAIT_TIMEOUT, step=step.name, values=values)
        if r.on_end == "continue":
            return msg
        raise StepFailed(Outcome.FAIL, msg) from None
    finally:
        for pending in (task, waiter):
            pending.cancel()
            # Already raised above if it mattered; a late failure after the condition held does not.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pending
    return condition_met(ctx, step, r.until, t)


KIND = StepKind("ramp", RampStep, compile_ramp, describe, run_ramp)
