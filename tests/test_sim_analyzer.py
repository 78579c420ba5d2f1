"""The simulated Yokogawa WT5000, at the SCPI text level, and its coupling to the plant."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from simulators.analyzer import AnalyzerSpec, PowerAnalyzer
from simulators.plant import build_plant


@pytest.fixture
def pa() -> PowerAnalyzer:
    return PowerAnalyzer(AnalyzerSpec(elements=2, serial="SN9", noise_v=0.0, noise_a=0.0), random.Random(0))


def test_idn_and_empty_error_queue(pa: PowerAnalyzer) -> None:
    assert pa.scpi("*IDN?") == "YOKOGAWA,WT5000,SN9,F1.02 (simulated)"
    assert pa.scpi(":STATus:ERRor?") == '0,"No error"'
    assert pa.scpi("*CLS") is None
    assert pa.scpi("*OPC?") == "1"


def test_wrong_commands_leave_errors_in_the_queue(pa: PowerAnalyzer) -> None:
    assert pa.scpi(":NUM:NORM:FOO?") is None
    assert pa.scpi(":NUM:NORM:ITEM1 X,1") is None
    assert pa.scpi(":NUM:NORM:ITEM1 U,9") is None
    assert pa.scpi(":NUM:FORM FLOAT") is None
    assert pa.scpi(":INTEG:STOP") is None  # never started
    assert pa.scpi(":STAT:ERR?;:STAT:ERR?") == '113,"Undefined header";224,"Illegal parameter value"'
    assert pa.scpi(":STAT:ERR?") == '222,"Data out of range"'
    assert pa.scpi(":STAT:ERR?") == '224,"Illegal parameter value"'
    assert pa.scpi(":STAT:ERR?") == '221,"Settings conflict"'
    assert pa.scpi(":STAT:ERR?") == '0,"No error"'
    for _ in range(25):
        pa.scpi("BOGUS")
    assert len(pa.errors) == 20 and pa.errors[-1] == (350, "Queue overflow")


def test_items_long_and_short_forms(pa: PowerAnalyzer) -> None:
    pa.scpi(":NUMERIC:NORMAL:NUMBER 4")
    pa.scpi(":NUM:NORM:ITEM1 U,1;:NUM:NORM:ITEM2 I,2;:numeric:normal:item3 p,1;:NUM:NORM:ITEM4 WP,2")
    assert pa.scpi(":NUM:NORM:NUMB?;:NUM:NORM:ITEM2?;:NUM:NORM:ITEM4?") == "4;I,2;WP,2"
    pa.measure(0.1, [(800.0, 50.0), (10.0, -2.0)])
    assert pa.scpi(":NUM:NORM:VAL?") == "8.00000E+02,-2.00000E+00,4.00000E+04,0.00000E+00"
    assert pa.scpi(":STAT:ERR?") == '0,"No error"'


def test_integration_counts_only_while_started(pa: PowerAnalyzer) -> None:
    pa.scpi(":NUM:NORM:NUMB 2;:NUM:NORM:ITEM1 WP,1;:NUM:NORM:ITEM2 TIME,1")
    assert pa.scpi(":INTEG:STAT?") == "RES"
    for _ in range(10):
        pa.measure(0.1, [(720.0, 50.0)])  # 36 kW, not integrating
    assert pa.scpi(":NUM:NORM:VAL?") == "0.00000E+00,0.00000E+00"
    pa.scpi(":INTEGRATE:START")
    for _ in range(100):
        pa.measure(0.1, [(720.0, 50.0)])  # 10 s at 36 kW = 100 Wh
    pa.scpi(":INTEG:STOP")
    assert pa.scpi(":INTEG:STAT?") == "STOP"
    for _ in range(10):
        pa.measure(0.1, [(720.0, 50.0)])
    wp, t = (float(x) for x in pa.scpi(":NUM:NORM:VAL?").split(","))  # type: ignore[union-attr]
    assert wp == pytest.approx(100.0) and t == pytest.approx(10.0)
    pa.scpi(":INTEG:STAR")  # continue after a stop
    pa.measure(1.0, [(720.0, 50.0)])
    assert pa.scpi(":INTEG:RES") is None  # refused while running
    assert pa.scpi(":STAT:ERR?") == '221,"Settings conflict"'
    pa.scpi(":INTEG:STOP;:INTEG:RES")
    assert pa.scpi(":INTEG:STAT?;:NUM:NORM:VAL?") == "RES;0.00000E+00,0.00000E+00"


def test_values_follow_the_plant_supply_output() -> None:
    endpoints: dict[str, object] = {}
    dbc = str(Path(__file__).resolve().parents[1] / "dbc" / "bms.dbc")
    plant = build_plant(
        {"dbc": dbc, "can_channel": "pa-test", "supply": {"noise_v": 0, "noise_a": 0}},
        faults=[],
        seed=1,
        register=endpoints.__setitem__,
    )
    # The rig's fault box, pack emulation, chamber and DAQ mainframes are endpoints of the same plant.
    assert {"psu", "pa", "h2", "fib", "emu", "chamber", "daq"} <= set(endpoints)
    assert set(endpoints) - {"psu", "pa", "h2", "fib", "emu", "chamber"} == {
        name for name in endpoints if name.startswith("daq")
    }
    pa = endpoints["pa"]
    assert isinstance(pa, PowerAnalyzer)
    psu = endpoints["psu"]
    psu.scpi("SYST:LOCK ON;SOUR:VOLT 400;SOUR:CURR 1;OUTP ON")  # type: ignore[attr-defined]
    plant.step(0.1, 0.1)  # contactors open: the supply holds the link at its set voltage
    u, i = (float(x) for x in pa.scpi(":NUM:NORM:VAL?").split(",")[:2])  # type: ignore[union-attr]
    assert u == pytest.approx(400.0, abs=0.05) and i == pytest.approx(0.0, abs=0.01)
