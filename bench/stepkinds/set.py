"""``set``: command signal values, device by device, and record what each device read back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator

from bench.compiler import Compiler, SetValue
from bench.runcontext import RunContext
from bench.stepkinds.base import KindPlan, PlanStep, Scalar, StepKind, StepModel, StepSite, as_text
from bench.units import format_value


class SetStep(StepModel):
    set: dict[str, Scalar] = Field(description="signal -> value, e.g. {psu.output: ON, psu.voltage_set: 850 V}")
    as_: str | None = Field(None, alias="as", description="record the instant the values were applied as @name")

    @field_validator("set", mode="before")
    @classmethod
    def _values(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: as_text(x) for k, x in v.items()}
        return v


@dataclass
class SetPlan(KindPlan):
    sets: list[SetValue]

    def signals(self) -> set[str]:
        return {sv.signal for sv in self.sets}

    def cleanup_needs(self) -> set[str]:
        return {sv.signal.split(".")[0] for sv in self.sets}


def compile_set(c: Compiler, step: SetStep, site: StepSite) -> SetPlan:
    sets = [c.set_value(sig, str(text), site.at("set", sig)) for sig, text in step.set.items()]
    site.record_mark(c, step.as_)
    return SetPlan(sets)


def describe(ps: PlanStep[SetPlan]) -> str:
    values = ", ".join(f"{sv.signal} = {sv.text}" for sv in ps.plan.sets)
    return "set " + values + (f" (@{ps.mark})" if ps.mark else "")


async def run_set(ctx: RunContext, step: PlanStep[SetPlan]) -> str:
    t = ctx.now()
    text = await ctx.apply(step.plan.sets)
    if step.mark:
        # The instant the command went out: a fault injected here starts with the next frame.
        ctx.bus.marks[step.mark] = ctx.rel(t)
        text += f" (@{step.mark} = {format_value(ctx.rel(t), 's')})"
    return text


KIND = StepKind("set", SetStep, compile_set, describe, run_set)
