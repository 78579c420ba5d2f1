"""Turn a sequence and a station into a checked, compiled plan, before anything moves.

Everything a user can get wrong in a file is found here and reported as one line with the
file, the line and the field: unknown devices, signals, parameters and states, unit
mismatches, values out of range, duplicate step names, marks used before they are recorded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from bench.device import ConfigError, Driver, fault_catalogue, load_driver, load_plant_builder
from bench.dtccodes import DTC_STATUS_BITS, format_dtc, parse_dtc
from bench.errors import ExpressionError, LoadError
from bench.expr import (
    BOOL,
    NUM,
    Compiled,
    Scope,
    SignalInfo,
    compile_condition,
    compile_expr,
    constant,
    expect_dim,
    opaque_units,
    resolve_signal,
    state_list,
    state_value,
)
from bench.sequence import (
    CheckDtcsStep,
    CheckStep,
    ClearDtcsStep,
    MeasureStep,
    PromptStep,
    RampStep,
    SetStep,
    WaitStep,
    WaitUntilStep,
    step_kind,
)
from bench.sequence import Sequence as SequenceModel
from bench.station import LoadedStation, load_station
from bench.units import (
    DIMENSIONLESS,
    TIME,
    Quantity,
    Unit,
    format_duration,
    format_value,
    has_unit,
    mixing_error,
    parse_quantity,
    parse_unit,
)
from bench.yamlsource import Loc, YamlSource, load_yaml, plain


@dataclass
class SetValue:
    signal: str
    value: float
    text: str


@dataclass
class MeasurePlan:
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


@dataclass
class RampPlan:
    signals: list[str]
    start: float | None  # in the signals' own unit; None: from the present value
    end: float
    rate: float  # signal unit per second, > 0
    interval: float
    unit: str


@dataclass
class PromptPlan:
    text: str
    gate: Compiled | None
    gate_text: str
    value: bool
    unit: Unit
    low: float | None
    high: float | None
    timeout: float


@dataclass
class DtcCheckPlan:
    device: str
    stored: list[int]  # DTC numbers that must be stored with every bit of required_bits
    required_bits: int
    allowed: list[int]
    within: float | None  # re-read until it holds, at most this long; None: read once
    status_text: str


@dataclass
class PlanStep:
    index: int
    name: str
    kind: str
    phase: str
    line: int
    text: str
    sets: list[SetValue] = field(default_factory=list)
    duration: float = 0.0
    cond: Compiled | None = None
    timeout: float = 0.0
    mark: str | None = None
    on_timeout: str = "fail"
    measure: MeasurePlan | None = None
    message: str | None = None
    cond_text: str = ""
    prompt: PromptPlan | None = None
    ramp: RampPlan | None = None
    dtc_check: DtcCheckPlan | None = None
    devices: list[str] = field(default_factory=list)  # clear_dtcs: whose DTC memory


@dataclass
class PlanMonitor:
    name: str
    cond: Compiled
    text: str
    then: str
    message: str
    line: int


@dataclass
class ParamValue:
    name: str
    value: Quantity
    default: Quantity
    overridden: bool
    doc: str
    source: str | None
    origin: str | None = None  # regulation, item or lab (bench/origins.py)


@dataclass
class SafeStatePlan:
    device: str
    sets: list[SetValue]
    verify: Compiled
    verify_text: str
    within: float


@dataclass
class Plan:
    sequence: SequenceModel
    sequence_source: YamlSource
    station: LoadedStation
    drivers: dict[str, Driver]
    catalog: dict[str, SignalInfo]
    params: dict[str, ParamValue]
    steps: list[PlanStep]
    cleanup: list[PlanStep]
    monitors: list[PlanMonitor]
    display: list[str]
    history: set[str]
    record_interval: float
    faults: list[str]
    safe_states: dict[str, SafeStatePlan]
    limits: list[PlanMonitor] = field(default_factory=list)
    estop: Compiled | None = None
    estop_text: str = ""
    wanted: frozenset[str] | None = None  # every signal the run refers to; None: all
    notes: list[str] = field(default_factory=list)  # worth knowing, not wrong (opaque units)

    def referenced_signals(self) -> frozenset[str]:
        """Signals any step, monitor, limit, display or safe state of this run refers to."""
        names: set[str] = set(self.display) | set(self.history)
        for st in (*self.steps, *self.cleanup):
            names.update(sv.signal for sv in st.sets)
            for c in (st.cond, st.measure.expr if st.measure else None, st.prompt.gate if st.prompt else None):
                if c is not None:
                    names.update(c.signals)
            if st.measure is not None and st.measure.signal:
                names.add(st.measure.signal)
            if st.ramp is not None:
                names.update(st.ramp.signals)
        for mon in (*self.monitors, *self.limits):
            names.update(mon.cond.signals)
        if self.estop is not None:
            names.update(self.estop.signals)
        for ss in self.safe_states.values():
            names.update(sv.signal for sv in ss.sets)
            names.update(ss.verify.signals)
        return frozenset(names)

    @property
    def sequence_sha256(self) -> str:
        return self.sequence_source.sha256

    def files(self) -> list[Path]:
        out: list[Path] = []
        for d in self.drivers.values():
            out.extend(p for p in d.files() if p not in out)
        return out


def load_sequence(path: Path) -> tuple[YamlSource, SequenceModel]:
    src = load_yaml(path, "sequence")
    try:
        model = SequenceModel.model_validate(plain(src.root))
    except ValidationError as exc:
        raise src.validation_error(exc) from None
    return src, model


def build_drivers(station: LoadedStation, names: Sequence[str] | None = None) -> dict[str, Driver]:
    drivers: dict[str, Driver] = {}
    src = station.source
    for name, entry in station.model.devices.items():
        if names is not None and name not in names:
            continue
        try:
            cls = load_driver(entry.driver)
        except LoadError as exc:
            raise src.error(["devices", name, "driver"], exc.message) from None
        try:
            drivers[name] = cls(name, entry.config, station.base_dir)
        except ConfigError as exc:
            loc: list[str | int] = ["devices", name, "config"]
            if exc.key:
                loc.append(exc.key)
            raise src.error(loc, str(exc)) from None
    return drivers


def build_catalog(drivers: Mapping[str, Driver]) -> dict[str, SignalInfo]:
    """Every signal by its name, and by each of its aliases (``dev.Message.signal``) too."""
    catalog: dict[str, SignalInfo] = {}
    for d in drivers.values():
        for s in d.signals():
            catalog[s.name] = s
            for alias in s.aliases:
                catalog[alias] = s
    return catalog


def unit_notes(catalog: Mapping[str, SignalInfo]) -> list[str]:
    """One note per device and opaque unit: the bench compares such values only with plain numbers."""
    found: dict[tuple[str, str], list[str]] = {}
    for name, info in catalog.items():
        if name == info.name and info.unit.opaque:
            found.setdefault((name.split(".", 1)[0], info.unit.text), []).append(name)
    notes = []
    for (device, unit), names in sorted(found.items()):
        example = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
        notes.append(
            f"{device}: unit '{unit}' is not in the unit table ({example}); it compares only with plain numbers"
            f" and with '{unit}' (map it in the device's config: units: {{\"{unit}\": ...}})"
        )
    return notes


def station_faults(station: LoadedStation, requested: Sequence[str]) -> list[str]:
    model = station.model
    faults = list(dict.fromkeys([*model.faults, *requested]))
    if not faults:
        return []
    if not model.simulators:
        if model.serve is not None:
            raise LoadError(
                f"fault '{faults[0]}': station '{model.id}' reaches a served plant; inject it where the plant"
                f" runs: bench sim serve --station <this file> --fault {faults[0]}"
            )
        raise LoadError(f"fault '{faults[0]}' needs a simulated station; '{model.id}' has no simulators")
    known: dict[str, str] = {}
    for sim in model.simulators:
        try:
            known.update(fault_catalogue(sim.kind))
        except LoadError as exc:
            raise station.source.error(["simulators"], exc.message) from None
    for f in faults:
        if f not in known:
            raise LoadError(f"unknown fault '{f}' (faults of this station: {', '.join(sorted(known))})")
    return faults


class _Compiler:
    def __init__(self, src: YamlSource, catalog: Mapping[str, SignalInfo], params: Mapping[str, Quantity]) -> None:
        self.src = src
        self.catalog = catalog
        self.params = params
        self.opaque = opaque_units(catalog)
        # Set by build_plan: the sequence's devices, and those whose DTCs can be read (``uds:``).
        self.requires: list[str] = []
        self.dtc_devices: frozenset[str] = frozenset()

    def scope(self, marks: frozenset[str] = frozenset()) -> Scope:
        return Scope(self.catalog, self.params, marks, self.opaque)

    def fail(self, loc: Loc, exc: Exception | str) -> LoadError:
        return self.src.error(loc, str(exc))

    def condition(self, text: str, loc: Loc, marks: frozenset[str] = frozenset()) -> Compiled:
        try:
            return compile_condition(text, self.scope(marks))
        except ExpressionError as exc:
            raise self.fail(loc, exc) from None

    def duration(self, text: str, loc: Loc, minimum: float = 0.0, what: str = "a duration") -> float:
        try:
            q = constant(text, self.scope())
            expect_dim(q, TIME, "a duration")
        except ExpressionError as exc:
            raise self.fail(loc, exc) from None
        if q.base < 0:
            raise self.fail(loc, "a duration cannot be negative")
        if q.base > MAX_DURATION_S:
            raise self.fail(loc, f"a duration must be at most 30 days (got {format_duration(q.base)})")
        if q.base < minimum:
            raise self.fail(loc, f"{what} must be at least {format_duration(minimum)} (got {q})")
        return q.base

    def resolve(self, signal: str, loc: Loc) -> SignalInfo:
        """The signal a short or qualified name refers to; the error names the candidates of an ambiguous one."""
        try:
            return resolve_signal(str(signal), self.catalog)
        except ExpressionError as exc:
            raise self.fail(loc, exc) from None

    def set_value(self, signal: str, text: str, loc: Loc) -> SetValue:
        info = self.resolve(signal, loc)
        signal = info.name
        if not info.writable:
            raise self.fail(loc, f"signal '{signal}' cannot be set (it is measured, not commanded)")
        text = str(text)
        if info.choices:
            code = state_value(info, text)
            if code is None:
                raise self.fail(loc, f"{signal} has no state '{text}' (states: {state_list(info.choices)})")
            return SetValue(signal, float(code), text.upper())
        try:
            q = constant(text, self.scope())
            refuse_mixing(q.unit, info.unit, f"{signal} is in {info.unit.text}; got {text}")
            expect_dim(q, info.unit.dim, f"the value of {signal} ({info.unit.text or 'no unit'})")
            refuse_bare(q, info.unit, signal, text)
        except ExpressionError as exc:
            raise self.fail(loc, exc) from None
        value = info.unit.from_base(q.base)
        if (info.minimum is not None and value < info.minimum - 1e-9) or (
            info.maximum is not None and value > info.maximum + 1e-9
        ):
            raise self.fail(
                loc, f"{q} is out of range for {signal} ({info.minimum} .. {info.maximum} {info.unit.text})"
            )
        return SetValue(signal, value, str(q))


# Bounds of time in a sequence (docs/sequences.md, "Limits"): no step waits longer than a month,
# and nothing is sampled so often that the record, rather than the test, fills the bench's disk.
MAX_DURATION_S = 30 * 86400.0
MIN_RECORD_INTERVAL_S = 0.1
MIN_RAMP_INTERVAL_S = 0.01


def refuse_mixing(a: Unit, b: Unit, context: str) -> None:
    """A value in a DBC's own (opaque) unit meets only a plain number or the same unit."""
    if mixing_error(a, b) is not None:
        raise ExpressionError(f"unit mismatch: {context}")


