"""``set``: command signal values, device by device, and record what each device read back.

A value is a constant (checked against the signal's unit and range when the file is loaded) or
an expression of signals and @marks, evaluated when the step runs: ``fib.iso_ro: 1 / (1 / ($iso
* $u_max) - 1 / bms.iso_resistance)`` inserts the resistor that the isolation just measured calls
for. A computed value outside the signal's range, or one that cannot be evaluated, is an ERROR
and nothing of the step is commanded."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict, Field, field_validator

from bench.compiler import Compiler, SetValue
from bench.errors import ExpressionError
from bench.expr import NUM, Compiled, compile_expr, expect_dim
from bench.result import Outcome
from bench.stepkinds.base import KindPlan, PlanStep, Scalar, StepFailed, StepKind, StepModel, StepSite, as_text
from bench.units import Unit, format_value

if TYPE_CHECKING:
    from bench.runcontext import RunContext


def set_values(v: Any) -> Any:
    """The values of a ``set:`` mapping as text (YAML reads ``12`` as a number)."""
    if isinstance(v, dict):
        return {k: as_text(x) for k, x in v.items()}
    return v


class SetStep(StepModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"name": "start charging", "set": {"psu.voltage_set": "$charger_voltage", "psu.output": "ON"}},
                {"name": "inject a lost command message", "set": {"bms.inject_bench_command": "LOST"}, "as": "t_fault"},
            ]
        }
    )

    set: dict[str, Scalar] = Field(description="signal -> value, e.g. {psu.output: ON, psu.voltage_set: 850 V}")
    as_: str | None = Field(None, alias="as", description="record the instant the values were applied as @name")

    _values = field_validator("set", mode="before")(set_values)


@dataclass
class ComputedValue:
    """A value the step computes when it runs, in the signal's own unit and range."""

    signal: str
    expr: Compiled
    text: str
    unit: Unit
    minimum: float | None
    maximum: float | None


@dataclass
class SetPlan(KindPlan):
    values: list[SetValue | ComputedValue]  # in the file's order, which is the order commanded

    def signals(self) -> set[str]:
        return {v.signal for v in self.values} | self.inputs()

    def inputs(self) -> set[str]:
        return {name for v in self.values if isinstance(v, ComputedValue) for name in v.expr.signals}

    def cleanup_needs(self) -> set[str]:
        return {v.signal.split(".")[0] for v in self.values}


def compile_set(c: Compiler, step: SetStep, site: StepSite) -> SetPlan:
    values: list[SetValue | ComputedValue] = []
    for sig, text in step.set.items():
        loc = site.at("set", sig)
        values.append(_computed(c, sig, str(text), loc, site.marks) or c.set_value(sig, str(text), loc))
    site.record_mark(c, step.as_)
    return SetPlan(values)


def _computed(c: Compiler, signal: str, text: str, loc: list[str | int], marks: frozenset[str]) -> ComputedValue | None:
    """The value as an expression of signals or @marks; None for a constant or a state, which
    ``Compiler.set_value`` checks (and explains) as before."""
    try:
        expr = compile_expr(text, c.scope(marks))
    except ExpressionError:
        return None
    if expr.kind != NUM or expr.constant:
        return None
    info = c.resolve(signal, loc)
    if not info.writable:
        raise c.fail(loc, f"signal '{info.name}' cannot be set (it is measured, not commanded)")
    if info.choices or info.unit.opaque:
        raise c.fail(loc, f"{info.name} takes a constant: a computed value needs a signal in a physical unit")
    try:
        expect_dim(expr, info.unit.dim, f"the value of {info.name} ({info.unit.text or 'no unit'})")
    except ExpressionError as exc:
        raise c.fail(loc, exc) from None
    return ComputedValue(info.name, expr, text, info.unit, info.minimum, info.maximum)


def describe(ps: PlanStep[SetPlan]) -> str:
    values = ", ".join(f"{v.signal} = {v.text}" for v in ps.plan.values)
    return "set " + values + (f" (@{ps.mark})" if ps.mark else "")


async def run_set(ctx: RunContext, step: PlanStep[SetPlan]) -> str:
    t = ctx.now()
    text = await command(ctx, step.plan)
    if step.mark:
        # The instant the command went out: a fault injected here starts with the next frame.
        ctx.bus.marks[step.mark] = ctx.rel(t)
        text += f" (@{step.mark} = {format_value(ctx.rel(t), 's')})"
    return text


async def command(ctx: RunContext, plan: SetPlan) -> str:
    """Command the values of ``plan`` (a step's, or an action of another kind's step); the read-back."""
    # Every computed value before any command: a value that cannot be had commands nothing of the step.
    sets = [_evaluate(ctx, v) if isinstance(v, ComputedValue) else v for v in plan.values]
    return await ctx.apply(sets)


def _evaluate(ctx: RunContext, cv: ComputedValue) -> SetValue:
    value = cv.unit.from_base(ctx.evaluate(cv.expr, cv.text))
    if not math.isfinite(value):
        raise StepFailed(Outcome.ERROR, f"{cv.signal} = {cv.text} is {value}: nothing commanded")
    if (cv.minimum is not None and value < cv.minimum - 1e-9) or (cv.maximum is not None and value > cv.maximum + 1e-9):
        raise StepFailed(
            Outcome.ERROR,
            f"{cv.signal} = {cv.text} is {format_value(value, cv.unit.text)}, out of its range"
            f" ({cv.minimum} .. {cv.maximum} {cv.unit.text}): nothing commanded",
        )
    return SetValue(cv.signal, value, f"{format_value(value, cv.unit.text)} ({cv.text})")


KIND = StepKind("set", SetStep, compile_set, describe, run_set)
