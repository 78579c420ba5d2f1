"""``clear_dtcs``: clear the DTC memory of one or more DUTs (docs/dtc.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import ConfigDict, Field

from bench.compiler import Compiler
from bench.stepkinds.base import KindPlan, PlanStep, StepKind, StepModel, StepSite
from bench.stepkinds.check_dtcs import dtc_request

if TYPE_CHECKING:
    from bench.runcontext import RunContext


class ClearDtcsStep(StepModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"clear_dtcs": "bms"}, {"clear_dtcs": ["bms", "fccu"]}]})

    clear_dtcs: str | list[str] = Field(description="device (or devices) whose DTC memory is cleared")


@dataclass
class ClearDtcsPlan(KindPlan):
    devices: list[str]  # whose DTC memory


def compile_clear_dtcs(c: Compiler, step: ClearDtcsStep, site: StepSite) -> ClearDtcsPlan:
    one = isinstance(step.clear_dtcs, str)
    names = [step.clear_dtcs] if isinstance(step.clear_dtcs, str) else step.clear_dtcs
    where = site.at("clear_dtcs")
    devices = [c.dtc_device(d, where if one else [*where, j]) for j, d in enumerate(names)]
    if not devices:
        raise c.fail(where, "name at least one device whose DTCs are cleared")
    return ClearDtcsPlan(devices)


def describe(ps: PlanStep[ClearDtcsPlan]) -> str:
    return f"clear the DTCs of {', '.join(ps.plan.devices)}"


async def run_clear_dtcs(ctx: RunContext, step: PlanStep[ClearDtcsPlan]) -> str:
    for device in step.plan.devices:
        async with dtc_request(device):
            await ctx.plan.drivers[device].clear_dtcs()
    return f"DTC memory of {', '.join(step.plan.devices)} cleared"


KIND = StepKind("clear_dtcs", ClearDtcsStep, compile_clear_dtcs, describe, run_clear_dtcs)