def refuse_bare(q: Quantity, unit: Unit, name: str, text: str) -> None:
    """A bare number for a value in % (or ppm, %vol) would be read as a fraction: ``65`` is 6500 %."""
    if q.dim == DIMENSIONLESS and not q.unit.text and has_unit(unit):
        raise ExpressionError(
            f"'{text.strip()}' has no unit, but {name} is in {unit.text}: write '{text.strip()} {unit.text}'"
        )


def _param_values(
    src: YamlSource, model: SequenceModel, overrides: Mapping[str, str], opaque: frozenset[str] = frozenset()
) -> dict[str, ParamValue]:
    out: dict[str, ParamValue] = {}
    defaults: dict[str, Quantity] = {}
    for name, p in model.parameters.items():
        try:
            defaults[name] = constant(p.default, Scope({}, defaults, opaque=opaque))
        except ExpressionError as exc:
            raise src.error(["parameters", name, "default"], str(exc)) from None
    for name in overrides:
        if name not in model.parameters:
            known = ", ".join(model.parameters) or "none"
            raise LoadError(f"-p {name}: unknown parameter of {model.id} (parameters: {known})")
    for name, p in model.parameters.items():
        default = defaults[name]
        value = default
        if name in overrides:
            try:
                value = parse_quantity(overrides[name], opaque) if overrides[name].strip() else default
            except ExpressionError as exc:
                raise LoadError(f"-p {name}={overrides[name]}: {exc}") from None
            if (
                value.dim != default.dim
                or (has_unit(default.unit) and not value.unit.text)
                or mixing_error(value.unit, default.unit) is not None
            ):
                expected = default.unit.text or "a plain number"
                raise LoadError(
                    f"-p {name}={overrides[name]}: wrong unit, expected {expected} like the default {default}"
                )
        for bound in ("min", "max"):
            text = getattr(p, bound)
            if text is None:
                continue
            try:
                b = constant(text, Scope({}, defaults, opaque=opaque))
                expect_dim(b, default.dim, f"{bound} of {name}")
                refuse_bare(b, default.unit, f"the default {default}", text)
            except ExpressionError as exc:
                raise src.error(["parameters", name, bound], str(exc)) from None
            if (bound == "min" and value.base < b.base) or (bound == "max" and value.base > b.base):
                where = f"-p {name}={overrides[name]}: " if name in overrides else ""
                msg = f"{where}{value} is {'below the minimum' if bound == 'min' else 'above the maximum'} {b}"
                if name in overrides:
                    raise LoadError(msg)
                raise src.error(["parameters", name, "default"], msg)
        out[name] = ParamValue(name, value, default, name in overrides and value != default, p.doc, p.source, p.origin)
    return out


