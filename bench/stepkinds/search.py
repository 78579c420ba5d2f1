"""``search``: the stimulus value at which a condition first becomes true, by bisection or a stepped ramp.

A trip point (the cell voltage at which a BMS trips, the isolation at which it warns) is searched
by commanding a stimulus to one value after another (the probes) and watching the condition at
each for a dwell. The bracket's safe end is where the condition must not hold, its far end where
it must; ``direction`` says which end is which. After a probe where the condition held, the
stimulus goes back to its restore value, the reset actions run (a latched trip that must be
cleared) and the condition must read false again before the next probe. The found point lies
between the last probe where the condition was false and the first where it held; its middle is
judged like a measurement, with the interval's half-width and the stimulus' own uncertainty
from the register in its budget. The stimulus ends at its restore value on every way out but an
emergency stop, which leaves it to the safe state.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from bench.compiler import Compiler, SetValue
from bench.errors import BenchError
from bench.events import EventKind
from bench.expr import Compiled
from bench.report import runtime
from bench.result import Outcome, rounded
from bench.schema import cited
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
from bench.stepkinds.measure import (
    HighLimit,
    JudgedSpec,
    LimitsOrigin,
    LimitsSource,
    LowLimit,
    MeasurePlan,
    ReportUnit,
    compile_difference,
    compile_limits,
    record_measurement,
    report_unit,
)
from bench.stepkinds.set import SetPlan, SetStep, command, compile_set, set_values
from bench.units import Unit, format_duration, format_value

if TYPE_CHECKING:
    from bench.runcontext import RunContext

METHOD_WORDS = {"bisection": "bisection", "ramp": "stepped ramp"}


class Bracket(StrictModel):
    low: Scalar = Field(description="lower end of the stimulus, in its unit, e.g. '20 kOhm'")
    high: Scalar = Field(description="upper end of the stimulus, in its unit")

    _text = field_validator("low", "high", mode="before")(as_text)


class ResetAction(StrictModel):
    """One action that clears a latched condition: a ``set`` or a ``wait``, as the steps of those kinds."""

    # Exactly one key, as the validator below requires: the schema says it so, for editors.
    model_config = ConfigDict(json_schema_extra={"minProperties": 1, "maxProperties": 1})

    set: dict[str, Scalar] | None = Field(None, description="signal -> value, commanded as a 'set' step does")
    wait: Scalar | None = Field(None, description="a duration to let pass, as a 'wait' step does")

    _values = field_validator("set", mode="before")(set_values)
    _text = field_validator("wait", mode="before")(as_text)

    @model_validator(mode="after")
    def _one_action(self) -> ResetAction:
        if len(self.model_fields_set) != 1:
            raise ValueError("a reset action is one of 'set: {signal: value}' or 'wait: duration'")
        return self


class SearchSpec(JudgedSpec):
    model_config = ConfigDict(
        json_schema_extra={
            **cited(),
            "examples": [
                {
                    "name": "iso_warning_ro",
                    "signal": "fib.iso_ro",
                    "until": "bms.warn_isolation == ACTIVE",
                    "method": "bisection",
                    "bracket": {"low": "20 kOhm", "high": "200 kOhm"},
                    "direction": "down",
                    "resolution": "0.5 kOhm",
                    "dwell": "2.5 s",
                    "restore": "0 kOhm",
                    "min": "78 kOhm",
                    "max": "86 kOhm",
                },
                {
                    "name": "iso_error_ro",
                    "signal": "fib.iso_ro",
                    "until": "bms.fault_isolation == ACTIVE",
                    "method": "ramp",
                    "bracket": {"low": "30 kOhm", "high": "50 kOhm"},
                    "direction": "down",
                    "resolution": "1 kOhm",
                    "dwell": "2.5 s",
                    "restore": "0 kOhm",
                    "reset": [
                        {"wait": "1.5 s"},
                        {"set": {"bms.cmd_clear_faults": "CLEAR"}},
                        {"wait": "300 ms"},
                        {"set": {"bms.cmd_clear_faults": "IDLE"}},
                    ],
                    "clear_within": "3 s",
                },
            ],
        }
    )

    name: str = Field(description="name of the found value (a measurement) in the result and the report")
    signal: str = Field(description="the stimulus: a commanded signal in a physical unit, e.g. 'fib.iso_ro'")
    until: str = Field(description="the condition whose first true point is searched")
    method: Literal["bisection", "ramp"] = Field(
        "bisection",
        description="'bisection': halve the bracket until it is no wider than 'resolution'; "
        "'ramp': step from the safe end by 'resolution' until the condition holds",
    )
    bracket: Bracket = Field(description="the range of the stimulus searched")
    direction: Literal["up", "down"] = Field(
        description="'up': the condition becomes true as the stimulus rises (safe end: low); "
        "'down': as it falls (safe end: high)"
    )
    resolution: Scalar = Field(
        description="bisection: the widest the last interval may be; ramp: the step; in the stimulus' unit"
    )
    dwell: Scalar = Field(description="how long each probe value is held while the condition is watched")
    restore: Scalar | None = Field(
        None,
        description="the stimulus' safe value: commanded after a probe where the condition held, and at the "
        "end [default: the bracket's safe end]",
    )
    reset: list[ResetAction] = Field(
        [],
        description="after a probe where the condition held and the stimulus is restored: 'set' and 'wait' "
        "actions, in order, that clear a latched condition",
    )
    clear_within: Scalar | None = Field(
        None,
        description="how long the condition may take to read false again after the restore and the reset "
        "[default: the dwell]",
    )
    # The found value's, as a measure's [unit default: the stimulus' unit].
    min: LowLimit = None
    max: HighLimit = None
    unit: ReportUnit = None
    origin: LimitsOrigin = None
    source: LimitsSource = None

    _text = field_validator("resolution", "dwell", "restore", "clear_within", "min", "max", mode="before")(as_text)


class SearchStep(StepModel):
    search: SearchSpec = Field(
        description="find the stimulus value at which a condition first becomes true, and judge it like a measurement"
    )


@dataclass
class SearchPlan(KindPlan):
    signal: str
    unit: Unit  # the stimulus' own unit, in which every value below is
    until: Compiled
    until_text: str
    cleared: Compiled  # not (until): what the condition must read again after a probe where it held
    method: str
    safe: float  # the bracket's end where the condition must not hold
    far: float
    resolution: float
    dwell: float
    restore: SetValue
    reset: list[SetPlan | float]  # a float: seconds to wait
    clear_within: float
    measured: MeasurePlan  # the found value's name, unit and limits

    def signals(self) -> set[str]:
        out = {self.signal} | set(self.until.signals)
        for action in self.reset:
            if isinstance(action, SetPlan):
                out |= action.signals()
        return out

    def cleanup_needs(self) -> set[str]:
        out = {self.signal.split(".")[0]}
        for action in self.reset:
            if isinstance(action, SetPlan):
                out |= action.cleanup_needs()
        return out

    def probes(self) -> int:
        """The most probes the search makes."""
        steps = abs(self.far - self.safe) / self.resolution
        if self.method == "ramp":
            return math.ceil(steps - 1e-9) + 1
        return 2 + max(0, math.ceil(math.log2(steps) - 1e-9))

    def time_limit(self) -> float:
        waits = sum(a for a in self.reset if isinstance(a, float))
        return self.probes() * (self.dwell + waits + self.clear_within)


def compile_search(c: Compiler, step: SearchStep, site: StepSite) -> SearchPlan:
    loc = site.at("search")
    s = step.search
    info = c.resolve(s.signal, [*loc, "signal"])
    if not info.writable or info.choices or info.unit.opaque:
        raise c.fail(
            [*loc, "signal"], f"'{info.name}' cannot be searched (not a commanded quantity in a physical unit)"
        )
    unit = info.unit
    low = c.set_value(info.name, str(s.bracket.low), [*loc, "bracket", "low"]).value
    high = c.set_value(info.name, str(s.bracket.high), [*loc, "bracket", "high"]).value
    if low >= high:
        raise c.fail(
            [*loc, "bracket", "low"],
            f"the bracket is reversed or empty: low {format_value(low, unit.text)} is not below high "
            f"{format_value(high, unit.text)} (the safe end is chosen by 'direction')",
        )
    # A difference: the magnitude in its own unit's factor, without a temperature's offset.
    q = compile_difference(c, [*loc, "resolution"], s.resolution, unit, "the resolution", info.name)
    resolution = q.magnitude * q.unit.factor / unit.factor
    if resolution <= 0:
        raise c.fail([*loc, "resolution"], "the resolution must be above zero")
    if resolution > high - low + 1e-12 * max(abs(low), abs(high)):
        raise c.fail(
            [*loc, "resolution"],
            f"the resolution ({format_value(resolution, unit.text)}) is larger than the bracket "
            f"({format_value(high - low, unit.text)})",
        )
    dwell = c.duration(str(s.dwell), [*loc, "dwell"])
    if dwell <= 0:
        raise c.fail([*loc, "dwell"], "the dwell must be longer than zero (the condition is watched for it)")
    until = c.condition(s.until, [*loc, "until"], site.marks)
    cleared = c.condition(f"not ({s.until})", [*loc, "until"], site.marks)
    safe, far = (low, high) if s.direction == "up" else (high, low)
    if s.restore is not None:
        restore = c.set_value(info.name, str(s.restore), [*loc, "restore"])
    else:
        restore = SetValue(info.name, safe, format_value(safe, unit.text))
    reset: list[SetPlan | float] = []
    for i, action in enumerate(s.reset):
        at = [*loc, "reset", i]
        if "wait" in action.model_fields_set:
            if action.wait is None:
                raise c.fail([*at, "wait"], "a reset 'wait' needs a duration")
            reset.append(c.duration(str(action.wait), [*at, "wait"]))
        else:
            if not action.set:
                raise c.fail([*at, "set"], "a reset 'set' needs at least one signal -> value")
            reset.append(
                compile_set(
                    c,
                    SetStep.model_validate({"set": action.set}),
                    StepSite(at, site.marks, site.step_names, site.history),
                )
            )
    clear_within = dwell if s.clear_within is None else c.duration(str(s.clear_within), [*loc, "clear_within"])
    shown = report_unit(c, [*loc, "unit"], s.unit, unit) if s.unit is not None else unit
    lowest, highest = compile_limits(c, loc, s.min, s.max, shown)
    text = f"{METHOD_WORDS[s.method]} of {info.name} until {s.until}"
    measured = MeasurePlan(s.name, None, None, text, "value", None, None, lowest, highest, shown, shown.factor)
    return SearchPlan(
        info.name,
        unit,
        until,
        s.until,
        cleared,
        s.method,
        safe,
        far,
        resolution,
        dwell,
        restore,
        reset,
        clear_within,
        measured,
    )


def default_name(step: SearchStep, index: int) -> str:
    return f"search {step.search.name}"


def describe(ps: PlanStep[SearchPlan]) -> str:
    p = ps.plan
    u = p.unit.text
    return (
        f"search {p.measured.name}: {METHOD_WORDS[p.method]} of {p.signal} from {format_value(p.safe, u)} towards "
        f"{format_value(p.far, u)} until {p.until_text} (resolution {format_value(p.resolution, u)}, "
        f"dwell {format_duration(p.dwell)})"
    )


class _Search:
    """One search as it runs: how many probes it made, and whether the stimulus is away from its restore value."""

    def __init__(self, ctx: RunContext, step: PlanStep[SearchPlan]) -> None:
        self.ctx = ctx
        self.step = step
        self.p = step.plan
        self.probes = 0
        self.moved = False  # the stimulus was commanded away from its restore value

    def shown(self, value: float) -> str:
        return f"{self.p.signal} = {format_value(value, self.p.unit.text)}"

    async def probe(self, value: float) -> bool:
        """Command ``value``, watch the condition for the dwell; whether it held (recorded as a probe)."""
        ctx, p = self.ctx, self.p
        t = ctx.now()
        self.moved = True
        await ctx.apply([SetValue(p.signal, value, format_value(value, p.unit.text))])
        sample_t = None
        try:
            sample_t = rounded(ctx.rel(await ctx.wait_for(p.until, p.dwell)))
        except TimeoutError:
            ctx.truth(p.until, p.until_text, f" at {self.shown(value)}")  # ERROR if still unknown
        met = sample_t is not None
        self.probes += 1
        ctx.event(
            EventKind.SEARCH_PROBE,
            step=self.step.name,
            name=p.measured.name,
            probe=self.probes,
            signal=p.signal,
            value=rounded(value),
            unit=p.unit.text,
            met=met,
            commanded_t=rounded(ctx.rel(t)),
            sample_t=sample_t,
            values=ctx.values(p.until.signals),
        )
        if met:
            await self.clear()
        return met

    async def clear(self) -> None:
        """The stimulus back to its restore value, the reset actions, and the condition false again."""
        ctx, p = self.ctx, self.p
        await self.restore()
        for action in p.reset:
            if isinstance(action, float):
                await asyncio.sleep(action)
            else:
                await command(ctx, action)
        try:
            await ctx.wait_for(p.cleared, p.clear_within)
        except TimeoutError:
            after = "and the reset" if p.reset else "(a condition that latches needs 'reset:')"
            raise StepFailed(
                Outcome.ERROR,
                f"'{p.until_text}' still holds {format_duration(p.clear_within)} after {p.signal} was restored to "
                f"{format_value(p.restore.value, p.unit.text)} {after} ({ctx.shown(ctx.values(p.until.signals))})",
            ) from None

    async def restore(self) -> None:
        if self.moved:
            await self.ctx.apply([self.p.restore])
            self.moved = False

    def held_at_safe_end(self) -> StepFailed:
        p = self.p
        return StepFailed(
            Outcome.FAIL,
            f"bracket not verified: '{p.until_text}' already holds at the safe end, {self.shown(p.safe)}",
        )


async def _bisect(s: _Search) -> tuple[float, float]:
    """(last value where the condition was false, first where it held), no further apart than the resolution."""
    p = s.p
    if await s.probe(p.safe):
        raise s.held_at_safe_end()
    if not await s.probe(p.far):
        raise StepFailed(
            Outcome.FAIL,
            f"bracket not verified: '{p.until_text}' does not hold at the far end, {s.shown(p.far)}, "
            f"within the dwell of {format_duration(p.dwell)}",
        )
    false_at, true_at = p.safe, p.far
    while abs(true_at - false_at) > p.resolution * (1 + 1e-9):
        middle = (false_at + true_at) / 2
        if await s.probe(middle):
            true_at = middle
        else:
            false_at = middle
    return false_at, true_at


async def _stepped(s: _Search) -> tuple[float, float]:
    """From the safe end towards the far end by the resolution, until the first value where the condition holds."""
    p = s.p
    span = abs(p.far - p.safe)
    sign = 1.0 if p.far > p.safe else -1.0
    before: float | None = None
    for i in range(math.ceil(span / p.resolution - 1e-9) + 1):
        value = p.safe + sign * min(i * p.resolution, span)  # the last step ends on the far end exactly
        if await s.probe(value):
            if before is None:
                raise s.held_at_safe_end()
            return before, value
        before = value
    raise StepFailed(
        Outcome.FAIL,
        f"'{p.until_text}' never held from {s.shown(p.safe)} to {format_value(p.far, p.unit.text)} in steps of "
        f"{format_value(p.resolution, p.unit.text)}",
    )


async def run_search(ctx: RunContext, step: PlanStep[SearchPlan]) -> str:
    p = step.plan
    s = _Search(ctx, step)
    try:
        false_at, true_at = await (_bisect(s) if p.method == "bisection" else _stepped(s))
        await s.restore()
    finally:
        # Any other way out (a failed bracket, a stop, a device fault): the stimulus goes back to its
        # restore value, unless an emergency stop is commanding every device's safe state.
        if s.moved and not ctx.emergency_stopped:
            with contextlib.suppress(BenchError, OSError):
                await ctx.apply([p.restore])
    m = p.measured

    def shown(v: float) -> float:
        return m.unit.from_base(p.unit.to_base(v))

    value = shown((false_at + true_at) / 2)
    interval = (shown(false_at), shown(true_at))
    uncertainty = runtime.search_uncertainty(ctx.plan, p.signal, value, m.unit, interval)
    how = (
        f"{m.expr_text}: false at {format_value(interval[0], m.unit.text)}, "
        f"true at {format_value(interval[1], m.unit.text)} ({s.probes} probes)"
    )
    return record_measurement(ctx, step, m, value, how, uncertainty) + f"; {s.probes} probes"


# A found value outside its limits lets the steps go on, as a measure's does.
KIND = StepKind(
    "search",
    SearchStep,
    compile_search,
    describe,
    run_search,
    default_name=default_name,
    goes_on_after_fail=True,
    judged="search",
)
