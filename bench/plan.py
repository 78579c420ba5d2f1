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
from typing import Any

from bench import stepkinds
from bench.compiler import MIN_RECORD_INTERVAL_S, Compiler, SetValue, refuse_bare
from bench.device import ConfigError, Driver, fault_catalogue, load_driver, load_plant_builder
from bench.errors import ExpressionError, LoadError
from bench.expr import (
    BOOL,
    Compiled,
    Scope,
    SignalInfo,
    constant,
    expect_dim,
    opaque_units,
)
from bench.sequence import Sequence as SequenceModel
from bench.station import LoadedStation, SimulatorEntry, load_station
from bench.stepkinds.base import PlanStep, StepSite
from bench.suggest import did_you_mean
from bench.units import (
    DIMENSIONLESS,
    Quantity,
    has_unit,
    mixing_error,
    parse_quantity,
)
from bench.yamlsource import YamlSource, load_model


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
    steps: list[PlanStep[Any]]
    cleanup: list[PlanStep[Any]]
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
            names.update(st.plan.signals())
        for mon in (*self.monitors, *self.limits):
            names.update(mon.cond.signals)
        if self.estop is not None:
            names.update(self.estop.signals)
        for ss in self.safe_states.values():
            names.update(sv.signal for sv in ss.sets)
            names.update(ss.verify.signals)
        return frozenset(names)

    def simulators_started(self) -> list[tuple[int, SimulatorEntry]]:
        """The station's simulators (with their index) whose plant a run of this plan starts.

        A plant stands behind the station devices it names; a run that uses none of them does not
        start it (a plant that names no devices always starts). A fault of a plant that is not
        started therefore cannot act on the run (bench/campaign.py relies on it).
        """
        return [
            (i, sim)
            for i, sim in enumerate(self.station.model.simulators)
            if not sim.devices or any(d in self.drivers for d in sim.devices)
        ]

    @property
    def sequence_sha256(self) -> str:
        return self.sequence_source.sha256

    def files(self) -> list[Path]:
        out: list[Path] = []
        for d in self.drivers.values():
            out.extend(p for p in d.files() if p not in out)
        return out


def load_sequence(path: Path) -> tuple[YamlSource, SequenceModel]:
    return load_model(path, "sequence", SequenceModel)


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
            raise LoadError(
                f"-p {name}: unknown parameter of {model.id} (parameters: {known}){did_you_mean(name, model.parameters)}"
            )
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


def override_errors(plan: Plan, overrides: Mapping[str, str]) -> dict[str, str]:
    """What ``bench run -p name=value`` says of each override taken alone, by name; {} if all are taken.

    The same parser and checks as :func:`build_plan` (unit, kind of unit, min/max, unknown
    name), each override judged on its own so that a form can show every error next to its field.
    """
    requires = set(plan.sequence.requires)
    opaque = opaque_units({k: v for k, v in plan.catalog.items() if k.split(".", 1)[0] in requires})
    errors: dict[str, str] = {}
    for name, value in overrides.items():
        try:
            _param_values(plan.sequence_source, plan.sequence, {name: value}, opaque)
        except LoadError as exc:
            errors[name] = str(exc)
    return errors


def _compile_steps(
    c: Compiler, model: SequenceModel, phase: str, marks: set[str], step_names: set[str], history: set[str]
) -> list[PlanStep[Any]]:
    steps = model.steps if phase == "steps" else model.cleanup
    out: list[PlanStep[Any]] = []
    for i, step in enumerate(steps):
        loc: list[str | int] = [phase, i]
        kind = stepkinds.of_model(step)
        # A cleanup step's default name says so: '01 set' of the steps and of the cleanup would clash.
        numbered = f"{i + 1:02d} {kind.name}" if phase == "steps" else f"cleanup {i + 1:02d} {kind.name}"
        default = kind.default_name(step, i) if kind.default_name else numbered
        name = step.name or default
        if name in step_names:
            raise c.fail([*loc, "name"], f"duplicate step name '{name}'")
        step_names.add(name)
        site = StepSite(loc, frozenset(marks), step_names, history)
        compiled = kind.compile(c, step, site)
        ps = PlanStep(i, name, kind.name, phase, c.src.line(loc), "", compiled, site.mark, site.mark_condition)
        if ps.mark:
            marks.add(ps.mark)
        ps.text = kind.describe(ps)
        out.append(ps)
    return out


def _safe_states(
    station: LoadedStation, catalog: Mapping[str, SignalInfo], devices: Sequence[str]
) -> dict[str, SafeStatePlan]:
    out: dict[str, SafeStatePlan] = {}
    c = Compiler(station.source, catalog, {})
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
    c = Compiler(station.source, catalog, {})
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
    c = Compiler(src, catalog, {k: p.value for k, p in params.items()})
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


__all__ = ["BOOL", "DIMENSIONLESS", "Plan", "PlanStep", "build_plan", "load_sequence", "override_errors"]
