"""The station's equipment register, report metadata, and the uncertainty of a measurement.

Station file sections (all optional, see docs/reports.md):

* ``laboratory``: name, address, location of the tests, who authorises reports, customer,
  item under test, environment (fixed values or signals);
* ``equipment``: one entry per instrument (maker, model, serial, asset id, calibration
  certificate, dates, accuracy per range per signal; a signal key may be an fnmatch pattern,
  ``m*c*_voltage``, for the many channels of one kind), and ``identity_match`` for extra identity
  fields (e.g. UDS data of a DUT);
* ``signal_sources``: resolution, accuracy and update period of signals that come from the DUT
  or another non-calibrated source (CAN signals);
* ``decision_rule``: ``simple`` or ``guard_band`` (ILAC-G8:09/2019 4.2.1 / 4.2.2 with w = U).

Uncertainty (GUM, JCGM 100): an accuracy spec ±(a % of reading + b % of range + c) is taken as
the half-width of a rectangular distribution, u = (a·|x| + b·R + c)/√3; a resolution q adds
u = q/√12; the components are combined in quadrature and U = k·u_c with k = 2 (≈ 95 %).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import functools
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bench.errors import ExpressionError
from bench.units import Unit, parse_quantity

if TYPE_CHECKING:
    from bench.plan import Plan

COVERAGE_K = 2.0
DecisionRule = Literal["simple", "guard_band"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _text(v: Any) -> Any:
    return str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v


class Customer(_Model):
    name: str
    contact: str = ""


class Item(_Model):
    description: str = Field(description="what the item under test is")
    device: str | None = Field(None, description="station device that is the item (its identity is read at connect)")
    received: dt.date | None = Field(None, description="date of receipt of the item")
    condition: str = Field("", description="condition of the item on receipt")
    identity: dict[str, str] = Field({}, description="identity fields (e.g. from UDS) the item must report")


class Environment(_Model):
    temperature: str | None = Field(None, description="ambient temperature, e.g. '23 degC'")
    humidity: str | None = Field(None, description="relative humidity, e.g. '45 %'")
    temperature_signal: str | None = Field(None, description="or a signal that measures it")
    humidity_signal: str | None = None
    source: str = Field("", description="where the values come from (sensor, lab log ...)")

    _t = field_validator("temperature", "humidity", mode="before")(_text)


class Laboratory(_Model):
    name: str
    address: str
    location: str = Field(description="where the tests are performed (site, room, bench)")
    authorised_by: str | None = Field(None, description="person who authorises reports (name, function)")
    customer: Customer | None = None
    item: Item | None = None
    environment: Environment | None = None
    sampling: str | None = Field(None, description="sampling plan and method, when relevant")


class Range(_Model):
    range: str = Field(description="full scale of the range, e.g. '1000 V'")
    reading_pct: float = Field(0.0, ge=0, description="± % of reading")
    range_pct: float = Field(0.0, ge=0, description="± % of range")
    absolute: str | None = Field(None, description="± fixed term, e.g. '5 mV'")
    resolution: str | None = Field(None, description="display / data resolution, e.g. '10 mV'")

    _t = field_validator("range", "absolute", "resolution", mode="before")(_text)

    def spec_text(self) -> str:
        terms = []
        if self.reading_pct:
            terms.append(f"{self.reading_pct:g} % of reading")
        if self.range_pct:
            terms.append(f"{self.range_pct:g} % of range")
        if self.absolute:
            terms.append(self.absolute)
        spec = "±(" + " + ".join(terms) + ")" if terms else "no accuracy stated"
        res = f", resolution {self.resolution}" if self.resolution else ""
        return f"{spec} on the {self.range} range{res}"


class Calibration(_Model):
    certificate: str
    date: dt.date
    due: dt.date
    laboratory: str = ""


class Instrument(_Model):
    asset_id: str
    device: str | None = Field(None, description="station device this instrument is connected as")
    maker: str
    model: str
    serial: str
    firmware: str | None = None
    calibration: Calibration | None = Field(None, description="None: not calibrated (indication only)")
    signals: dict[str, list[Range]] = Field({}, description="short signal name -> accuracy per range")
    external: str | None = Field(None, description="name of the external provider, if results come from one")


class SignalSource(_Model):
    resolution: str | None = None
    accuracy: str | None = Field(None, description="± half-width of the error, e.g. '5 mV'")
    period: str | None = Field(None, description="update period of the signal (CAN cycle, poll interval)")
    source: str = ""

    _t = field_validator("resolution", "accuracy", "period", mode="before")(_text)


@functools.lru_cache(maxsize=1024)  # read for every measurement of a run: the texts are the register's few
def diff_base(text: str) -> float:
    """A quantity as a *difference* in base units: the unit's offset (degC) does not apply."""
    q = parse_quantity(str(text))
    return abs(q.unit.from_base(q.base)) * q.unit.factor