def _compile_steps(
    c: _Compiler, model: SequenceModel, phase: str, marks: set[str], step_names: set[str], history: set[str]
) -> list[PlanStep]:
    steps = model.steps if phase == "steps" else model.cleanup
    out: list[PlanStep] = []
    for i, step in enumerate(steps):
        loc: list[str | int] = [phase, i]
        kind = step_kind(step)
        default = f"measure {step.measure.name}" if isinstance(step, MeasureStep) else f"{i + 1:02d} {kind}"
        name = step.name or default
        if name in step_names:
            raise c.fail([*loc, "name"], f"duplicate step name '{name}'")
        step_names.add(name)
        ps = PlanStep(i, name, kind, phase, c.src.line(loc), "")
        frozen = frozenset(marks)
        if isinstance(step, SetStep):
            for sig, text in step.set.items():
                ps.sets.append(c.set_value(sig, str(text), [*loc, "set", sig]))
            ps.mark = _mark(c, step.as_, loc, marks)
        elif isinstance(step, RampStep):
            ps.ramp = _ramp(c, step, [*loc, "ramp"])
            if step.until is not None:
                ps.cond = c.condition(step.until, [*loc, "until"], frozen)
                ps.cond_text = step.until
            elif step.as_:
                raise c.fail([*loc, "as"], "'as' records when 'until' became true; this ramp has no 'until'")
            ps.mark = _mark(c, step.as_, loc, marks)
            ps.on_timeout = step.on_end
        elif isinstance(step, WaitStep):
            ps.duration = c.duration(step.wait, [*loc, "wait"])
        elif isinstance(step, WaitUntilStep):
            ps.cond = c.condition(step.wait_until, [*loc, "wait_until"], frozen)
            ps.cond_text = step.wait_until
            ps.timeout = c.duration(step.timeout, [*loc, "timeout"])
            ps.on_timeout = step.on_timeout
            ps.mark = _mark(c, step.as_, loc, marks)
        elif isinstance(step, CheckStep):
            ps.cond = c.condition(step.check, [*loc, "check"], frozen)
            ps.cond_text = step.check
            ps.message = step.message
        elif isinstance(step, MeasureStep):
            ps.measure = _measure(c, step, [*loc, "measure"], frozen, step_names, history)
        elif isinstance(step, PromptStep):
            ps.prompt = _prompt(c, step, [*loc, "prompt"], frozen)
        elif isinstance(step, CheckDtcsStep):
            ps.dtc_check = _check_dtcs(c, step, [*loc, "check_dtcs"])
        elif isinstance(step, ClearDtcsStep):
            names = [step.clear_dtcs] if isinstance(step.clear_dtcs, str) else step.clear_dtcs
            where = [*loc, "clear_dtcs"]
            ps.devices = [
                _dtc_device(c, d, where if isinstance(step.clear_dtcs, str) else [*where, j])
                for j, d in enumerate(names)
            ]
            if not ps.devices:
                raise c.fail(where, "name at least one device whose DTCs are cleared")
        if ps.mark:
            marks.add(ps.mark)
        ps.text = _describe(ps)
        out.append(ps)
    return out


