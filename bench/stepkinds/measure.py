"""``measure``: a value (of a signal, a statistic over a window, or an expression), judged against limits."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

from pydantic import ConfigDict, Field, field_validator, model_validator

from bench.compiler import Compiler, refuse_bare, refuse_mixing
from bench.errors import ExpressionError
from bench.events import EventKind
from bench.expr import NUM, Compiled, Env, compile_expr, constant, expect_dim
from bench.provenance import Origin, require_cited
from bench.report import runtime
from bench.result import Measurement, Outcome, rounded
from bench.schema import cited
from bench.stats import expression_samples, statistic
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
from bench.suggest import did_you_mean
from bench.units import TIME, Quantity, Unit, format_duration, format_value, mixing_error, parse_unit

if TYPE_CHECKING:
    from bench.runcontext import RunContext

# The fields of a value judged against limits, the same in every kind that judges one (measure, search).
LowLimit = Annotated[Scalar | None, Field(description="lower limit, in a unit of the measured quantity")]
HighLimit = Annotated[Scalar | None, Field(description="upper limit, in a unit of the measured quantity")]
ReportUnit = Annotated[str | None, Field(description="unit to report the value in")]
# The origin of a limit written here (a number or an expression); a limit that is one parameter
# has the parameter's origin (docs/sequences.md, "Origins of limits and deviations").
LimitsOrigin = Annotated[
    Origin | None, Field(description="who set the limits written here: regulation, item or lab [default: lab]")
]
LimitsSource = Annotated[str | None, Field(description="where those limits come from; for a regulation with its tag")]


class JudgedSpec(StrictModel):
    """The mapping of a kind that judges a value against limits: a regulation's limits need a tagged source."""

    @model_validator(mode="after")
    def _regulation_is_cited(self) -> Self:
        require_cited(getattr(self, "origin", None), getattr(self, "source", None))
        return self


class MeasureSpec(JudgedSpec):
    model_config = ConfigDict(
        json_schema_extra={
            **cited(),
            "examples": [
                {
                    "name": "pack_voltage_error",
                    "expr": "bms.pack_voltage - pa.voltage_1",
                    "stat": "mean",
                    "window": "10 s",
                    "min": "-0.5 V",
                    "max": "0.5 V",
                },
                {"name": "peak_cell_voltage", "signal": "bms.cell_v_max", "stat": "max", "since": "charging"},
            ],
        }
    )

    name: str = Field(description="name of the measurement in the result and the report")
    signal: str | None = Field(None, description="signal to measure (exactly one of 'signal' and 'expr')")
    expr: str | None = Field(
        None,
        description="or an expression to measure, e.g. '@t_open - @t_trip' or 'bms.pack_voltage - pa.voltage_1'",
    )
    stat: Literal["value", "min", "max", "mean", "max_moving_mean"] = Field(
        "value",
        description="'value': the latest value; min, max, mean or max_moving_mean of the samples of a "
        "'window' or 'since' (of an expression: its values at its signals' sample instants)",
    )
    over: str | None = Field(None, description="length of the moving window of 'max_moving_mean', e.g. '3 s'")
    window: str | None = Field(None, description="collect for this long from now, then apply stat")
    since: str | None = Field(
        None, description="apply stat over the samples from this instant (@mark or step name) to now"
    )
    min: LowLimit = None
    max: HighLimit = None
    unit: ReportUnit = None
    uncertainty: Scalar | None = Field(None, description="expanded uncertainty U (k = 2) if known; else computed")
    origin: LimitsOrigin = None
    source: LimitsSource = None

    _text = field_validator("window", "over", "min", "max", "uncertainty", mode="before")(as_text)


