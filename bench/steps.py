"""What each kind of step does: one executor per step kind, found in ``EXECUTORS`` by the kind.

An executor runs one step of its kind and returns the message of a passed step (or None). It
raises ``StepFailed`` for a step that failed (FAIL) or could not be done (ERROR); a device that
fails raises ``BenchError`` or ``OSError``. Where a step is recorded and what its outcome does
to the run is the sequencer's job (bench/sequencer.py), not the executor's.

Adding a step kind means one executor here, registered with ``@executor("kind")``, and its
paragraph in docs/lifecycle.md (stage 4); tests/test_step_registry.py checks that every step
kind of the sequence language has both.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from collections.abc import AsyncIterator, Awaitable, Callable

from bench.dtccodes import STORED_MASK, dtc_problems
from bench.dtcs import DTC_READ_TIMEOUT
from bench.errors import BenchError, ExpressionError
from bench.events import EventKind
from bench.plan import MeasurePlan, PlanStep, SetValue
from bench.prompts import NO, YES, Answers
from bench.report import runtime
from bench.result import Measurement, Outcome
from bench.runcontext import RunContext, rounded
from bench.stats import max_moving_mean
from bench.units import DIMENSIONLESS, Quantity, format_duration, format_value, parse_quantity


class StepFailed(Exception):
    def __init__(self, outcome: Outcome, message: str) -> None:
        self.outcome = outcome
        super().__init__(message)


Executor = Callable[[RunContext, PlanStep], Awaitable[str | None]]
EXECUTORS: dict[str, Executor] = {}


def executor(kind: str) -> Callable[[Executor], Executor]:
    """Register the executor of one step kind."""

    def register(fn: Executor) -> Executor:
        assert kind not in EXECUTORS, f"two executors for step kind {kind!r}"
        EXECUTORS[kind] = fn
        return fn

    return register


@executor("set")
async def run_set(ctx: RunContext, step: PlanStep) -> str:
    t = ctx.now()
    text = await ctx.apply(step.sets)
    if step.mark:
        # The instant the command went out: a fault injected here starts with the next frame.
        ctx.bus.marks[step.mark] = ctx.rel(t)
        text += f" (@{step.mark} = {format_value(ctx.rel(t), 's')})"
    return text


@executor("wait")
async def run_wait(ctx: RunContext, step: PlanStep) -> None:
    await asyncio.sleep(step.duration)


@executor("wait_until")
async def run_wait_until(ctx: RunContext, step: PlanStep) -> str:
    cond = step.cond
    assert cond is not None
    try:
        t = await ctx.wait_for(cond, step.timeout)
    except TimeoutError:
        values = ctx.values(cond.signals)
        msg = f"timed out after {format_duration(step.timeout)} waiting for {step.cond_text} ({ctx.shown(values)})"
        ctx.event(EventKind.WAIT_TIMEOUT, step=step.name, values=values)
        if step.on_timeout == "continue":
            return msg
        raise StepFailed(Outcome.FAIL, msg) from None
    return _condition_met(ctx, step, t)


@executor("ramp")
async def run_ramp(ctx: RunContext, step: PlanStep) -> str:
    r = step.ramp
    assert r is not None
    start = r.start if r.start is not None else ctx.bus.values.get(r.signals[0])
    if start is None:
        raise StepFailed(Outcome.ERROR, f"{r.signals[0]} has no value yet to ramp from")
    span = abs(r.end - start)
    direction = 1.0 if r.end >= start else -1.0
    duration = span / r.rate

    async def ramp() -> None:
        t0 = ctx.now()
        while True:
            done = min(span, r.rate * (ctx.now() - t0))
            value = start + direction * done
            await ctx.apply([SetValue(sig, value, format_value(value, r.unit)) for sig in r.signals])
            if done >= span:
                return
            await asyncio.sleep(r.interval)

    task = ctx.loop.create_task(ramp(), name=f"ramp {step.name}")
    last = f"{', '.join(r.signals)} = {format_value(r.end, r.unit)}"
    if step.cond is None:
        await task
        return f"reached {last}"
    # The condition is watched on its samples while the ramp runs; the end of the ramp plus
    # one interval bounds the wait so that a reply in flight still counts.
    waiter = ctx.loop.create_task(ctx.wait_for(step.cond, duration + r.interval), name=f"until {step.name}")
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task.done() and not task.cancelled() and (failed := task.exception()) is not None:
            raise failed  # a setpoint that could not be applied ends the step now, not at the timeout
        t = await waiter
    except TimeoutError:
        values = ctx.values(step.cond.signals)
        msg = f"ramp ended at {last} without {step.cond_text} ({ctx.shown(values)})"
        ctx.event(EventKind.WAIT_TIMEOUT, step=step.name, values=values)
        if step.on_timeout == "continue":
            return msg
        raise StepFailed(Outcome.FAIL, msg) from None
    finally:
        for pending in (task, waiter):
            pending.cancel()
            # Already raised above if it mattered; a late failure after the condition held does not.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pending
    return _condition_met(ctx, step, t)


def _condition_met(ctx: RunContext, step: PlanStep, t: float) -> str:
    """Record that the step's condition became true at ``t`` (a sample's time); its message."""
    assert step.cond is not None
    rel = ctx.rel(t)
    if step.mark:
        ctx.bus.marks[step.mark] = rel
    values = ctx.values(step.cond.signals)
    ctx.event(EventKind.CONDITION_MET, step=step.name, mark=step.mark, sample_t=rounded(rel), values=values)
    shown = ctx.shown(values)
    return f"true at {format_value(rel, 's')}" + (f" (@{step.mark})" if step.mark else "") + f": {shown}"


@executor("check")
async def run_check(ctx: RunContext, step: PlanStep) -> str:
    assert step.cond is not None
    ctx.bus.env.why_unknown = None
    result = step.cond.fn(ctx.bus.env)
    shown = ctx.shown(ctx.values(step.cond.signals))
    if result is None:
        why = ctx.bus.env.why_unknown or "no sample yet"
        raise StepFailed(Outcome.ERROR, f"cannot evaluate '{step.cond_text}': {why} ({shown})")
    if not result:
        text = step.message or f"check failed: {step.cond_text}"
        raise StepFailed(Outcome.FAIL, f"{text} ({shown})" if shown else text)
    return shown


@executor("clear_dtcs")
async def run_clear_dtcs(ctx: RunContext, step: PlanStep) -> str:
    for device in step.devices:
        async with _dtc_request(device):
            await ctx.plan.drivers[device].clear_dtcs()
    return f"DTC memory of {', '.join(step.devices)} cleared"


@executor("check_dtcs")
async def run_check_dtcs(ctx: RunContext, step: PlanStep) -> str:
    d = step.dtc_check
    assert d is not None
    driver = ctx.plan.drivers[d.device]
    deadline = ctx.now() + (d.within or 0.0)
    while True:
        # Every status bit: an expected DTC's missing bit is then named with the bits it has.
        async with _dtc_request(d.device):
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
async def _dtc_request(device: str) -> AsyncIterator[None]:
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


@executor("prompt")
async def run_prompt(ctx: RunContext, step: PlanStep) -> str:
    p = step.prompt
    assert p is not None
    if p.gate is not None:
        try:
            await ctx.wait_for(p.gate, p.timeout)
        except TimeoutError:
            shown = ctx.shown(ctx.values(p.gate.signals))
            raise StepFailed(
                Outcome.FAIL,
                f"'{p.gate_text}' did not hold within {format_duration(p.timeout)}; not asked ({shown})",
            ) from None
    answers = ctx.opt.answers or Answers()
    try:
        async with asyncio.timeout(p.timeout):
            answer, source = await answers.ask(step.name, p.text)
    except TimeoutError:
        raise StepFailed(Outcome.FAIL, f"no answer within {format_duration(p.timeout)}") from None
    except BenchError as exc:
        raise StepFailed(Outcome.ERROR, str(exc)) from None
    ctx.event(EventKind.PROMPT_ANSWERED, step=step.name, prompt=p.text, answer=answer, source=source)
    if not p.value:
        if answer.lower() in YES:
            return f"confirmed ({source})"
        if answer.lower() in NO:
            raise StepFailed(Outcome.FAIL, f"operator did not confirm: '{p.text}' ({source})")
        raise StepFailed(Outcome.ERROR, f"answer '{answer}' is neither yes nor no ({source})")
    try:
        q = parse_quantity(answer)
    except ExpressionError as exc:
        raise StepFailed(Outcome.ERROR, f"answer '{answer}': {exc} ({source})") from None
    if q.dim != p.unit.dim and q.dim == DIMENSIONLESS and q.unit.text == "":
        q = Quantity(p.unit.to_base(q.base), p.unit.dim, p.unit)  # a bare number is in the prompt's unit
    if q.dim != p.unit.dim:
        raise StepFailed(Outcome.ERROR, f"answer '{answer}' is not in {p.unit.text or 'plain numbers'} ({source})")
    m = MeasurePlan(
        step.name,
        None,
        None,
        f"answer of the operator ({source})",
        "value",
        None,
        None,
        p.low,
        p.high,
        p.unit,
        p.unit.factor,
    )
    return record_measurement(ctx, step, m, p.unit.from_base(q.base), f"entered by the operator ({source})")


@executor("measure")
async def run_measure(ctx: RunContext, step: PlanStep) -> str:
    m = step.measure
    assert m is not None
    value: float | None
    if m.expr is not None:
        ctx.bus.env.why_unknown = None
        base = m.expr.fn(ctx.bus.env)
        if base is None:
            missing = [f"@{k}" for k in m.expr.marks if k not in ctx.bus.marks]
            missing += [k for k in m.expr.signals if k not in ctx.bus.values]
            why = f"no value for {', '.join(missing)}" if missing else ctx.bus.env.why_unknown or "no value"
            raise StepFailed(Outcome.ERROR, f"cannot evaluate {m.expr_text}: {why}")
        value = m.unit.from_base(base)
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


def record_measurement(ctx: RunContext, step: PlanStep, m: MeasurePlan, value: float, how: str) -> str:
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
