"""``measure``: a value (of a signal, a statistic over a window, or an expression), judged against limits."""

from __future__ import annotations

import asyncio
import statistics
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from bench.compiler import Compiler, refuse_bare, refuse_mixing
from bench.errors import ExpressionError
from bench.events import EventKind
from bench.expr import NUM, Compiled, compile_expr, constant, expect_dim
from bench.provenance import Origin, require_cited
from bench.report import runtime
from bench.result import Measurement, Outcome
from bench.runcontext import RunContext, rounded
from bench.stats import max_moving_mean
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
from bench.units import TIME, Unit, format_duration, format_value, mixing_error, parse_unit


class MeasureSpec(StrictModel):
    name: str
    signal: str | None = Field(None, description="signal to measure")
    expr: str | None = Field(None, description="or an expression, e.g. '@t_open - @t_trip'")
    stat: Literal["value", "min", "max", "mean", "max_moving_mean"] = "value"
    over: str | None = Field(None, description="length of the moving window of 'max_moving_mean', e.g. '3 s'")
    window: str | None = Field(None, description="collect for this long from now, then apply stat")
    since: str | None = Field(None, description="apply stat over the samples since this instant (@mark or step name)")
    min: Scalar | None = None
    max: Scalar | None = None
    unit: str | None = Field(None, description="unit to report the value in")
    uncertainty: Scalar | None = Field(None, description="expanded uncertainty U (k = 2) if known; else computed")
    # The origin of a limit written here (a number or an expression); a limit that is one parameter
    # has the parameter's origin (docs/sequences.md, "Origins of limits and deviations").
    origin: Origin | None = Field(
        None, description="who set the limits written here: regulation, item or lab [default: lab]"
    )
    source: str | None = Field(None, description="where those limits come from; for a regulation with its tag")

    _text = field_validator("window", "over", "min", "max", "uncertainty", mode="before")(as_text)

    @model_validator(mode="after")
    def _regulation_is_cited(self) -> MeasureSpec:
        require_cited(self.origin, self.source)
        return self


class MeasureStep(StepModel):
    measure: MeasureSpec


@dataclass
class MeasurePlan(KindPlan):
    name: str
    signal: str | None
    expr: Compiled | None
    expr_text: str
    stat: str
    window: float | None
    since: str | None
    low: float | None
    high: float | None
    unit: Unit
    dim_factor: float  # base -> report unit: value = (base - offset) / factor
    over: float | None = None  # moving window of max_moving_mean

    def signals(self) -> set[str]:
        return ({self.signal} if self.signal else set()) | (set(self.expr.signals) if self.expr else set())