class MeasureStep(StepModel):
    measure: MeasureSpec = Field(
        description="take a value (of a signal, a statistic over a span, or an expression) and judge it against limits"
    )


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
        if (m.stat != "value" or m.window or m.since) and not compiled.signals:
            raise c.fail(
                [*loc, "stat"], "a statistic of an expression needs an expression that reads signals (no samples)"
            )
        if compiled.choices and m.stat != "value":
            raise c.fail([*loc, "stat"], f"{m.expr} is a state signal; only 'value' can be measured")
        dim = compiled.dim
        unit = compiled.display_unit or Unit("", dim, 1.0)
    if m.unit is not None:
        unit = report_unit(c, [*loc, "unit"], m.unit, unit)
    elif dim == TIME:
        unit = Unit("s", TIME, 1.0)
    window = c.duration(m.window, [*loc, "window"]) if m.window is not None else None
    if window is not None and window <= 0:
        raise c.fail([*loc, "window"], "the window must be longer than zero (it collects the samples)")
    over = c.duration(m.over, [*loc, "over"]) if m.over is not None else None
    if (m.stat == "max_moving_mean") != (over is not None):
        raise c.fail([*loc, "over" if over is not None else "stat"], "'max_moving_mean' and 'over' go together")
    if over is not None and over <= 0:
        raise c.fail([*loc, "over"], "the moving window must be longer than zero")
    if over is not None and window is not None and over > window:
        raise c.fail(
            [*loc, "over"],
            f"the moving window ({format_duration(over)}) is longer than the window it moves in "
            f"({format_duration(window)})",
        )
    if m.stat != "value" and window is None and m.since is None:
        raise c.fail([*loc, "stat"], f"stat '{m.stat}' needs a 'window' or 'since'")
    since = None
    if m.since is not None:
        s = m.since.strip()
        if s.startswith("@"):
            if s[1:] not in marks:
                raise c.fail(
                    [*loc, "since"],
                    f"unknown instant '{s}' (not recorded by an earlier step's 'as:')"
                    + did_you_mean(s[1:], marks, "@"),
                )
            since = s
        elif s in site.step_names:
            since = s
        else:
            raise c.fail([*loc, "since"], f"'{s}' is neither an @instant nor the name of an earlier step")
    if since is not None:
        # The run keeps the samples of what is measured since an earlier instant, to look back on them.
        site.history.update({m.signal} if m.signal is not None else set(compiled.signals if compiled else ()))
    low, high = compile_limits(c, loc, m.min, m.max, unit)
    if m.uncertainty is not None:
        u = compile_difference(c, [*loc, "uncertainty"], m.uncertainty, unit, "the uncertainty", m.name)
        # The run reads the stated U from the sequence: store it resolved, so that a parameter
        # (`uncertainty: $u_dmm`) counts like a number written there.
        m.uncertainty = str(u)
    if m.signal is not None:
        text = f"{m.stat} of {m.signal}"
    else:
        # A statistic is of the whole expression: the parentheses say so.
        text = f"{m.stat} of ({m.expr})" if window is not None or since is not None else str(m.expr)
    return MeasurePlan(
        m.name,
        m.signal,
        compiled,
        text,
        m.stat,
        window,
        since,
        low,
        high,
        unit,
        unit.factor,
        over,
    )


def report_unit(c: Compiler, loc: list[str | int], text: str, unit: Unit) -> Unit:
    """The unit ``text`` a value in ``unit`` is reported in (``unit:`` of a measure or a search)."""
    try:
        wanted = parse_unit(text, c.scope().opaque)
    except ExpressionError as exc:
        raise c.fail(loc, exc) from None
    if wanted.dim != unit.dim or mixing_error(wanted, unit) is not None:
        raise c.fail(loc, f"unit mismatch: '{text}' is not a unit of the measured quantity")
    return wanted


def compile_difference(c: Compiler, loc: list[str | int], text: Scalar, unit: Unit, what: str, of: str) -> Quantity:
    """``what`` (an uncertainty, a resolution) of ``of``, a value in ``unit``: a quantity of its dimension."""
    try:
        q = constant(str(text), c.scope())
        refuse_mixing(q.unit, unit, f"{what} is in {q.unit.text or 'no unit'}, {of} in {unit.text}")
        expect_dim(q, unit.dim, what)
        refuse_bare(q, unit, of, str(text))
    except ExpressionError as exc:
        raise c.fail(loc, exc) from None
    return q


