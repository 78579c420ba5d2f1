"""Physical units for sequences, stations and signals.

A closed table of the unit names that DBC files and the regulations use, with SI prefixes,
products/quotients (``ohm/V``, ``degC/h``, ``A*h``) and the spellings other tools write
(``Volt``, ``Ampere``, ``rpm``, ``deg C``). Values are carried in coherent base units
(s, A, V, K, Pa, m) so comparisons are plain float operations at run time.

A unit a supplier's DBC spells in a way that is not in the table (``Count``, ``Calls``) is
*opaque* (:func:`signal_unit`): its values are numbers in that unit, comparable with a plain
number or with a value in the same unit string, and with nothing else.

Temperature is the one unit with an offset. A lone temperature (a limit, a setpoint, a signal)
is absolute; a temperature inside a compound unit (``degC/h``) or on the right of ``+``/``-``
is a difference; a minus sign negates a Celsius temperature on its own scale (``-20 degC`` is
253.15 K, bench/expr.py). General-purpose unit libraries apply the offset inside compound units, which
turns a gradient of ``4 degC/h`` into ``277 K/h``; that is the wrong answer for a
temperature-stability criterion, so the rule is spelled out here instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from bench.errors import ExpressionError

# Exponents over (time, current, voltage, temperature, pressure, length).
Dim = tuple[int, int, int, int, int, int]
DIMENSIONLESS: Dim = (0, 0, 0, 0, 0, 0)
TIME: Dim = (1, 0, 0, 0, 0, 0)
CURRENT: Dim = (0, 1, 0, 0, 0, 0)
VOLTAGE: Dim = (0, 0, 1, 0, 0, 0)
TEMPERATURE: Dim = (0, 0, 0, 1, 0, 0)
PRESSURE: Dim = (0, 0, 0, 0, 1, 0)
LENGTH: Dim = (0, 0, 0, 0, 0, 1)
POWER: Dim = (0, 1, 1, 0, 0, 0)
ENERGY: Dim = (1, 1, 1, 0, 0, 0)  # also torque: N*m is J
CHARGE: Dim = (1, 1, 0, 0, 0, 0)
RESISTANCE: Dim = (0, -1, 1, 0, 0, 0)
FREQUENCY: Dim = (-1, 0, 0, 0, 0, 0)
VOLUME: Dim = (0, 0, 0, 0, 0, 3)

_DIM_NAMES = {
    DIMENSIONLESS: "dimensionless",
    TIME: "time",
    CURRENT: "current",
    VOLTAGE: "voltage",
    TEMPERATURE: "temperature",
    PRESSURE: "pressure",
    LENGTH: "length",
    POWER: "power",
    ENERGY: "energy",
    CHARGE: "charge",
    RESISTANCE: "resistance",
    (0, -1, 0, 0, 0, 0): "resistance per volt",
    FREQUENCY: "frequency",
    (-1, 0, 0, 1, 0, 0): "temperature rate",
    (-1, 0, 1, 0, 0, 0): "voltage rate",
    (-1, 1, 0, 0, 0, 0): "current rate",
    (-1, 0, 0, 0, 0, 1): "speed",
    VOLUME: "volume",
    (-1, 0, 0, 0, 0, 3): "volume flow",
}

# symbol -> (dimension, factor to base); prefixes are applied to the ones marked prefixable.
_BASE: dict[str, tuple[Dim, float, bool]] = {
    "s": (TIME, 1.0, True),
    "min": (TIME, 60.0, False),
    "h": (TIME, 3600.0, False),
    "hr": (TIME, 3600.0, False),
    "d": (TIME, 86400.0, False),
    "A": (CURRENT, 1.0, True),
    "V": (VOLTAGE, 1.0, True),
    "W": (POWER, 1.0, True),
    "VA": (POWER, 1.0, True),
    "Wh": (ENERGY, 3600.0, True),
    "J": (ENERGY, 1.0, True),
    "Nm": (ENERGY, 1.0, False),
    "Ah": (CHARGE, 3600.0, True),
    "As": (CHARGE, 1.0, True),
    "C": (CHARGE, 1.0, False),
    "ohm": (RESISTANCE, 1.0, True),
    "Ohm": (RESISTANCE, 1.0, True),
    "Ω": (RESISTANCE, 1.0, True),
    "Pa": (PRESSURE, 1.0, True),
    "bar": (PRESSURE, 1e5, True),
    "psi": (PRESSURE, 6894.757293168, False),
    "Hz": (FREQUENCY, 1.0, True),
    "rpm": (FREQUENCY, 1 / 60, False),
    "m": (LENGTH, 1.0, True),
    "l": (VOLUME, 1e-3, True),
    "L": (VOLUME, 1e-3, True),
    "K": (TEMPERATURE, 1.0, False),
    "degC": (TEMPERATURE, 1.0, False),
    "°C": (TEMPERATURE, 1.0, False),
    "%": (DIMENSIONLESS, 0.01, False),
    "%vol": (DIMENSIONLESS, 0.01, False),
    "ppm": (DIMENSIONLESS, 1e-6, False),
    "1": (DIMENSIONLESS, 1.0, False),
}
# Spellings other tools write for units of the table (spaces are ignored, so ``deg C`` is ``degC``).
_SPELLINGS = {
    "Volt": "V",
    "volt": "V",
    "Volts": "V",
    "volts": "V",
    "Ampere": "A",
    "ampere": "A",
    "Amp": "A",
    "amp": "A",
    "Amps": "A",
    "amps": "A",
    "Watt": "W",
    "watt": "W",
    "Ohms": "ohm",
    "ohms": "ohm",
    "sec": "s",
    "Sec": "s",
    "RPM": "rpm",
    "Rpm": "rpm",
    "DegC": "degC",
    "Celsius": "degC",
    "celsius": "degC",
    "Kelvin": "K",
    "degreeC": "degC",
    "℃": "degC",
    "percent": "%",
    "vol%": "%vol",
    "%Vol": "%vol",
    "N.m": "Nm",
    "N*m": "Nm",
    "kph": "km/h",
}
_PREFIX = {"p": 1e-12, "n": 1e-9, "u": 1e-6, "µ": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}
_CELSIUS_OFFSET = 273.15


@dataclass(frozen=True, slots=True)
class Unit:
    """A parsed unit: ``base = value * factor + offset``."""

    text: str
    dim: Dim
    factor: float
    offset: float = 0.0
    opaque: bool = False  # a DBC's own unit the table does not know: only itself or a plain number

    @property
    def dimension_name(self) -> str:
        return dimension_name(self.dim)

    def to_base(self, value: float) -> float:
        return value * self.factor + self.offset

    def from_base(self, value: float) -> float:
        return (value - self.offset) / self.factor


@dataclass(frozen=True, slots=True)
class Quantity:
    """A value in base units with its dimension, and the unit it was written in (for display)."""

    base: float
    dim: Dim
    unit: Unit

    @property
    def magnitude(self) -> float:
        return self.unit.from_base(self.base)

    def __str__(self) -> str:
        return format_value(self.magnitude, self.unit.text)


def dimension_name(dim: Dim) -> str:
    if dim in _DIM_NAMES:
        return _DIM_NAMES[dim]
    names = ("s", "A", "V", "K", "Pa", "m")
    return "*".join(f"{n}^{e}" for n, e in zip(names, dim, strict=True) if e) or "dimensionless"


def _symbol(sym: str) -> tuple[Dim, float, bool]:
    if sym in _BASE:
        return _BASE[sym]
    if len(sym) > 1 and sym[0] in _PREFIX and sym[1:] in _BASE:
        dim, factor, prefixable = _BASE[sym[1:]]
        if prefixable:
            return dim, factor * _PREFIX[sym[0]], False
    raise ExpressionError(f"unknown unit '{sym}'")


_UNIT_TOKEN = re.compile(r"([*/]?)([^*/^]+)(?:\^(-?\d+))?")
_UNIT_CACHE: dict[str, Unit] = {}


def parse_unit(text: str, opaque: Collection[str] = ()) -> Unit:
    """Parse ``V``, ``mV``, ``degC``, ``ohm/V``, ``A*h``, ``degC/h``, ``%``; ``''`` is dimensionless.

    A unit in ``opaque`` (the opaque units of the signals in scope) is that opaque unit.
    """
    key = text.strip()
    if key in opaque:
        return opaque_unit(key)
    compact = key.replace(" ", "")
    key = _SPELLINGS.get(compact, compact if compact in _BASE else key)
    cached = _UNIT_CACHE.get(key)
    if cached is not None:
        return cached
    if key in ("", "-"):
        unit = Unit(key, DIMENSIONLESS, 1.0)
    else:
        dims = [0, 0, 0, 0, 0, 0]
        factor = 1.0
        pos = 0
        parts = 0
        for match in _UNIT_TOKEN.finditer(key.replace(" ", "")):
            if match.start() != pos:
                raise ExpressionError(f"cannot read unit '{text}'")
            pos = match.end()
            op, sym, exp = match.group(1), match.group(2), int(match.group(3) or 1)
            if parts and not op:
                raise ExpressionError(f"cannot read unit '{text}'")
            sign = -1 if op == "/" else 1
            d, f, _ = _symbol(sym)
            for i in range(len(dims)):
                dims[i] += sign * exp * d[i]
            factor *= f ** (sign * exp)
            parts += 1
        if pos != len(key.replace(" ", "")):
            raise ExpressionError(f"cannot read unit '{text}'")
        dim: Dim = (dims[0], dims[1], dims[2], dims[3], dims[4], dims[5])
        # Only a lone Celsius temperature is absolute; see the module docstring.
        offset = _CELSIUS_OFFSET if parts == 1 and key in ("degC", "°C") else 0.0
        unit = Unit(key, dim, factor, offset)
    _UNIT_CACHE[key] = unit
    return unit


def opaque_unit(text: str) -> Unit:
    return Unit(text.strip(), DIMENSIONLESS, 1.0, opaque=True)


def signal_unit(text: str, mapping: Mapping[str, str] | None = None) -> Unit:
    """The unit of a signal as a DBC spells it: mapped by the station, known to the table, or opaque.

    ``mapping`` is a device's ``units:`` (the DBC's spelling -> ours); a mapping to a unit the
    table does not know is an error, an unmapped unknown spelling becomes an opaque unit.
    """
    key = text.strip()
    if mapping and key in mapping:
        return parse_unit(str(mapping[key]))
    try:
        return parse_unit(key)
    except ExpressionError:
        return opaque_unit(key)


def is_plain(unit: Unit | None) -> bool:
    """A plain number: no unit at all (``12``, a signal without a unit)."""
    return unit is None or (not unit.opaque and unit.text in ("", "1", "-"))


def mixing_error(a: Unit | None, b: Unit | None, what: str = "compare") -> str | None:
    """Why ``a`` and ``b`` cannot meet when one of them is opaque, or None when they can.

    An opaque unit meets a plain number or the same unit string; the dimension checks cover
    everything else, and an opaque unit has no dimension to check.
    """
    for x, y in ((a, b), (b, a)):
        if x is not None and x.opaque and not is_plain(y) and not (y is not None and y.opaque and y.text == x.text):
            assert y is not None
            return f"cannot {what} a value in {x.text} with a value in {y.text or 'no unit'} ({x.text} is the DBC's own unit)"
    return None


# Every number a person writes (sequences, stations, -p, lab job parameters, prompt answers) is
# read by parse_quantity, so these bounds hold everywhere (docs/sequences.md, "Limits").
MAX_NUMBER_CHARS = 30
MAX_MAGNITUDE = 1e12  # the messages say 1e12
_QUANTITY = re.compile(r"^\s*([-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)\s*(.*?)\s*$")


def parse_quantity(text: str, opaque: Collection[str] = ()) -> Quantity:
    """Parse ``'4.25 V'``, ``'250 ms'``, ``'3 %'``, ``'12'`` into a quantity (``opaque``: see :func:`parse_unit`)."""
    check_digits(text)
    match = _QUANTITY.match(text)
    if not match:
        raise ExpressionError(f"'{text}' is not a number with a unit")
    unit = parse_unit(match.group(2), opaque)
    return Quantity(unit.to_base(parse_number(match.group(1))), unit.dim, unit)


def parse_number(text: str) -> float:
    """A written number, finite and within ``MAX_MAGNITUDE``: 1e308 seconds is a mistake, never a plan."""
    if len(text) > MAX_NUMBER_CHARS:
        raise ExpressionError(f"the number '{text[:12]}...' is too long (at most {MAX_NUMBER_CHARS} characters)")
    value = float(text)
    if not math.isfinite(value) or abs(value) > MAX_MAGNITUDE:
        raise ExpressionError(f"{text} is out of range (a number may be at most 1e12 in size)")
    return value


def check_digits(text: str) -> None:
    """Refuse digits other than 0-9: Python would read Arabic-Indic or full-width digits as numbers."""
    for ch in text:
        if ch.isdigit() and ch not in "0123456789":
            raise ExpressionError(f"'{text}': write numbers with the digits 0-9 (found '{ch}')")


def has_unit(unit: Unit) -> bool:
    """Whether a value in ``unit`` means something else when written as a bare number (``60`` is not ``60 %``).

    Not an opaque unit: nothing is known of it but its name, so ``12`` is 12 in that unit.
    """
    return not unit.opaque and unit.text not in ("", "1", "-")


def quantity(value: float, unit_text: str) -> Quantity:
    unit = parse_unit(unit_text)
    return Quantity(unit.to_base(value), unit.dim, unit)


def parse_duration(text: str) -> float:
    """Seconds of a positive duration written with a unit of time: ``90 s``, ``30 min``, ``12 h``, ``7 d``."""
    q = parse_quantity(text)
    if q.dim != TIME or q.base <= 0:
        raise ExpressionError(f"expected a duration > 0 with a unit of time (s, min, h, d), got '{text}'")
    return q.base


def format_duration(seconds: float) -> str:
    """``0.25 s``, ``90 s``, ``15 min``, ``12 h``: the unit a person would say."""
    if seconds >= 7200:
        return format_value(round(seconds / 3600, 3), "h")
    if seconds >= 600:
        return format_value(round(seconds / 60, 2), "min")
    return format_value(seconds, "s")


def format_value(value: float | None, unit: str = "") -> str:
    """Format for people: up to 6 significant digits, no float noise."""
    if value is None:
        return "n/a"
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    text = f"{value:.6g}"
    return f"{text} {unit}".rstrip() if unit else text
