"""Climate chamber driver, byte for byte: every line it sends and every reply it must understand."""

from __future__ import annotations

import pytest

from bench.device import ConfigError
from drivers.chamber import ChamberDriver
from tests.driver_sets import assert_set_reads_back, refused_sets
from tests.expected_protocol import OK, Harness, ScpiScript, connect_error, connected, make, run_virtual, settle

IDN = "BENCH-SIM,CLIMATE CHAMBER TC-600,SIM00CH001,1.0 (simulated)"
CONNECT = [
    ("*IDN?", IDN),
    ("*CLS", None),
    ("SYST:ERR?", OK),
    ("TEMP:SET?", "25.00"),
    ("RAMP?", "0.00"),
    ("COOL?", "ON"),
]
POLL = ("TEMP?", "24.98")
CONFIG = {"transport": {"inproc": "chamber"}, "poll_interval": "1 s"}


def _driver(config: dict[str, object] | None = None) -> ChamberDriver:
    return make(ChamberDriver, CONFIG if config is None else config, "chamber")


def test_signals_units_and_ranges() -> None:
    sig = {s.name: s for s in _driver({**CONFIG, "temp_max": "100 degC", "ramp_max": "3 K/min"}).signals()}
    assert list(sig) == ["chamber.temp_set", "chamber.ramp", "chamber.cooling", "chamber.temp"]
    assert sig["chamber.temp_set"].unit.text == "degC" and sig["chamber.temp_set"].writable
    assert (sig["chamber.temp_set"].minimum, sig["chamber.temp_set"].maximum) == (-40.0, 100.0)
    assert sig["chamber.ramp"].unit.text == "K/min" and sig["chamber.ramp"].maximum == 3.0
    assert sig["chamber.cooling"].choices == {"OFF": 0, "ON": 1}
    assert not sig["chamber.temp"].writable


def test_connect_reads_setpoints_and_polls_the_air_temperature() -> None:
    script = ScpiScript([*CONNECT, POLL, POLL])
    h = Harness()

    async def main() -> dict[str, str]:
        async with connected(_driver(), h, {"chamber": script}) as d:
            await settle()
            await settle(1.0)
            return await d.identify()

    ident = run_virtual(main)
    script.assert_done()
    assert ident["model"] == "CLIMATE CHAMBER TC-600" and ident["serial"] == "SIM00CH001"
    assert h.last("chamber.temp_set") == 25.0
    assert h.last("chamber.ramp") == 0.0
    assert h.last("chamber.cooling") == 1.0
    assert h.last("chamber.temp") == pytest.approx(24.98)
    assert not h.faults


@pytest.mark.parametrize(
    ("signal", "value", "sent", "query", "reply", "expected"),
    [
        ("temp_set", 80.0, "TEMP 80", "TEMP:SET?", "80.00", 80.0),
        ("temp_set", -20.5, "TEMP -20.5", "TEMP:SET?", "-20.50", -20.5),
        ("ramp", 2.0, "RAMP 2", "RAMP?", "2.00", 2.0),
        ("ramp", 0.0, "RAMP 0", "RAMP?", "0.00", 0.0),
        ("cooling", 0.0, "COOL OFF", "COOL?", "OFF", 0.0),
        ("cooling", 1.0, "COOL ON", "COOL?", "ON", 1.0),
    ],
)
def test_set_writes_reads_back_and_checks_errors(
    signal: str, value: float, sent: str, query: str, reply: str, expected: float
) -> None:
    assert_set_reads_back(_driver(), "chamber", [*CONNECT, POLL], signal, value, sent, (query, reply), expected)


def test_instrument_error_fails_the_set_with_its_words() -> None:
    script = ScpiScript(
        [
            *CONNECT,
            POLL,
            ("RAMP 12", None),
            ("RAMP?", "0.00"),
            ("SYST:ERR?", '-222,"Data out of range"'),
            ("SYST:ERR?", OK),
        ]
    )
    assert refused_sets(_driver(), "chamber", script, [{"ramp": 12.0}]) == [
        'chamber: instrument error after setting ramp: -222,"Data out of range"'
    ]


def test_readback_mismatch_and_unknown_signal_are_errors() -> None:
    script = ScpiScript([*CONNECT, POLL, ("TEMP 60", None), ("TEMP:SET?", "25.00"), ("SYST:ERR?", OK)])
    attempts: list[dict[str, float]] = [{"temp_set": 60.0}, {"temp": 30.0}]
    assert refused_sets(_driver(), "chamber", script, attempts) == [
        "chamber: temp_set read back 25, expected 60",
        "chamber: 'temp' cannot be set",
    ]


def test_model_check_refuses_another_instrument_before_any_write() -> None:
    script = ScpiScript([("*IDN?", "YOKOGAWA,WT5000,91N123456,F1.02")])
    d = _driver({**CONFIG, "model": "TC-600"})
    assert (
        run_virtual(lambda: connect_error(d, {"chamber": script}))
        == "chamber: *IDN? answered 'YOKOGAWA,WT5000,91N123456,F1.02': not a 'TC-600' (wrong address?)"
    )
    script.assert_done()


def test_repeatedly_unparsable_temperatures_are_a_device_fault() -> None:
    bad = ("TEMP?", "--.--")
    script = ScpiScript([*CONNECT, bad, bad, bad])
    h = Harness()

    async def main() -> None:
        async with connected(_driver(), h, {"chamber": script}):
            await settle(2.5)

    run_virtual(main)
    script.assert_done()
    assert h.faults == [("chamber", "3 measurements in a row failed, last: not a number: '--.--'")]


@pytest.mark.parametrize(
    ("config", "key", "message"),
    [
        ({"transport": {"inproc": "chamber"}, "temp_max": "100 V"}, "temp_max", "expected a value in degC"),
        ({"transport": {"inproc": "chamber"}, "temp_min": "50 degC", "temp_max": "40 degC"}, "temp_min", "below"),
        ({"transport": {"inproc": "chamber"}, "ramp_max": "0 K/min"}, "ramp_max", "ramp_max must be > 0"),
        ({"transport": {"inproc": "chamber"}, "ramp": "5 K/min"}, "ramp", "unknown key 'ramp'"),
        ({}, "transport", "a climate chamber needs 'transport'"),
    ],
)
def test_bad_config_names_the_key(config: dict[str, object], key: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        _driver(config)
    assert info.value.key == key