# -- calibration and identity ----------------------------------------------------------------
@dataclass
class CalStatus:
    instrument: Instrument
    ok: bool
    text: str


def calibration_status(equipment: Iterable[Instrument], on: dt.date) -> list[CalStatus]:
    out = []
    for ins in equipment:
        cal = ins.calibration
        if cal is None:
            out.append(CalStatus(ins, True, "not calibrated (indication only)"))
        elif cal.due < on:
            out.append(
                CalStatus(
                    ins, False, f"calibration due {cal.due.isoformat()} has passed (certificate {cal.certificate})"
                )
            )
        else:
            out.append(CalStatus(ins, True, f"calibrated {cal.date.isoformat()}, due {cal.due.isoformat()}"))
    return out


def used_instruments(equipment: Iterable[Instrument], devices: Collection[str]) -> list[Instrument]:
    """The register entries of the instruments a run used: those connected as one of ``devices``
    (the devices whose signals the sequence refers to or which it commands). An instrument of the
    station that the sequence never touched is not equipment of the test (ISO/IEC 17025 7.8.2.1)."""
    return [ins for ins in equipment if ins.device is not None and ins.device in devices]


def devices_used(plan: Plan) -> set[str]:
    """Devices the run used: those whose signals the sequence's steps, monitors, display or the
    station's environment signals refer to, and those its steps command."""
    names = set(plan.display)
    devices: set[str] = set()
    for st in (*plan.steps, *plan.cleanup):
        names |= st.plan.signals()
        devices |= st.plan.cleanup_needs()
    for mon in plan.monitors:
        names |= set(mon.cond.signals)
    lab = plan.station.model.laboratory
    env = lab.environment if lab else None
    if env is not None:
        names |= {s for s in (env.temperature_signal, env.humidity_signal) if s}
    return devices | {n.split(".", 1)[0] for n in names}


def identity_mismatches(ins: Instrument | None, identity: Mapping[str, str], extra: Mapping[str, str]) -> list[str]:
    """Fields of the identity read at connect that differ from the register (empty: it matches)."""
    want: dict[str, str] = {}
    if ins is not None:
        want = {"maker": ins.maker, "model": ins.model, "serial": ins.serial}
        if ins.firmware:
            want["firmware"] = ins.firmware
    want.update(extra)
    out = []
    for key, expected in want.items():
        got = identity.get(key)
        if got is None:
            out.append(f"{key}: register says '{expected}', the device reported none")
        elif str(got).strip() != str(expected).strip():
            out.append(f"{key}: register says '{expected}', the device reported '{got}'")
    return out


# -- uncertainty -----------------------------------------------------------------------------
@dataclass
class Uncertainty:
    u_base: float  # combined standard uncertainty, base units
    budget: list[str]

    @property
    def expanded_base(self) -> float:
        return COVERAGE_K * self.u_base


def combine(parts: list[tuple[str, float]], shown_in: Unit | None) -> Uncertainty:
    """u_c of the components; each budget line states its u in ``shown_in`` (else in base units, unnamed)."""

    def text(u: float) -> str:
        # An uncertainty is a difference: the unit's factor applies, its offset (degC) does not.
        return f"{u / shown_in.factor:.4g} {shown_in.text}".rstrip() if shown_in is not None else f"{u:.4g}"

    return Uncertainty(math.sqrt(sum(u * u for _, u in parts)), [f"{what}: u = {text(u)}" for what, u in parts])