def compile_limits(
    c: Compiler, loc: list[str | int], low: Scalar | None, high: Scalar | None, unit: Unit
) -> tuple[float | None, float | None]:
    """The ``min`` and ``max`` of a judged value, in ``unit`` (None where there is none)."""
    limits: list[float | None] = []
    for bound, text in (("min", low), ("max", high)):
        if text is None:
            limits.append(None)
            continue
        try:
            q = constant(str(text), c.scope())
            refuse_mixing(
                q.unit, unit, f"the '{bound}' limit is in {q.unit.text or 'no unit'}, the value in {unit.text}"
            )
            expect_dim(q, unit.dim, f"the '{bound}' limit")
        except ExpressionError as exc:
            raise c.fail([*loc, bound], exc) from None
        limits.append(unit.from_base(q.base))
    if limits[0] is not None and limits[1] is not None and limits[0] > limits[1]:
        raise c.fail([*loc, "min"], "min is above max")
    return limits[0], limits[1]


def default_name(step: MeasureStep, index: int) -> str:
    return f"measure {step.measure.name}"


def describe(ps: PlanStep[MeasurePlan]) -> str:
    m = ps.plan
    lo = "" if m.low is None else f"{format_value(m.low, m.unit.text)} <= "
    hi = "" if m.high is None else f" <= {format_value(m.high, m.unit.text)}"
    return f"measure {lo}{m.name}{hi} ({m.expr_text})"


async def run_measure(ctx: RunContext, step: PlanStep[MeasurePlan]) -> str:
    m = step.plan
    if m.expr is not None and m.window is None and m.since is None:
        value = m.unit.from_base(ctx.evaluate(m.expr, m.expr_text))
        return record_measurement(ctx, step, m, value, m.expr_text)
    names = sorted(m.expr.signals) if m.expr is not None else [str(m.signal)]
    if m.window is not None:
        held, samples = await _collect(ctx, names, m.window)
        span = f"over {format_duration(m.window)}"
    elif m.since is not None:
        kept = [(t, n, v) for n in names for t, v in ctx.bus.history(n, float("-inf"))]
        held, samples = _span(kept, _since(ctx, m.since), ctx.now())
        span = f"since {m.since}"
    else:
        assert m.signal is not None
        current = ctx.bus.values.get(m.signal)
        held, samples = {}, [] if current is None else [(ctx.now(), m.signal, current)]
        span = ""
    how = f"{m.expr_text} {span}".strip()
    if m.expr is not None:
        timed, unknown, why = _expression_values(ctx, m.expr, held, samples)
        if not timed:
            raise StepFailed(
                Outcome.ERROR, f"cannot measure {how}: {_why_no_value(names, held, samples, unknown, why)}"
            )
        without = f", {unknown} without a value{why}" if unknown else ""
        how += f" ({len(timed)} sample instants{without})"
        raw_unit = Unit("", m.unit.dim, 1.0)  # the expression's values are in base units already
    else:
        timed = [(t, v) for t, _, v in sorted(samples, key=lambda s: s[0])]  # stable: arrival order within an instant
        if not timed:
            raise StepFailed(Outcome.ERROR, f"no sample of {m.signal} to measure")
        raw_unit = ctx.plan.catalog[names[0]].unit
    if m.stat == "max_moving_mean":
        assert m.over is not None
        how = how.replace(m.stat, f"highest {format_duration(m.over)} moving mean", 1)
    raw = statistic(m.stat, timed, m.over)
    value = m.unit.from_base(raw_unit.to_base(raw))
    return record_measurement(ctx, step, m, value, how)


def _since(ctx: RunContext, since: str) -> float:
    """The loop time of ``since``: an @instant, or the start of a named step."""
    rel = ctx.bus.marks.get(since[1:]) if since.startswith("@") else ctx.rel(ctx.step_starts.get(since, ctx.state.t0))
    if rel is None:
        raise StepFailed(Outcome.ERROR, f"instant {since} was never recorded")
    return ctx.state.t0 + rel


