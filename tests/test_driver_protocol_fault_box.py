"""Fault-injection box driver, byte for byte: every line it sends and every reply it must understand."""

from __future__ import annotations

from typing import Any

import pytest

from bench.device import ConfigError
from drivers.fault_box import FaultBoxDriver
from tests.driver_sets import assert_set_reads_back, refused_sets
from tests.expected_protocol import OK, Harness, ScpiScript, connect_error, connected, make, run_virtual, settle

IDN = "BENCH-SIM,FAULT INSERTION BOX FIB-16,SIM0FIB001,1.0 (simulated)"
CHANNELS: dict[str, Any] = {
    "open_wire": {"scpi": "OPEN:CELL", "doc": "cell sense line opened (0 = none)", "min": 0, "max": 192},
    "iso_ro": {"scpi": "ISO:RES", "unit": "kOhm", "min": 0, "max": 10000},
    "ext_short": {"scpi": "SHOR:EXT", "states": {"OPEN": 0, "CLOSED": 1}},
    "short_res": {"scpi": "SHOR:RES", "unit": "mOhm", "min": 0.1, "max": 100},
    "valve_position": {"scpi": "VALV:POS", "states": {"CLOSED": 0, "OPEN": 1}, "read_only": True},
}
CONFIG = {"transport": {"inproc": "fib"}, "poll_interval": "1 s", "channels": CHANNELS}
CONNECT = [
    ("*IDN?", IDN),
    ("*CLS", None),
    ("SYST:ERR?", OK),
    ("OPEN:CELL?", "0"),
    ("ISO:RES?", "0.0"),
    ("SHOR:EXT?", "0"),
    ("SHOR:RES?", "100.0"),
    ("VALV:POS?", "0"),
    ("SYST:ERR?", OK),
]
POLL = ("VALV:POS?", "1")


def _driver(config: dict[str, Any] | None = None) -> FaultBoxDriver:
    return make(FaultBoxDriver, CONFIG if config is None else config, "fib")


def test_signals_follow_the_channel_table() -> None:
    sig = {s.name: s for s in _driver().signals()}
    assert list(sig) == ["fib.open_wire", "fib.iso_ro", "fib.ext_short", "fib.short_res", "fib.valve_position"]
    assert sig["fib.iso_ro"].unit.text == "kOhm" and sig["fib.iso_ro"].maximum == 10000.0
    assert sig["fib.short_res"].unit.text == "mOhm" and sig["fib.short_res"].minimum == 0.1
    assert sig["fib.ext_short"].choices == {"OPEN": 0, "CLOSED": 1} and sig["fib.ext_short"].writable
    assert not sig["fib.valve_position"].writable
    assert sig["fib.open_wire"].doc == "cell sense line opened (0 = none) (OPEN:CELL, set and read back)"


def test_connect_reads_every_channel_and_polls_sense_inputs() -> None:
    script = ScpiScript([*CONNECT, POLL, POLL])
    h = Harness()

    async def main() -> dict[str, str]:
        async with connected(_driver(), h, {"fib": script}) as d:
            await settle()  # first poll right after connecting
            await settle(1.0)  # and one per poll_interval
            return await d.identify()

    ident = run_virtual(main)
    script.assert_done()
    assert ident == {
        "maker": "BENCH-SIM",
        "model": "FAULT INSERTION BOX FIB-16",
        "serial": "SIM0FIB001",
        "firmware": "1.0 (simulated)",
    }
    assert h.last("fib.short_res") == 100.0 and h.last("fib.open_wire") == 0.0
    assert h.last("fib.valve_position") == 1.0
    assert not h.faults


def test_no_sense_input_no_poll() -> None:
    config = {"transport": {"inproc": "fib"}, "channels": {"heater": {"scpi": "HEAT", "unit": "W", "max": 5000}}}
    script = ScpiScript([("*IDN?", IDN), ("*CLS", None), ("SYST:ERR?", OK), ("HEAT?", "0.0"), ("SYST:ERR?", OK)])
    h = Harness()

    async def main() -> None:
        async with connected(_driver(config), h, {"fib": script}):
            await settle(5.0)

    run_virtual(main)
    script.assert_done()


@pytest.mark.parametrize(
    ("signal", "value", "sent", "query", "reply", "expected"),
    [
        ("open_wire", 17.0, "OPEN:CELL 17", "OPEN:CELL?", "17", 17.0),
        ("open_wire", 0.0, "OPEN:CELL 0", "OPEN:CELL?", "0", 0.0),
        ("iso_ro", 79.46, "ISO:RES 79.46", "ISO:RES?", "79.46", 79.46),
        ("ext_short", 1.0, "SHOR:EXT 1", "SHOR:EXT?", "1", 1.0),
        ("short_res", 5.0, "SHOR:RES 5", "SHOR:RES?", "5.0", 5.0),
        ("short_res", 0.1, "SHOR:RES 0.1", "SHOR:RES?", "0.1", 0.1),
    ],
)
def test_set_writes_reads_back_and_checks_errors(
    signal: str, value: float, sent: str, query: str, reply: str, expected: float
) -> None:
    assert_set_reads_back(_driver(), "fib", [*CONNECT, POLL], signal, value, sent, (query, reply), expected)


