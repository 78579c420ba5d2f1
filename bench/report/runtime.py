"""What the engine asks of the register while a run goes on: identity, uncertainty, decisions.

Kept out of ``engine.py`` so that the engine only calls a few functions; everything here is
a pure function of the plan (station + sequence) and the values seen.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bench.errors import ExpressionError
from bench.report.equipment import (
    COVERAGE_K,
    DecisionRule,
    Instrument,
    Uncertainty,
    calibration_status,
    decide,
    diff_base,
    identity_mismatches,
    instant_uncertainty,
    signal_uncertainty,
)
from bench.units import format_value

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
    for c in calibration_status(plan.station.model.equipment, on):
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
    Expressions that combine signal values are not propagated (no sensitivity coefficients
    are known here): their U is reported as not evaluated.
    """
    unit = m.unit
    if stated is not None:
        try:
            return diff_base(stated) / unit.factor, [f"stated in the sequence: U = {stated}"]
        except ExpressionError:
            return None, []
    station = plan.station.model
    unc: Uncertainty | None = None
    if m.signal is not None:
        unc = signal_uncertainty(m.signal, unit.to_base(value), station.equipment, station.signal_sources)
    elif m.expr is not None and not m.expr.signals and m.expr.marks:
        parts: list[tuple[str, float]] = []
        for mark in sorted(m.expr.marks):
            src = next((s for s in plan.steps if s.mark == mark), None)
            if src is None or src.mark_condition is None:
                return None, []
            inst = instant_uncertainty(src.mark_condition.signals, station.signal_sources)
            if inst is None:
                return None, []
            parts.append((f"@{mark}: {inst[0]}", inst[1]))
        import math

        unc = Uncertainty(math.sqrt(sum(u * u for _, u in parts)), [f"{w}: u = {u:.4g} s" for w, u in parts])
    if unc is None:
        return None, []
    expanded = unc.expanded_base / unit.factor
    budget = [*unc.budget, f"u_c = {unc.u_base / unit.factor:.3g} {unit.text}, U = k·u_c, k = {COVERAGE_K:g}"]
    return _two_significant(expanded), budget


def _two_significant(x: float) -> float:
    # GUM practice: an uncertainty is stated to at most two significant digits, rounded up so
    # that the rounding never makes the claim tighter than the calculation.
    if x <= 0:
        return x
    import math

    exp = math.floor(math.log10(x)) - 1
    scale = 10.0**exp
    return float(f"{math.ceil(x / scale - 1e-9) * scale:.12g}")


def judge(
    value: float, low: float | None, high: float | None, expanded: float | None, rule: DecisionRule, unit: str
) -> tuple[bool, str]:
    ok, text = decide(value, low, high, expanded, rule)
    if expanded is not None:
        text += f"; U = {format_value(expanded, unit)} (k = 2)"
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