def compile_measure(c: Compiler, step: MeasureStep, site: StepSite) -> MeasurePlan:
    loc = site.at("measure")
    marks = site.marks
    m = step.measure
    if (m.signal is None) == (m.expr is None):
        raise c.fail(loc, "a measure needs exactly one of 'signal' or 'expr'")
    if m.window is not None and m.since is not None:
        raise c.fail([*loc, "window"], "use either 'window' or 'since', not both")
    compiled: Compiled | None = None
    if m.signal is not None:
        info = c.resolve(m.signal, [*loc, "signal"])
        m.signal = info.name  # the run reads and records the signal by the name its driver publishes
        dim, unit = info.unit.dim, info.unit
        if info.choices and m.stat != "value":
            raise c.fail([*loc, "stat"], f"{m.signal} is a state signal; only 'value' can be measured")
    else:
        try:
            compiled = compile_expr(str(m.expr), c.scope(marks))
        except ExpressionError as exc:
            raise c.fail([*loc, "expr"], exc) from None
        if compiled.kind != NUM:
            raise c.fail([*loc, "expr"], "a measured expression must be a quantity, not a condition")
        if m.stat != "value" or m.window or m.since:
            raise c.fail([*loc, "stat"], "stat, window and since apply to a signal, not to an expression")
        dim = compiled.dim
        unit = compiled.display_unit or Unit("", dim, 1.0)
    if m.unit is not None:
        try:
            wanted = parse_unit(m.unit, c.scope().opaque)
        except ExpressionError as exc:
            raise c.fail([*loc, "unit"], exc) from None
        if wanted.dim != dim or mixing_error(wanted, unit) is not None:
            raise c.fail([*loc, "unit"], f"unit mismatch: '{m.unit}' is not a unit of the measured quantity")
        unit = wanted
    elif dim == TIME:
        unit = Unit("s", TIME, 1.0)
    window = c.duration(m.window, [*loc, "window"]) if m.window is not None else None
    over = c.duration(m.over, [*loc, "over"]) if m.over is not None else None
    if (m.stat == "max_moving_mean") != (over is not None):
        raise c.fail([*loc, "over" if over is not None else "stat"], "'max_moving_mean' and 'over' go together")
    if over is not None and over <= 0:
        raise c.fail([*loc, "over"], "the moving window must be longer than zero")
    if m.stat != "value" and m.signal is not None and window is None and m.since is None:
        raise c.fail([*loc, "stat"], f"stat '{m.stat}' needs a 'window' or 'since'")
    since = None
    if m.since is not None:
        s = m.since.strip()
        if s.startswith("@"):
            if s[1:] not in marks:
                raise c.fail([*loc, "since"], f"unknown instant '{s}' (not recorded by an earlier step's 'as:')")
            since = s
        elif s in site.step_names:
            since = s
        else:
            raise c.fail([*loc, "since"], f"'{s}' is neither an @instant nor the name of an earlier step")
        assert m.signal is not None
        site.history.add(m.signal)
    limits: list[float | None] = []
    for bound in ("min", "max"):
        text = getattr(m, bound)
        if text is None:
            limits.append(None)
            continue
        try:
            q = constant(str(text), c.scope())
            refuse_mixing(
                q.unit, unit, f"the '{bound}' limit is in {q.unit.text or 'no unit'}, the value in {unit.text}"
            )
            expect_dim(q, dim, f"the '{bound}' limit")
        except ExpressionError as exc:
            raise c.fail([*loc, bound], exc) from None
        limits.append(unit.from_base(q.base))
    if limits[0] is not None and limits[1] is not None and limits[0] > limits[1]:
        raise c.fail([*loc, "min"], "min is above max")
    if m.uncertainty is not None:
        try:
            u = constant(str(m.uncertainty), c.scope())
            refuse_mixing(u.unit, unit, f"the uncertainty is in {u.unit.text or 'no unit'}, the value in {unit.text}")
            expect_dim(u, dim, "the uncertainty")
            refuse_bare(u, unit, m.name, str(m.uncertainty))
        except ExpressionError as exc:
            raise c.fail([*loc, "uncertainty"], exc) from None
        # The run reads the stated U from the sequence: store it resolved, so that a parameter
        # (`uncertainty: $u_dmm`) counts like a number written there.
        m.uncertainty = str(u)
    return MeasurePlan(
        m.name,
        m.signal,
        compiled,
        m.expr or f"{m.stat} of {m.signal}",
        m.stat,
        window,
        since,
        limits[0],
        limits[1],
        unit,
        unit.factor,
        over,
    )


def default_name(step: MeasureStep, index: int) -> str:
    return f"measure {step.measure.name}"


def describe(ps: PlanStep[MeasurePlan]) -> str:
    m = ps.plan
    lo = "" if m.low is None else f"{format_value(m.low, m.unit.text)} <= "
    hi = "" if m.high is None else f" <= {format_value(m.high, m.unit.text)}"
    return f"measure {lo}{m.name}{hi} ({m.expr_text})"