def _mark(c: _Compiler, name: str | None, loc: list[str | int], marks: set[str]) -> str | None:
    if not name:
        return None
    if not name.isidentifier():
        raise c.fail([*loc, "as"], f"'{name}' is not a valid name")
    if name in marks:
        raise c.fail([*loc, "as"], f"instant '@{name}' is already recorded by an earlier step")
    return name


def _dtc_device(c: _Compiler, name: str, loc: list[str | int]) -> str:
    """A device of the sequence whose DTC memory the bench can reach."""
    if name not in c.requires:
        raise c.fail(loc, f"device '{name}' is not in 'requires' ({', '.join(c.requires) or 'none'})")
    if name not in c.dtc_devices:
        raise c.fail(loc, f"device '{name}' has no DTC memory the bench can reach (its station entry has no 'uds:')")
    return name


def _dtc_numbers(c: _Compiler, codes: Sequence[object], loc: list[str | int]) -> list[int]:
    numbers = []
    for i, code in enumerate(codes):
        # YAML reads 0x0AA100 as a number: it is the DTC number written in hexadecimal.
        text = f"0x{code:X}" if isinstance(code, int) else str(code)
        try:
            numbers.append(parse_dtc(text))
        except ValueError as exc:
            raise c.fail([*loc, i], exc) from None
    return numbers


