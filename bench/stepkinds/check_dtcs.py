"""``check_dtcs``: read a DUT's DTC memory and check which DTCs are stored (docs/dtc.md)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict, Field, field_validator

from bench.compiler import Compiler
from bench.dtccodes import DTC_STATUS_BITS, STORED_MASK, dtc_problems, format_dtc, parse_dtc
from bench.dtcs import DTC_READ_TIMEOUT
from bench.errors import BenchError
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
from bench.units import format_duration
from bench.yamlsource import Loc

if TYPE_CHECKING:
    from bench.runcontext import RunContext


class CheckDtcsSpec(StrictModel):
    """Which DTCs a device must have stored, with which status, and which others it may have."""

    device: str = Field(description="a device of 'requires' whose station entry has 'uds:'")
    stored: list[Scalar] = Field(description="DTCs that must be stored, e.g. [P0AA1-00]; [] = none may be stored")
    status: list[str] = Field(["confirmedDTC"], description="ISO 14229-1 status bits each expected DTC must have")
    allow: list[Scalar] = Field([], description="other DTCs that may be stored too")
    within: str | None = Field(None, description="re-read until it holds, at most this long")

    _text = field_validator("within", mode="before")(as_text)

    @field_validator("stored", "allow", mode="before")
    @classmethod
    def _no_true_false(cls, v: Any) -> Any:
        # Left to pydantic, true would be read as the number 1: DTC 0x000001.
        if isinstance(v, list) and any(isinstance(x, bool) for x in v):
            raise ValueError("a DTC is a code such as P0AA1-00 or its number, not true/false")
        return v


class CheckDtcsStep(StepModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "weld stored and confirmed, nothing else",
                    "check_dtcs": {
                        "device": "bms",
                        "stored": ["P0AA1-00"],
                        "status": ["confirmedDTC"],
                        "within": "3 s",
                    },
                }
            ]
        }
    )

    check_dtcs: CheckDtcsSpec = Field(description="reads a device's DTCs and checks them against what is expected")


@dataclass
class DtcCheckPlan(KindPlan):
    device: str
    stored: list[int]  # DTC numbers that must be stored with every bit of required_bits
    required_bits: int
    allowed: list[int]
    within: float | None  # re-read until it holds, at most this long; None: read once
    status_text: str


def compile_check_dtcs(c: Compiler, step: CheckDtcsStep, site: StepSite) -> DtcCheckPlan:
    loc = site.at("check_dtcs")
    d = step.check_dtcs
    device = c.dtc_device(d.device, [*loc, "device"])
    bits = 0
    for i, name in enumerate(d.status):
        if name not in DTC_STATUS_BITS:
            raise c.fail([*loc, "status", i], f"unknown DTC status bit '{name}' (bits: {', '.join(DTC_STATUS_BITS)})")
        bits |= 1 << DTC_STATUS_BITS.index(name)
    stored = _dtc_numbers(c, d.stored, [*loc, "stored"])
    allowed = _dtc_numbers(c, d.allow, [*loc, "allow"])
    within = c.duration(d.within, [*loc, "within"]) if d.within is not None else None
    return DtcCheckPlan(device, stored, bits, allowed, within, ", ".join(d.status))


def _dtc_numbers(c: Compiler, codes: Sequence[object], loc: Loc) -> list[int]:
    numbers = []
    for i, code in enumerate(codes):
        # YAML reads 0x0AA100 as a number: it is the DTC number written in hexadecimal.
        text = f"0x{code:X}" if isinstance(code, int) else str(code)
        try:
            numbers.append(parse_dtc(text))
        except ValueError as exc:
            raise c.fail([*loc, i], exc) from None
    return numbers


def describe(ps: PlanStep[DtcCheckPlan]) -> str:
    d = ps.plan
    codes = ", ".join(format_dtc(n) for n in d.stored)
    what = f"{codes} stored ({d.status_text})" if codes else "no DTC stored"
    allowed = f", tolerating {', '.join(format_dtc(n) for n in d.allowed)}" if d.allowed else ""
    within = f" within {format_duration(d.within)}" if d.within is not None else ""
    return f"check the DTCs of {d.device}: {what}{allowed}{within}"


async def run_check_dtcs(ctx: RunContext, step: PlanStep[DtcCheckPlan]) -> str:
    d = step.plan
    driver = ctx.plan.drivers[d.device]
    deadline = ctx.now() + (d.within or 0.0)
    while True:
        # Every status bit: an expected DTC's missing bit is then named with the bits it has.
        async with dtc_request(d.device):
            read = await driver.read_dtcs(0xFF)
        problems = dtc_problems(read, d.stored, allowed=d.allowed, required_bits=d.required_bits)
        if not problems:
            stored = [str(dtc) for dtc in read if dtc.status & STORED_MASK]
            return f"{d.device}: {', '.join(stored)}" if stored else f"{d.device}: no DTC stored"
        if ctx.now() >= deadline:
            within = f" after {format_duration(d.within)}" if d.within is not None else ""
            raise StepFailed(Outcome.FAIL, f"{d.device}: {'; '.join(problems)}{within}")
        await asyncio.sleep(min(DTC_POLL_INTERVAL, max(0.0, deadline - ctx.now())))


# How often check_dtcs with 'within' re-reads the DTC memory: a request costs the DUT little,
# and a fault's DTC is set within a task cycle of its detection.
DTC_POLL_INTERVAL = 0.5


@contextlib.asynccontextmanager
async def dtc_request(device: str) -> AsyncIterator[None]:
    """A DTC request of a step: a DUT that does not answer is the step's ERROR, naming the device."""
    try:
        async with asyncio.timeout(DTC_READ_TIMEOUT):
            yield
    except TimeoutError:
        raise StepFailed(
            Outcome.ERROR, f"{device}: no answer to the DTC request within {DTC_READ_TIMEOUT:g} s"
        ) from None
    except BenchError as exc:
        raise StepFailed(Outcome.ERROR, str(exc)) from None


KIND = StepKind("check_dtcs", CheckDtcsStep, compile_check_dtcs, describe, run_check_dtcs)
