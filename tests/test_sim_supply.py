"""The simulated EA PSB supply, byte for byte at the SCPI text level."""

from __future__ import annotations

import random

import pytest

from simulators.supply import Supply, SupplyRatings


@pytest.fixture
def psu() -> Supply:
    supply = Supply(SupplyRatings(serial="SN123", noise_v=0.0, noise_a=0.0), random.Random(0))
    assert supply.scpi("SYST:LOCK ON") is None
    return supply


def test_idn_and_no_query_returns_none() -> None:
    supply = Supply(SupplyRatings(serial="SN123"), random.Random(0))
    assert supply.scpi("*IDN?") == "EA Elektro-Automatik,PSB 11000-80 4U,SN123,V3.02 (simulated)"
    assert supply.scpi("*CLS") is None


def test_lock_protects_settings_and_queues_203() -> None:
    supply = Supply(SupplyRatings(), random.Random(0))
    assert supply.scpi("SYST:LOCK?") == "OFF"
    assert supply.scpi("SOUR:VOLT 100") is None
    assert supply.scpi("OUTP ON") is None
    assert supply.scpi("SOUR:VOLT?;OUTP?") == "0.00 V;OFF"
    assert supply.scpi("SYST:ERR?") == '-203,"Command protected"'
    assert supply.scpi("SYST:ERR?") == '-203,"Command protected"'
    assert supply.scpi("SYST:ERR?") == '0,"No error"'
    assert supply.scpi("syst:lock on;SYST:LOCK?") == "ON"
    assert supply.scpi("SOUR:VOLT 100;SOUR:VOLT?") == "100.00 V"


def test_setpoints_short_long_forms_and_units(psu: Supply) -> None:
    assert psu.scpi("SOUR:VOLT 900") is None
    assert psu.scpi("SOUR:VOLT?") == "900.00 V"
    psu.scpi("SOURce:VOLTage 812.4V")
    assert psu.scpi("sour:volt?") == "812.40 V"
    psu.scpi("VOLT 850 V")  # SOURce is the optional node
    assert psu.scpi("SOURCE:VOLTAGE?") == "850.00 V"
    psu.scpi("SOUR:CURR 60;SINK:CURR 40.5;SOUR:POW 24000W")
    assert psu.scpi("SOUR:CURR?;SINK:CURR?;SOUR:POW?") == "60.00 A;40.50 A;24000 W"
    psu.scpi("SOUR:CURR MAX")
    assert psu.scpi("CURR?") == "80.00 A"
    assert psu.scpi("SYST:ERR?") == '0,"No error"'


def test_relative_header_path_after_semicolon(psu: Supply) -> None:
    psu.scpi("SINK:CURR 10;POW 5000")
    assert psu.scpi("SINK:POW?;:SOUR:POW?") == "5000 W;30000 W"


def test_out_of_range_keeps_setpoint_and_queues_222(psu: Supply) -> None:
    psu.scpi("SOUR:VOLT 500")
    psu.scpi("SOUR:VOLT 1000.01")
    psu.scpi("SOUR:CURR -1")
    psu.scpi("SINK:CURR 81")
    psu.scpi("SOUR:POW 30001")
    assert psu.scpi("SOUR:VOLT?;SOUR:CURR?;SINK:CURR?;SOUR:POW?") == "500.00 V;0.00 A;0.00 A;30000 W"
    assert [psu.scpi("SYST:ERR?") for _ in range(5)] == ['-222,"Data out of range"'] * 4 + ['0,"No error"']


def test_errors_undefined_illegal_missing(psu: Supply) -> None:
    psu.scpi("SOUR:FOO 1")
    psu.scpi("BOGUS?")
    psu.scpi("SOUR:VOLT abc")
    psu.scpi("SOUR:VOLT 10A")
    psu.scpi("OUTP MAYBE")
    psu.scpi("SOUR:VOLT")
    psu.scpi("MEAS:VOLT 5")
    assert psu.scpi("SYST:ERR?;SYST:ERR?;SYST:ERR?;SYST:ERR?;SYST:ERR?;SYST:ERR?;SYST:ERR?;SYST:ERR?") == (
        '-113,"Undefined header";-113,"Undefined header";-224,"Illegal parameter value";'
        '-224,"Illegal parameter value";-224,"Illegal parameter value";-109,"Missing parameter";'
        '-113,"Undefined header";0,"No error"'
    )


def test_error_queue_overflow_and_cls(psu: Supply) -> None:
    for _ in range(25):
        psu.scpi("NOPE")
    replies = [psu.scpi("SYST:ERR?") for _ in range(21)]
    assert replies[:19] == ['-113,"Undefined header"'] * 19
    assert replies[19:] == ['-350,"Queue overflow"', '0,"No error"']
    psu.scpi("NOPE;*CLS")
    assert psu.scpi("SYSTem:ERRor?") == '0,"No error"'


def test_output_on_off_forms_and_rst(psu: Supply) -> None:
    psu.scpi("OUTP 1")
    assert psu.scpi("OUTP?") == "ON"
    psu.scpi("OUTPut off")
    assert psu.scpi("OUTP?") == "OFF"
    psu.scpi("OUTP ON;SOUR:VOLT 700;SOUR:CURR 20;SINK:CURR 5;SOUR:POW 1000")
    psu.scpi("*RST")
    assert psu.scpi("OUTP?;SOUR:VOLT?;SOUR:CURR?;SINK:CURR?;SOUR:POW?;SINK:POW?") == (
        "OFF;0.00 V;0.00 A;0.00 A;30000 W;30000 W"
    )


def test_measurement_formats_and_sign(psu: Supply) -> None:
    psu.measure(812.4, 60.0)
    assert psu.scpi("MEAS:VOLT?;MEAS:CURR?;MEAS:POW?") == "812.40 V;60.00 A;48744 W"
    psu.measure(800.0, -12.5)
    assert psu.scpi("MEASure:CURRent?;MEASure:POWer?") == "-12.50 A;-10000 W"
    psu.measure(0.0, -0.001)
    assert psu.scpi("MEAS:CURR?;MEAS:POW?") == "0.00 A;0 W"


def test_measurement_noise_is_small_and_seeded() -> None:
    a = Supply(SupplyRatings(), random.Random(7))
    b = Supply(SupplyRatings(), random.Random(7))
    readings = []
    for s in (a, b):
        s.measure(800.0, 60.0)
        readings.append(s.scpi("MEAS:VOLT?;MEAS:CURR?"))
    assert readings[0] == readings[1]
    assert abs(a.meas_voltage - 800.0) <= 0.05 and abs(a.meas_current - 60.0) <= 0.02
