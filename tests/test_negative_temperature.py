"""A minus sign in front of a temperature on the Celsius scale negates the reading on that scale.

Temperatures are held in kelvin. Negating the kelvin value of ``20 degC`` gives -293.15 K
(-566.3 degC), which is no temperature anyone means by ``-20 degC``: a cold-soak setpoint, a
limit ``x > -20 degC`` or a parameter default written that way must be 253.15 K. A difference
(``K``, ``mV``) is negated as it is.
"""

from __future__ import annotations

import pytest

from bench.expr import Env, Scope, SignalInfo, compile_condition, constant
from bench.units import parse_unit, quantity

CELSIUS = 273.15


def _scope() -> Scope:
    return Scope(
        {"t.cell": SignalInfo("t.cell", parse_unit("degC")), "t.rise": SignalInfo("t.rise", parse_unit("K"))},
        {"cold": quantity(20.0, "degC"), "tolerance": quantity(2.1, "K"), "minus_cold": quantity(-20.0, "degC")},
    )


@pytest.mark.parametrize(
    ("text", "kelvin"),
    [
        ("-20 degC", CELSIUS - 20.0),
        ("-(20 degC)", CELSIUS - 20.0),
        ("-20 °C", CELSIUS - 20.0),
        ("-$cold", CELSIUS - 20.0),
        ("$minus_cold", CELSIUS - 20.0),
        ("--20 degC", CELSIUS + 20.0),
        ("0 degC - 20 K", CELSIUS - 20.0),
        ("-$tolerance", -2.1),
        ("-(5 K)", -5.0),
        ("-20 degC + 5 K", CELSIUS - 15.0),
    ],
)
def test_a_negated_temperature_is_negated_on_its_own_scale(text: str, kelvin: float) -> None:
    assert constant(text, _scope()).base == pytest.approx(kelvin)


@pytest.mark.parametrize(
    ("reading_c", "expected"),
    [(-25.0, True), (-20.5, True), (-19.5, False), (20.0, False)],
)
def test_a_limit_below_zero_celsius_compares_on_the_celsius_scale(reading_c: float, expected: bool) -> None:
    condition = compile_condition("t.cell < -20 degC", _scope())
    # Signal values arrive in the signal's own unit (degC) and are converted to kelvin on read.
    assert condition.fn(Env({"t.cell": reading_c}, {})) is expected


def test_a_negated_temperature_signal_is_its_reading_negated() -> None:
    scope = _scope()
    assert compile_condition("-t.cell == 5 degC", scope).fn(Env({"t.cell": -5.0}, {})) is True
    assert compile_condition("-t.rise == -3 K", scope).fn(Env({"t.rise": 3.0}, {})) is True