def _check_dtcs(c: _Compiler, step: CheckDtcsStep, loc: list[str | int]) -> DtcCheckPlan:
    d = step.check_dtcs
    device = _dtc_device(c, d.device, [*loc, "device"])
    bits = 0
    for i, name in enumerate(d.status):
        if name not in DTC_STATUS_BITS:
            raise c.fail([*loc, "status", i], f"unknown DTC status bit '{name}' (bits: {', '.join(DTC_STATUS_BITS)})")
        bits |= 1 << DTC_STATUS_BITS.index(name)
    stored = _dtc_numbers(c, d.stored, [*loc, "stored"])
    allowed = _dtc_numbers(c, d.allow, [*loc, "allow"])
    within = c.duration(d.within, [*loc, "within"]) if d.within is not None else None
    return DtcCheckPlan(device, stored, bits, allowed, within, ", ".join(d.status))


def _ramp(c: _Compiler, step: RampStep, loc: list[str | int]) -> RampPlan:
    r = step.ramp
    infos = []
    for i, sig in enumerate(r.signals):
        info = c.resolve(sig, [*loc, "signals", i])
        if not info.writable or info.choices:
            raise c.fail([*loc, "signals", i], f"'{sig}' cannot be ramped (not a commanded quantity)")
        infos.append(info)
    r.signals = [info.name for info in infos]
    unit = infos[0].unit
    for i, info in enumerate(infos[1:], 1):
        if info.unit.dim != unit.dim or info.unit.factor != unit.factor:
            raise c.fail([*loc, "signals", i], f"'{r.signals[i]}' is not in the unit of '{r.signals[0]}' ({unit.text})")
    values: list[float | None] = []
    for key in ("from", "to"):
        text = r.from_ if key == "from" else r.to
        if text is None:
            values.append(None)
            continue
        sv = c.set_value(r.signals[0], str(text), [*loc, key])
        for sig in r.signals[1:]:
            c.set_value(sig, sv.text, [*loc, key])
        values.append(sv.value)
    assert values[1] is not None
    rate_dim = tuple(a - b for a, b in zip(unit.dim, TIME, strict=True))
    try:
        q = constant(str(r.rate), c.scope())
        expect_dim(q, rate_dim, f"the rate of {r.signals[0]} ({unit.text or 'no unit'} per unit of time)")  # type: ignore[arg-type]
    except ExpressionError as exc:
        raise c.fail([*loc, "rate"], exc) from None
    rate = q.base / unit.factor
    if rate <= 0:
        raise c.fail([*loc, "rate"], "the rate must be above zero (the direction comes from 'from' and 'to')")
    interval = c.duration(str(r.interval), [*loc, "interval"], MIN_RAMP_INTERVAL_S, "the interval")
    return RampPlan(list(r.signals), values[0], values[1], rate, interval, unit.text)


