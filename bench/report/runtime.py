"""What the engine asks of the register while a run goes on: identity, uncertainty, decisions.

Kept out of ``engine.py`` so that the engine only calls a few functions; everything here is
a pure function of the plan (station + sequence) and the values seen.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bench.errors import ExpressionError
from bench.report.equipment import (
    COVERAGE_K,
    DecisionRule,
    Instrument,
    Uncertainty,
    calibration_status,
    combine,
    decide,
    devices_used,
    diff_base,
    identity_mismatches,
    instant_uncertainty,
    register_ranges,
    signal_source,
    signal_uncertainty,
    used_instruments,
)
from bench.units import Unit, format_value

if TYPE_CHECKING:
    from bench.plan import Plan, PlanStep
    from bench.stepkinds.measure import MeasurePlan


def decision_rule(plan: Plan) -> DecisionRule:
    rule = plan.sequence.decision_rule or plan.station.model.decision_rule
    return "guard_band" if rule == "guard_band" else "simple"


def instrument_for(plan: Plan, device: str) -> Instrument | None:
    return next((i for i in plan.station.model.equipment if i.device == device), None)


def identity_problem(plan: Plan, device: str, identity: Mapping[str, str]) -> str | None:
    """Why the identity read at connect does not match the register (None: matches or not registered)."""
    ins = instrument_for(plan, device)
    lab = plan.station.model.laboratory
    extra = lab.item.identity if lab and lab.item and lab.item.device == device else {}
    if ins is None and not extra:
        return None
    bad = identity_mismatches(ins, identity, extra)
    if not bad:
        return None
    what = f"the equipment register ({ins.asset_id})" if ins else "the item identity in the station file"
    return f"device {device}: identity does not match {what}: " + "; ".join(bad)


def out_of_calibration(plan: Plan, on: dt.date) -> list[str]:
    return [
        f"{c.instrument.asset_id} ({c.instrument.maker} {c.instrument.model}, S/N {c.instrument.serial}): {c.text}"
        for c in calibration_status(plan.station.model.equipment, on)
        if not c.ok
    ]


def equipment_record(plan: Plan, on: dt.date) -> list[dict[str, Any]]:
    out = []
    for c in calibration_status(used_instruments(plan.station.model.equipment, devices_used(plan)), on):
        ins = c.instrument
        out.append(
            {
                "asset_id": ins.asset_id,
                "device": ins.device or "",
                "maker": ins.maker,
                "model": ins.model,
                "serial": ins.serial,
                "firmware": ins.firmware or "",
                "certificate": ins.calibration.certificate if ins.calibration else "",
                "calibrated": ins.calibration.date.isoformat() if ins.calibration else "",
                "due": ins.calibration.due.isoformat() if ins.calibration else "",
                "status": c.text,
                "in_calibration": c.ok,
                "accuracy": {s: [r.spec_text() for r in rs] for s, rs in ins.signals.items()},
                "external": ins.external or "",
            }
        )
    return out


def parameter_deviations(plan: Plan) -> list[str]:
    return [
        f"parameter {p.name} overridden: {p.value} instead of {p.default} (method default)"
        for p in plan.params.values()
        if p.overridden
    ]


def measurement_uncertainty(
    plan: Plan, step: PlanStep, m: MeasurePlan, value: float, stated: str | None
) -> tuple[float | None, list[str]]:
    """Expanded U (k = 2) in the unit of the result, and its budget; None when unknown.

    Precedence: a U stated in the sequence (``uncertainty:``), else from the register:
    a signal measurement from its instrument's spec or its signal source; an expression
    ``@a - @b`` from the update periods of the signals whose samples fixed the instants.
    Expressions that combine signal values (a value or a statistic) are not propagated (no
    sensitivity coefficients are known here). When U is unknown the budget is one line,
    ``not evaluated: <why>``, naming the signal or instant that lacks its register data.
    """
    unit = m.unit
    if stated is not None:
        try:
            return diff_base(stated) / unit.factor, [f"stated in the sequence: U = {stated}"]
        except ExpressionError as exc:
            return None, [f"{NOT_EVALUATED}: the stated uncertainty '{stated}' cannot be read ({exc})"]
    station = plan.station.model
    unc: Uncertainty | None = None
    if m.signal is not None:
        unc = signal_uncertainty(m.signal, unit.to_base(value), station.equipment, station.signal_sources, unit)
        why = [] if unc is not None else [missing_signal_data(plan, m.signal)]
    elif m.expr is None:
        why = ["a value entered by the operator has no uncertainty from the register"]
    elif not m.expr.signals and m.expr.marks:
        unc, why = _instants_uncertainty(plan, m.expr.marks)
    else:
        why = [missing_signal_data(plan, s) for s in sorted(m.expr.signals) if not _has_signal_data(plan, s)]
        if not m.expr.signals:
            why = ["the expression reads no signal and no instant"]
        elif not why:
            why = [
                "an expression that combines signal values is not propagated (no sensitivity coefficients); "
                "state its U with 'uncertainty:'"
            ]
    if unc is None:
        return None, [f"{NOT_EVALUATED}: " + "; ".join(why)]
    expanded, combined = _expanded(unc.u_base, unit)
    return expanded, [*unc.budget, combined]


def search_uncertainty(
    plan: Plan, stimulus: str, value: float, unit: Unit, interval: tuple[float, float]
) -> tuple[float, list[str]]:
    """Expanded U (k = 2) of the point a search found, in ``unit``, and its budget.

    The point lies somewhere in the last interval between a probe where the condition was false
    and one where it was true (``interval``, in ``unit``): rectangular over it, u = half-width/√3.
    The stimulus' own uncertainty at the point comes from the register, as a measured signal's
    does (its instrument's accuracy or its signal source); where the register has none, the
    budget says so and U is the search's alone.
    """
    lo, hi = sorted(interval)
    half = (hi - lo) / 2 * unit.factor  # a difference: the unit's offset does not apply
    span = f"{format_value(lo, unit.text)} .. {format_value(hi, unit.text)}"
    what = f"search interval {span}, half-width {format_value(half / unit.factor, unit.text)} (rectangular)"
    search = combine([(what, half / math.sqrt(3))], unit)
    station = plan.station.model
    own = signal_uncertainty(stimulus, unit.to_base(value), station.equipment, station.signal_sources, unit)
    if own is None:
        budget = [*search.budget, f"{stimulus} itself: not included ({missing_signal_data(plan, stimulus)})"]
        u_base = search.u_base
    else:
        budget = [*search.budget, *own.budget]
        u_base = math.hypot(search.u_base, own.u_base)
    expanded, combined = _expanded(u_base, unit)
    return expanded, [*budget, combined]


# The first words of the one budget line of a measurement whose U is unknown (the reason follows).
NOT_EVALUATED = "not evaluated"


def _instants_uncertainty(plan: Plan, marks: frozenset[str]) -> tuple[Uncertainty | None, list[str]]:
    """u of a time between instants, each from the update period of its condition's signals; or why not."""
    sources = plan.station.model.signal_sources
    parts: list[tuple[str, float]] = []
    why: list[str] = []
    for mark in sorted(marks):
        src = next((s for s in plan.steps if s.mark == mark), None)
        if src is None or src.mark_condition is None:
            where = f" by step '{src.name}'" if src is not None else ""
            why.append(f"@{mark} is the instant a command went out{where}, not a sample time; its u is not known")
            continue
        inst = instant_uncertainty(src.mark_condition.signals, sources)
        if inst is None:
            unknown = [s for s in sorted(src.mark_condition.signals) if _period(plan, s) is None]
            why += [f"@{mark}: {_missing_period(plan, s)}" for s in unknown] or [
                f"@{mark}: its condition reads no signal"
            ]
            continue
        parts.append((f"@{mark}: {inst[0]}", inst[1]))
    if why:
        return None, why
    return Uncertainty(math.sqrt(sum(u * u for _, u in parts)), [f"{w}: u = {u:.4g} s" for w, u in parts]), []


def _period(plan: Plan, signal: str) -> str | None:
    src = signal_source(signal, plan.station.model.signal_sources)
    return None if src is None else src.period


def _missing_period(plan: Plan, signal: str) -> str:
    if signal_source(signal, plan.station.model.signal_sources) is not None:
        return f"the update period of {signal} is unknown (its signal_sources entry has no 'period')"
    return f"the update period of {signal} is unknown (no signal_sources entry)"


def _has_signal_data(plan: Plan, signal: str) -> bool:
    station = plan.station.model
    return signal_uncertainty(signal, 0.0, station.equipment, station.signal_sources) is not None


def missing_signal_data(plan: Plan, signal: str) -> str:
    """Why the register gives no uncertainty of ``signal``: which entry is missing or incomplete."""
    station = plan.station.model
    device, _, short = signal.partition(".")
    instruments = [i for i in station.equipment if i.device == device]
    source = signal_source(signal, station.signal_sources)
    if any(register_ranges(i, short) is not None for i in instruments):
        return f"{signal}: the accuracy of its instrument in the equipment register cannot be read"
    if source is not None:
        if source.accuracy is None and source.resolution is None:
            return f"{signal}: its signal_sources entry states neither accuracy nor resolution"
        return f"{signal}: its signal_sources entry cannot be read"
    if not station.equipment:
        return f"{signal}: no register entry (the station has no equipment register, and no signal_sources entry)"
    if not instruments:
        return (
            f"{signal}: no register entry (device {device} is not in the equipment register, no signal_sources entry)"
        )
    assets = ", ".join(i.asset_id for i in instruments)
    return f"{signal}: no register entry ({assets} of device {device} states no accuracy of {short}, no signal_sources entry)"


@functools.lru_cache(maxsize=1024)  # a u that does not depend on the value (a signal source's) recurs every time
def _expanded(u_base: float, unit: Unit) -> tuple[float, str]:
    """U (k = 2) in ``unit``, stated to two significant digits, and the budget's line that combines the u."""
    combined = f"u_c = {u_base / unit.factor:.3g} {unit.text}, U = k·u_c, k = {COVERAGE_K:g}"
    return _two_significant(COVERAGE_K * u_base / unit.factor), combined


def _two_significant(x: float) -> float:
    # GUM practice: an uncertainty is stated to at most two significant digits, rounded up so
    # that the rounding never makes the claim tighter than the calculation.
    if x <= 0:
        return x
    exp = math.floor(math.log10(x)) - 1
    scale = 10.0**exp
    return float(f"{math.ceil(x / scale - 1e-9) * scale:.12g}")


def judge(
    value: float,
    low: float | None,
    high: float | None,
    expanded: float | None,
    rule: DecisionRule,
    unit: str,
    budget: list[str] | None = None,
) -> tuple[bool, str]:
    """(pass, decision statement); a guard band refused for want of U says why U is unknown (``budget``)."""
    ok, text = decide(value, low, high, expanded, rule)
    if expanded is not None:
        text += f"; U = {format_value(expanded, unit)} (k = 2)"
    elif rule == "guard_band" and (low is not None or high is not None) and budget:
        text += f"; U {budget[0]}"
    return ok, text


def environment(plan: Plan, bus: Any) -> dict[str, str]:
    """Ambient conditions for the report (7.8.3.1 a): from signals if the station names them, else stated values."""
    lab = plan.station.model.laboratory
    env = lab.environment if lab else None
    if env is None:
        return {}
    out: dict[str, str] = {}
    for key, fixed, signal in (
        ("temperature", env.temperature, env.temperature_signal),
        ("humidity", env.humidity, env.humidity_signal),
    ):
        if signal:
            sample = bus.sample(signal) if bus is not None else None
            info = plan.catalog.get(signal)
            if sample is not None and info is not None:
                out[key] = f"{format_value(sample.value, info.unit.text)} (signal {signal}, at the end of the run)"
                continue
        if fixed:
            out[key] = str(fixed)
    if env.source:
        out["source"] = env.source
    return out
