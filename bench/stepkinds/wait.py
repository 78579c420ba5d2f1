"""``wait``: let a fixed time pass."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import ConfigDict, Field, field_validator

from bench.compiler import Compiler
from bench.stepkinds.base import KindPlan, PlanStep, StepKind, StepModel, StepSite, as_text
from bench.units import format_duration

if TYPE_CHECKING:
    from bench.runcontext import RunContext


class WaitStep(StepModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"wait": "2 s"}, {"name": "soak", "wait": "$observation"}]}
    )

    wait: str = Field(description="duration, e.g. '2 s' or '$soak'")

    _text = field_validator("wait", mode="before")(as_text)


@dataclass
class WaitPlan(KindPlan):
    duration: float

    def time_limit(self) -> float:
        return self.duration


def compile_wait(c: Compiler, step: WaitStep, site: StepSite) -> WaitPlan:
    return WaitPlan(c.duration(step.wait, site.at("wait")))


def describe(ps: PlanStep[WaitPlan]) -> str:
    return f"wait {format_duration(ps.plan.duration)}"


async def run_wait(ctx: RunContext, step: PlanStep[WaitPlan]) -> None:
    await asyncio.sleep(step.plan.duration)


KIND = StepKind("wait", WaitStep, compile_wait, describe, run_wait)
