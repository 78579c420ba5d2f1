"""What compiling a sequence's text needs in every part: conditions, durations, signals, values.

:mod:`bench.plan` compiles monitors, parameters and the station's safe states with it, and each
step kind (bench/stepkinds/) its own steps. Every error is one line naming the file, the line
and the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bench.errors import ExpressionError, LoadError
from bench.expr import (
    Compiled,
    Scope,
    SignalInfo,
    compile_condition,
    constant,
    expect_dim,
    opaque_units,
    resolve_signal,
    state_list,
    state_value,
)
from bench.suggest import did_you_mean
from bench.units import DIMENSIONLESS, TIME, Quantity, Unit, format_duration, has_unit, mixing_error
from bench.yamlsource import Loc, YamlSource

# Bounds of time in a sequence (docs/sequences.md, "Limits"): no step waits longer than a month,
# and nothing is sampled so often that the record, rather than the test, fills the bench's disk.
MAX_DURATION_S = 30 * 86400.0
MIN_RECORD_INTERVAL_S = 0.1
MIN_RAMP_INTERVAL_S = 0.01


@dataclass
class SetValue:
    signal: str
    value: float
    text: str


class Compiler:
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
                raise self.fail(
                    loc,
                    f"{signal} has no state '{text}' (states: {state_list(info.choices)})"
                    + did_you_mean(text.strip().strip("\"'"), info.choices),
                )
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

    def dtc_device(self, name: str, loc: Loc) -> str:
        """A device of the sequence whose DTC memory the bench can reach."""
        if name not in self.requires:
            raise self.fail(loc, f"device '{name}' is not in 'requires' ({', '.join(self.requires) or 'none'})")
        if name not in self.dtc_devices:
            raise self.fail(
                loc, f"device '{name}' has no DTC memory the bench can reach (its station entry has no 'uds:')"
            )
        return name


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