# What the uncertainty of a reading needs from the register is read once per register entry, not
# once per measurement: the caches below are keyed on the entry's content (its texts and numbers),
# so an edited register is read again, and each is a pure function of that content. Per
# measurement only what depends on the value is left: the range that holds it, the reading term,
# and the lines that state a u that depends on the value.
_SQRT3 = math.sqrt(3)
_SQRT12 = math.sqrt(12)
_RangeKey = tuple[str, float, float, str | None, str | None]


@dataclass(frozen=True, slots=True)
class _RangeSpec:
    """One range of an instrument's signal, read: its full scale and the terms that do not depend on the value."""

    full_scale: float  # base units
    reading: float  # reading_pct / 100
    range_term: float  # range_pct / 100 * full scale, base units
    absolute: float | None  # the fixed term, base units (None: none stated)
    accuracy_line: str  # the budget line's words for the accuracy component
    resolution: tuple[str, float] | None  # (its budget words, its u in base units)
    readable: bool  # False: its fixed term or its resolution cannot be read (no U from this range)


def _range_key(r: Range) -> _RangeKey:
    return (r.range, r.reading_pct, r.range_pct, r.absolute, r.resolution)


@functools.lru_cache(maxsize=256)  # the register's few (instrument, signal) entries
def _range_specs(asset_id: str, ranges: tuple[_RangeKey, ...]) -> tuple[_RangeSpec, ...] | None:
    """The ranges of one signal of an instrument, smallest full scale first; None when a full scale cannot be read."""
    try:
        # sorted() is stable: ranges of the same full scale keep the register's order.
        ordered = sorted(ranges, key=lambda k: diff_base(k[0]))
    except ExpressionError:
        return None
    out = []
    for rng, reading_pct, range_pct, absolute_text, resolution_text in ordered:
        r = Range(
            range=rng, reading_pct=reading_pct, range_pct=range_pct, absolute=absolute_text, resolution=resolution_text
        )
        full_scale = diff_base(r.range)
        readable = True
        absolute: float | None = None
        resolution: tuple[str, float] | None = None
        try:
            if r.absolute:
                absolute = diff_base(r.absolute)
            if r.resolution:
                resolution = (f"resolution {r.resolution} (rectangular)", diff_base(r.resolution) / _SQRT12)
        except ExpressionError:
            readable = False
        out.append(
            _RangeSpec(
                full_scale,
                r.reading_pct / 100,
                r.range_pct / 100 * full_scale,
                absolute,
                f"{asset_id} accuracy {r.spec_text()} (rectangular)",
                resolution,
                readable,
            )
        )
    return tuple(out)


@functools.lru_cache(maxsize=256)  # the register's few signal sources, in the few units they are shown in
def _source_uncertainty(
    signal: str, accuracy: str | None, resolution: str | None, shown_in: Unit | None
) -> tuple[float, tuple[str, ...]] | None:
    """u_c and budget lines of a signal source (none of it depends on the value); None when nothing is known."""
    if accuracy is None and resolution is None:
        return None
    parts = []
    try:
        if accuracy:
            parts.append((f"{signal} accuracy ±{accuracy} (rectangular)", diff_base(accuracy) / _SQRT3))
        if resolution:
            parts.append((f"{signal} resolution {resolution} (rectangular)", diff_base(resolution) / _SQRT12))
    except ExpressionError:
        return None
    unc = combine(parts, shown_in)
    return unc.u_base, tuple(unc.budget)