async def run_measure(ctx: RunContext, step: PlanStep[MeasurePlan]) -> str:
    m = step.plan
    value: float | None
    if m.expr is not None:
        value = m.unit.from_base(ctx.evaluate(m.expr, m.expr_text))
        how = m.expr_text
    else:
        assert m.signal is not None
        info = ctx.plan.catalog[m.signal]
        if m.window is not None:
            timed: list[tuple[float, float]] = []
            sub = ctx.bus.subscribe([m.signal], lambda n, v, t: timed.append((t, v)))
            try:
                await asyncio.sleep(m.window)
            finally:
                sub.cancel()
            how = f"{m.stat} of {m.signal} over {format_duration(m.window)}"
        elif m.since is not None:
            since = (
                ctx.bus.marks.get(m.since[1:])
                if m.since.startswith("@")
                else ctx.rel(ctx.step_starts.get(m.since, ctx.state.t0))
            )
            if since is None:
                raise StepFailed(Outcome.ERROR, f"instant {m.since} was never recorded")
            timed = ctx.bus.history(m.signal, ctx.state.t0 + since)
            how = f"{m.stat} of {m.signal} since {m.since}"
        else:
            current = ctx.bus.values.get(m.signal)
            timed = [] if current is None else [(ctx.now(), current)]
            how = f"value of {m.signal}"
        if not timed:
            raise StepFailed(Outcome.ERROR, f"no sample of {m.signal} to measure")
        samples = [v for _, v in timed]
        if m.stat == "max_moving_mean":
            assert m.over is not None
            raw = max_moving_mean(timed, m.over)
            how = how.replace(m.stat, f"highest {format_duration(m.over)} moving mean", 1)
        else:
            stats = {"value": samples[-1], "min": min(samples), "max": max(samples)}
            raw = stats[m.stat] if m.stat in stats else statistics.fmean(samples)
        value = m.unit.from_base(info.unit.to_base(raw))
    return record_measurement(ctx, step, m, value, how)


def record_measurement(ctx: RunContext, step: PlanStep[Any], m: MeasurePlan, value: float, how: str) -> str:
    """Judge ``value`` against the limits (with its uncertainty and the decision rule) and record it."""
    plan = ctx.plan
    spec = getattr(plan.sequence.steps[step.index], "measure", None) if step.phase == "steps" else None
    stated = None if spec is None or spec.uncertainty is None else str(spec.uncertainty)
    expanded, budget = runtime.measurement_uncertainty(plan, step, m, value, stated)
    ok, decision = runtime.judge(value, m.low, m.high, expanded, runtime.decision_rule(plan), m.unit.text)
    outcome = Outcome.PASS if ok else Outcome.FAIL
    meas = Measurement(
        name=m.name,
        step=step.name,
        value=rounded(value),
        unit=m.unit.text,
        low=m.low,
        high=m.high,
        outcome=outcome,
        t=rounded(ctx.rel(ctx.now())),
        how=how,
        uncertainty=expanded,
        uncertainty_budget=budget,
        decision=decision,
    )
    ctx.measurements.append(meas)
    ctx.event(EventKind.MEASUREMENT, **meas.model_dump(exclude={"t"}))
    shown_u = "" if expanded is None else f" ± {format_value(expanded, m.unit.text)}"
    text = f"{m.name} = {format_value(value, m.unit.text)}{shown_u} ({_limits(m)})"
    if outcome == Outcome.FAIL:
        inside = (m.low is None or value >= m.low) and (m.high is None or value <= m.high)
        raise StepFailed(Outcome.FAIL, f"{text}: {'not accepted: ' + decision if inside else 'outside the limit'}")
    return text


def _limits(m: MeasurePlan) -> str:
    lo = format_value(m.low, m.unit.text) if m.low is not None else None
    hi = format_value(m.high, m.unit.text) if m.high is not None else None
    if lo and hi:
        return f"limits {lo} .. {hi}"
    if hi:
        return f"limit <= {hi}"
    if lo:
        return f"limit >= {lo}"
    return "no limits"


# A failed measurement lets the steps go on, so that every measurement is taken.
KIND = StepKind(
    "measure", MeasureStep, compile_measure, describe, run_measure, default_name=default_name, goes_on_after_fail=True
)