def _prompt(c: _Compiler, step: PromptStep, loc: list[str | int], marks: frozenset[str]) -> PromptPlan:
    p = step.prompt
    gate = c.condition(p.when, [*loc, "when"], marks) if p.when else None
    unit = Unit("", DIMENSIONLESS, 1.0)
    if p.unit is not None:
        try:
            unit = parse_unit(p.unit)
        except ExpressionError as exc:
            raise c.fail([*loc, "unit"], exc) from None
    if not p.value and (p.unit or p.min is not None or p.max is not None):
        raise c.fail([*loc, "unit"], "unit, min and max need 'value: true'")
    limits: list[float | None] = []
    for bound in ("min", "max"):
        text = getattr(p, bound)
        if text is None:
            limits.append(None)
            continue
        try:
            q = constant(str(text), c.scope())
            expect_dim(q, unit.dim, f"the '{bound}' of the answer")
        except ExpressionError as exc:
            raise c.fail([*loc, bound], exc) from None
        limits.append(unit.from_base(q.base))
    timeout = c.duration(p.timeout, [*loc, "timeout"])
    return PromptPlan(p.text, gate, p.when or "", p.value, unit, limits[0], limits[1], timeout)


def _measure(
    c: _Compiler,
    step: MeasureStep,
    loc: list[str | int],
    marks: frozenset[str],
    step_names: set[str],
    history: set[str],
) -> MeasurePlan:
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
        elif s in step_names:
            since = s
        else:
            raise c.fail([*loc, "since"], f"'{s}' is neither an @instant nor the name of an earlier step")
        assert m.signal is not None
        history.add(m.signal)
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