def signal_uncertainty(
    signal: str,
    value_base: float,
    equipment: Iterable[Instrument],
    sources: Mapping[str, SignalSource],
    shown_in: Unit | None = None,
) -> Uncertainty | None:
    """u of one reading of ``signal`` at ``value_base``; None when nothing is known about it.

    ``shown_in``: the unit of the result, in which the budget states each component."""
    device, _, short = signal.partition(".")
    for ins in equipment:
        ranges = register_ranges(ins, short) if ins.device == device else None
        if ranges is None:
            continue
        specs = _range_specs(ins.asset_id, tuple(map(_range_key, ranges)))
        if not specs:  # a full scale that cannot be read, or no range at all
            return None
        x = abs(value_base)
        # The smallest range that holds the value (instruments autorange; the spec names it).
        rng = next((r for r in specs if x <= r.full_scale), specs[-1])
        if not rng.readable:
            return None
        half = rng.reading * x + rng.range_term
        if rng.absolute is not None:
            half += rng.absolute
        parts = [(rng.accuracy_line, half / _SQRT3)]
        if rng.resolution is not None:
            parts.append(rng.resolution)
        return combine(parts, shown_in)
    src = signal_source(signal, sources)
    if src is None:
        return None
    known = _source_uncertainty(signal, src.accuracy, src.resolution, shown_in)
    return None if known is None else Uncertainty(known[0], list(known[1]))


_Entry = TypeVar("_Entry")


def register_ranges(ins: Instrument, short: str) -> list[Range] | None:
    """The register's ranges of signal ``short`` of an instrument (``entry_for`` its signals)."""
    return entry_for(ins.signals, short)


def signal_source(signal: str, sources: Mapping[str, SignalSource]) -> SignalSource | None:
    """The ``signal_sources`` entry of ``signal`` (``entry_for``: ``cbms.cell_v_*`` for every cell)."""
    return entry_for(sources, signal)


def entry_for(entries: Mapping[str, _Entry], name: str) -> _Entry | None:
    """The entry of ``name``: its own, else the first whose key is a pattern that matches it
    (``m*c*_voltage`` for every cell channel of an emulator, fnmatch rules); None when none does."""
    own = entries.get(name)
    if own is not None:
        return own
    for key, entry in entries.items():
        if any(ch in key for ch in "*?[") and fnmatch.fnmatchcase(name, key):
            return entry
    return None


def instant_uncertainty(signals: Iterable[str], sources: Mapping[str, SignalSource]) -> tuple[str, float] | None:
    """u of an instant recorded when a condition on ``signals`` became true (seconds).

    The instant is the timestamp of the first sample that made the condition true; the real
    crossing lies somewhere in the update period T before it, so it is rectangular over T:
    u = T/√12. With several signals the longest period is taken (conservative). None when the
    period of a signal is unknown.
    """
    periods = []
    for s in sorted(signals):  # a set: sort, so ties name the same signal in every run
        src = signal_source(s, sources)
        if src is None or src.period is None:
            return None
        periods.append((s, diff_base(src.period)))
    if not periods:
        return None
    name, period = max(periods, key=lambda p: p[1])
    return f"update period {period * 1000:g} ms of {name} (rectangular)", period / math.sqrt(12)


# -- decision rule (ISO/IEC 17025 7.8.6, ILAC-G8:09/2019) ----------------------------------------
def decide(
    value: float, low: float | None, high: float | None, expanded: float | None, rule: DecisionRule
) -> tuple[bool, str]:
    """(pass, statement) under ``rule``.

    simple acceptance (ILAC-G8 4.2.1, w = 0): pass when the value is within the limits.
    guard band (ILAC-G8 4.2.2, w = U): the acceptance limits are moved inside the tolerance
    limits by U; a value inside the limits but within U of one fails. Without a known U a guard
    band cannot be applied: the measurement fails and the statement says why, rather than
    silently falling back to simple acceptance.
    """
    if rule == "simple" or (low is None and high is None):
        ok = (low is None or value >= low) and (high is None or value <= high)
        return ok, "simple acceptance (ILAC-G8:09/2019 4.2.1, w = 0)"
    if expanded is None:
        return False, "guard band w = U (ILAC-G8:09/2019 4.2.2) required, but U is unknown: not accepted"
    lo = None if low is None else low + expanded
    hi = None if high is None else high - expanded
    ok = (lo is None or value >= lo) and (hi is None or value <= hi)
    shown = " .. ".join(f"{v:.6g}" for v in (lo, hi) if v is not None)
    return ok, f"guard band w = U (ILAC-G8:09/2019 4.2.2): acceptance limit(s) {shown}"
