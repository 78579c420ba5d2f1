"""``check``: a condition that must hold now."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import ConfigDict, Field

from bench.compiler import Compiler
from bench.expr import Compiled
from bench.result import Outcome
from bench.stepkinds.base import KindPlan, PlanStep, StepFailed, StepKind, StepModel, StepSite

if TYPE_CHECKING:
    from bench.runcontext import RunContext


class CheckStep(StepModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "start SOC in the middle of the normal range",
                    "check": "bms.soc >= $soc_min and bms.soc <= $soc_max",
                    "message": "precondition not met",
                }
            ]
        }
    )

    check: str = Field(description="condition that must hold now: false is FAIL, unknown (no sample yet) ERROR")
    message: str | None = Field(None, description="recorded with the verdict when the condition does not hold")


@dataclass
class CheckPlan(KindPlan):
    cond: Compiled
    cond_text: str
    message: str | None

    def signals(self) -> set[str]:
        return set(self.cond.signals)


def compile_check(c: Compiler, step: CheckStep, site: StepSite) -> CheckPlan:
    return CheckPlan(c.condition(step.check, site.at("check"), site.marks), step.check, step.message)


def describe(ps: PlanStep[CheckPlan]) -> str:
    return f"check {ps.plan.cond_text}"


async def run_check(ctx: RunContext, step: PlanStep[CheckPlan]) -> str:
    p = step.plan
    result, shown = ctx.truth(p.cond, p.cond_text)
    if not result:
        text = p.message or f"check failed: {p.cond_text}"
        raise StepFailed(Outcome.FAIL, f"{text} ({shown})" if shown else text)
    return shown


KIND = StepKind("check", CheckStep, compile_check, describe, run_check)