def _describe(ps: PlanStep) -> str:
    """One line for people, with parameters already resolved."""
    if ps.kind == "set":
        return "set " + ", ".join(f"{sv.signal} = {sv.text}" for sv in ps.sets) + (f" (@{ps.mark})" if ps.mark else "")
    if ps.kind == "wait":
        return f"wait {format_duration(ps.duration)}"
    if ps.kind == "wait_until":
        return f"wait until {ps.cond_text} (timeout {format_duration(ps.timeout)})"
    if ps.kind == "check":
        return f"check {ps.cond_text}"
    if ps.kind == "ramp":
        assert ps.ramp is not None
        r = ps.ramp
        until = f" until {ps.cond_text}" if ps.cond is not None else ""
        start = "its present value" if r.start is None else format_value(r.start, r.unit)
        return (
            f"ramp {', '.join(r.signals)} from {start} to {format_value(r.end, r.unit)}"
            f" at {format_value(r.rate, r.unit)}/s{until}"
        )
    if ps.kind == "clear_dtcs":
        return f"clear the DTCs of {', '.join(ps.devices)}"
    if ps.kind == "check_dtcs":
        assert ps.dtc_check is not None
        d = ps.dtc_check
        codes = ", ".join(format_dtc(n) for n in d.stored)
        what = f"{codes} stored ({d.status_text})" if codes else "no DTC stored"
        allowed = f", tolerating {', '.join(format_dtc(n) for n in d.allowed)}" if d.allowed else ""
        within = f" within {format_duration(d.within)}" if d.within is not None else ""
        return f"check the DTCs of {d.device}: {what}{allowed}{within}"
    if ps.kind == "prompt":
        assert ps.prompt is not None
        gate = f" (once {ps.prompt.gate_text})" if ps.prompt.gate else ""
        return f"ask the operator: {ps.prompt.text}{gate}"
    assert ps.measure is not None
    m = ps.measure
    lo = "" if m.low is None else f"{format_value(m.low, m.unit.text)} <= "
    hi = "" if m.high is None else f" <= {format_value(m.high, m.unit.text)}"
    return f"measure {lo}{m.name}{hi} ({m.expr_text})"


def _safe_states(
    station: LoadedStation, catalog: Mapping[str, SignalInfo], devices: Sequence[str]
) -> dict[str, SafeStatePlan]:
    out: dict[str, SafeStatePlan] = {}
    c = _Compiler(station.source, catalog, {})
    for name in devices:
        entry = station.model.devices[name]
        if entry.safe_state is None:
            continue
        loc: list[str | int] = ["devices", name, "safe_state"]
        sets = [c.set_value(sig, str(v), [*loc, "set", sig]) for sig, v in entry.safe_state.set.items()]
        verify = c.condition(entry.safe_state.verify, [*loc, "verify"])
        within = c.duration(entry.safe_state.within, [*loc, "within"])
        out[name] = SafeStatePlan(name, sets, verify, entry.safe_state.verify, within)
    return out


def _supervision(
    station: LoadedStation, catalog: Mapping[str, SignalInfo]
) -> tuple[list[PlanMonitor], Compiled | None]:
    """The station's hard limits and e-stop input, over all of its devices' signals."""
    c = _Compiler(station.source, catalog, {})
    limits = []
    for i, lim in enumerate(station.model.limits):
        cond = c.condition(lim.when, ["limits", i, "when"])
        limits.append(PlanMonitor(lim.name, cond, lim.when, "abort", "", station.source.line(["limits", i])))
    estop = c.condition(station.model.estop, ["estop"]) if station.model.estop else None
    return limits, estop


@dataclass
class StationChecks:
    """Everything of a station that is checked before any device moves, for all of its devices."""

    drivers: dict[str, Driver]
    catalog: dict[str, SignalInfo]
    faults: list[str]
    limits: list[PlanMonitor]
    estop: Compiled | None
    safe_states: dict[str, SafeStatePlan]
    notes: list[str] = field(default_factory=list)  # worth knowing, not wrong (opaque units)