async def _collect(
    ctx: RunContext, names: list[str], seconds: float
) -> tuple[dict[str, float], list[tuple[float, str, float]]]:
    """The samples of ``names`` in the next ``seconds``, and the value each held before (see ``_span``).

    The latest sample of each signal counts too: stamped at the first instant but delivered
    just before the step began, it is in the window.
    """
    start = ctx.now()
    heard = [(ctx.bus.times[n], n, ctx.bus.values[n]) for n in names if n in ctx.bus.values]
    sub = ctx.bus.subscribe(names, lambda n, v, t: heard.append((t, n, v)))
    try:
        await asyncio.sleep(seconds)
    finally:
        sub.cancel()
    return _span(heard, start, ctx.now())


def _span(
    stamped: list[tuple[float, str, float]], start: float, end: float
) -> tuple[dict[str, float], list[tuple[float, str, float]]]:
    """The samples stamped from ``start`` to ``end`` (both included), and each signal's last value before.

    By source timestamp, not by arrival, so the edges do not depend on the order in which the
    loop delivered samples of one instant.
    """
    held: dict[str, tuple[float, float]] = {}
    samples: list[tuple[float, str, float]] = []
    for t, n, v in stamped:
        if t < start:
            if n not in held or t >= held[n][0]:
                held[n] = (t, v)
        elif t <= end:
            samples.append((t, n, v))
    return {n: v for n, (_, v) in held.items()}, samples


def _expression_values(
    ctx: RunContext, expr: Compiled, held: dict[str, float], samples: list[tuple[float, str, float]]
) -> tuple[list[tuple[float, float]], int, str]:
    """The expression's values at its sample instants, how many instants had none, and why (' (...)' or '')."""
    env = Env({}, ctx.bus.marks)
    reasons: set[str] = set()

    def evaluate(values: dict[str, float]) -> float | None:
        env.values, env.why_unknown = values, None
        v = expr.fn(env)
        if v is None and env.why_unknown:
            reasons.add(env.why_unknown)
        return None if v is None else float(v)

    timed, unknown = expression_samples(evaluate, held, samples)
    return timed, unknown, f" ({', '.join(sorted(reasons))})" if reasons else ""


def _why_no_value(
    names: list[str], held: dict[str, float], samples: list[tuple[float, str, float]], unknown: int, why: str
) -> str:
    never = [n for n in names if n not in held and all(s[1] != n for s in samples)]
    if never:
        return f"no sample of {', '.join(never)}"
    if not samples:
        return f"no sample of {', '.join(names)} in the span"
    return f"no value at any of its {unknown} sample instants{why}"


def record_measurement(
    ctx: RunContext,
    step: PlanStep[Any],
    m: MeasurePlan,
    value: float,
    how: str,
    uncertainty: tuple[float | None, list[str]] | None = None,
) -> str:
    """Judge ``value`` against the limits (with its uncertainty and the decision rule) and record it.

    ``uncertainty``: U and its budget where the step computed them (a search); else from the register.
    """
    plan = ctx.plan
    if uncertainty is None:
        spec = getattr(plan.sequence.steps[step.index], "measure", None) if step.phase == "steps" else None
        stated = None if spec is None or spec.uncertainty is None else str(spec.uncertainty)
        uncertainty = runtime.measurement_uncertainty(plan, step, m, value, stated)
    expanded, budget = uncertainty
    ok, decision = runtime.judge(value, m.low, m.high, expanded, runtime.decision_rule(plan), m.unit.text, budget)
    outcome = Outcome.PASS if ok else Outcome.FAIL
    # The event holds the fields of the Measurement but its time (the event's own), in the model's
    # order: built here once rather than dumped back out of the model (which cost as much as the
    # rest of the step). tests/test_engine_step_cost.py holds the event to the model's dump.
    fields: dict[str, Any] = {
        "name": m.name,
        "step": step.name,
        "value": rounded(value),
        "unit": m.unit.text,
        "low": m.low,
        "high": m.high,
        "outcome": outcome,
        "how": how,
        "uncertainty": expanded,
        "uncertainty_budget": budget,
        "decision": decision,
    }
    ctx.measurements.append(Measurement(**fields, t=rounded(ctx.rel(ctx.now()))))
    ctx.event(EventKind.MEASUREMENT, **fields)
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
    "measure",
    MeasureStep,
    compile_measure,
    describe,
    run_measure,
    default_name=default_name,
    goes_on_after_fail=True,
    judged="measure",
)