def test_instrument_error_fails_the_set_with_its_words() -> None:
    script = ScpiScript(
        [
            *CONNECT,
            POLL,
            ("OPEN:CELL 200", None),
            ("OPEN:CELL?", "0"),
            ("SYST:ERR?", '-222,"Data out of range"'),
            ("SYST:ERR?", OK),
        ]
    )
    assert refused_sets(_driver(), "fib", script, [{"open_wire": 200.0}]) == [
        'fib: instrument error after setting open_wire: -222,"Data out of range"'
    ]


def test_readback_mismatch_and_read_only_are_errors() -> None:
    script = ScpiScript([*CONNECT, POLL, ("ISO:RES 80", None), ("ISO:RES?", "0.0"), ("SYST:ERR?", OK)])
    attempts: list[dict[str, float]] = [{"iso_ro": 80.0}, {"valve_position": 1.0}, {"heater": 1.0}]
    assert refused_sets(_driver(), "fib", script, attempts) == [
        "fib: iso_ro read back 0, expected 80",
        "fib: 'valve_position' is a sense input (VALV:POS?) and cannot be set",
        "fib: 'heater' is not a channel of this box",
    ]


def test_a_channel_the_box_does_not_have_is_named_at_connect() -> None:
    script = ScpiScript([("*IDN?", IDN), ("*CLS", None), ("SYST:ERR?", OK), ("OPEN:CELL?", None)])
    d = _driver({"transport": {"inproc": "fib"}, "channels": {"open_wire": CHANNELS["open_wire"]}})
    assert run_virtual(lambda: connect_error(d, {"fib": script})) == (
        "fib: channel open_wire: 'OPEN:CELL?' failed (fib: timeout waiting for the reply to 'OPEN:CELL?':"
        " no reply to 'OPEN:CELL?'); is it a channel of this box?"
    )
    script.assert_done()


def test_model_check_refuses_another_instrument_before_any_write() -> None:
    script = ScpiScript([("*IDN?", "EA Elektro-Automatik,PSB 11000-80 4U,2211000123,V3.02")])
    d = _driver({**CONFIG, "model": "FIB-16"})
    assert run_virtual(lambda: connect_error(d, {"fib": script})) == (
        "fib: *IDN? answered 'EA Elektro-Automatik,PSB 11000-80 4U,2211000123,V3.02': not a 'FIB-16' (wrong address?)"
    )
    script.assert_done()


def test_repeatedly_unparsable_sense_readings_are_a_device_fault() -> None:
    bad = ("VALV:POS?", "garbage")
    script = ScpiScript([*CONNECT, bad, bad, bad])
    h = Harness()

    async def main() -> None:
        async with connected(_driver(), h, {"fib": script}):
            await settle(2.5)

    run_virtual(main)
    script.assert_done()
    assert h.faults == [("fib", "3 readings in a row failed, last: not a number: 'garbage'")]


@pytest.mark.parametrize(
    ("channels", "message"),
    [
        ({}, "a fault-injection box needs 'channels'"),
        ({"x": {"unit": "W"}}, "channels.x: scpi: expected a SCPI header"),
        ({"x": {"scpi": "HEAT?"}}, "channels.x: scpi: expected a SCPI header"),
        ({"x": {"scpi": "HEAT", "unit": "furlong"}}, "channels.x: unit: unknown unit 'furlong'"),
        ({"x": {"scpi": "HEAT", "maxi": 5}}, "channels.x: unknown key 'maxi'"),
        ({"x": {"scpi": "HEAT", "min": 5, "max": 1}}, "channels.x: min (5) is above max (1)"),
        ({"x": {"scpi": "HEAT", "max": "5 kW"}}, "channels.x: max: expected a number in the channel's unit"),
        ({"x": {"scpi": "S", "states": {"OPEN": 0}, "unit": "V"}}, "channels.x: a channel with 'states' takes no"),
        ({"x": {"scpi": "S", "states": {"A": 0, "B": 0}}}, "channels.x: states: two states share one value"),
        ({"x": {"scpi": "S", "read_only": "yes"}}, "channels.x: read_only: expected true or false"),
        ({"x": {"scpi": "S"}, "y": {"scpi": "s"}}, "channels: SCPI keyword 'S' is used by more than one channel"),
        ({"1x": {"scpi": "S"}}, "channels.1x: a channel name is a signal name"),
    ],
)
def test_bad_channel_table_names_the_key(channels: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        _driver({"transport": {"inproc": "fib"}, "channels": channels})
    assert info.value.key == "channels"