def check_station(station: LoadedStation, faults: Sequence[str] = ()) -> StationChecks:
    """Build a station's drivers, plants, faults, limits, e-stop and safe states without connecting.

    ``bench run`` (through :func:`build_plan`) and ``bench validate STATION`` both come here, so
    validate finds everything a run would refuse before any device moves.
    """
    drivers = build_drivers(station)
    catalog = build_catalog(drivers)
    for i, sim in enumerate(station.model.simulators):
        try:
            load_plant_builder(sim.kind)
        except LoadError as exc:
            raise station.source.error(["simulators", i, "kind"], exc.message) from None
    found_faults = station_faults(station, faults)
    limits, estop = _supervision(station, catalog)
    safe = _safe_states(station, catalog, list(station.model.devices))
    return StationChecks(drivers, catalog, found_faults, limits, estop, safe, unit_notes(catalog))


def build_plan(
    sequence_path: Path, station_path: Path, overrides: Mapping[str, str] | None = None, faults: Sequence[str] = ()
) -> Plan:
    station = load_station(station_path)
    checked = check_station(station, faults)
    src, model = load_sequence(sequence_path)
    for i, dev in enumerate(model.requires):
        if dev not in station.model.devices:
            raise src.error(
                ["requires", i],
                f"device '{dev}' is not on station '{station.model.id}' (devices: {', '.join(station.model.devices)})",
            )
    drivers = checked.drivers
    catalog_all = checked.catalog
    # A sequence sees only the devices it declares.
    catalog = {k: v for k, v in catalog_all.items() if k.split(".", 1)[0] in model.requires}
    params = _param_values(src, model, overrides or {}, opaque_units(catalog))
    c = _Compiler(src, catalog, {k: p.value for k, p in params.items()})
    c.requires = list(model.requires)
    c.dtc_devices = frozenset(d for d in model.requires if drivers[d].supports_dtcs)
    monitors: list[PlanMonitor] = []
    for i, mon in enumerate(model.monitors):
        cond = c.condition(mon.when, ["monitors", i, "when"])
        name = mon.name or mon.when
        monitors.append(PlanMonitor(name, cond, mon.when, mon.then, mon.message or "", src.line(["monitors", i])))
    # Displayed, recorded and reported by the name the driver publishes.
    model.display = [c.resolve(sig, ["display", i]).name for i, sig in enumerate(model.display)]
    marks: set[str] = set()
    names: set[str] = set()
    history: set[str] = set()
    steps = _compile_steps(c, model, "steps", marks, names, history)
    cleanup = _compile_steps(c, model, "cleanup", marks, names, history)
    record_interval = c.duration(model.record_interval, ["record_interval"], MIN_RECORD_INTERVAL_S, "the interval")
    found_faults, limits, estop = checked.faults, checked.limits, checked.estop
    # A run connects what its sequence uses and what the supervisor watches; the station's other
    # devices are left alone (on a simulated station their plants do not even start).
    watched = {s.split(".", 1)[0] for lim in limits for s in lim.cond.signals}
    watched |= {s.split(".", 1)[0] for s in (estop.signals if estop else ())}
    used = [d for d in station.model.devices if d in model.requires or d in watched]
    drivers = {d: drivers[d] for d in used}
    safe = {d: plan for d, plan in checked.safe_states.items() if d in used}
    plan = Plan(
        model,
        src,
        station,
        drivers,
        catalog_all,
        params,
        steps,
        cleanup,
        monitors,
        list(model.display),
        history,
        record_interval,
        found_faults,
        safe,
        limits,
        estop,
        station.model.estop or "",
    )
    plan.wanted = plan.referenced_signals()
    plan.notes = unit_notes({k: v for k, v in catalog_all.items() if k.split(".", 1)[0] in used})
    return plan


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


__all__ = ["BOOL", "DIMENSIONLESS", "Plan", "PlanStep", "build_plan", "load_sequence"]
