"""EA PSB 10000 driver, byte for byte: every line it sends and every reply it must understand."""

from __future__ import annotations

import asyncio

import pytest

from bench.errors import DeviceError
from drivers.ea_psb import EaPsbDriver
from tests.expected_protocol import Harness, ScpiScript, make, run_virtual, settle

OK = '0,"No error"'
IDN = "EA Elektro-Automatik,PSB 11000-80 4U,2211000123,V3.02,KE 3.01"
CONNECT = [
    ("*IDN?", IDN),
    ("*CLS", None),
    ("SYST:LOCK ON", None),
    ("SYST:ERR?", OK),
    ("SOUR:VOLT?", "0.00 V"),
    ("SOUR:CURR?", "0.00 A"),
    ("SINK:CURR?", "0.00 A"),
    ("SOUR:POW?", "30000 W"),
    ("OUTP?", "OFF"),
]
POLL = ("MEAS:VOLT?;MEAS:CURR?;MEAS:POW?", "812.40 V;-1.50 A;-1219 W")
CONFIG = {"transport": {"inproc": "psu"}, "poll_interval": "1 s"}


def _driver() -> EaPsbDriver:
    d = make(EaPsbDriver, CONFIG, "psu")
    assert isinstance(d, EaPsbDriver)
    return d


def test_connect_reads_setpoints_and_polls_measurements() -> None:
    script = ScpiScript([*CONNECT, POLL, POLL])
    h = Harness()

    async def main() -> None:
        d = _driver()
        await d.connect(h.context(asyncio.get_running_loop(), {"psu": script}))
        await settle()  # first poll right after connecting
        await settle(1.0)  # and one per poll_interval
        await d.close()

    script.add([("SYST:LOCK OFF", None)])
    run_virtual(main)
    script.assert_done()
    assert h.last("psu.voltage_set") == 0.0
    assert h.last("psu.power_set") == 30000.0
    assert h.last("psu.output") == 0.0
    assert h.last("psu.voltage") == pytest.approx(812.4)
    assert h.last("psu.current") == pytest.approx(-1.5)
    assert h.last("psu.power") == pytest.approx(-1219.0)
    assert not h.faults


def test_identify_returns_the_idn_read_first_at_connect() -> None:
    script = ScpiScript([*CONNECT, POLL])
    h = Harness()

    async def main() -> dict[str, str]:
        d = _driver()
        await d.connect(h.context(asyncio.get_running_loop(), {"psu": script}))
        await settle()
        ident = await d.identify()
        await d.close()
        return ident

    script.exchanges.append(("SYST:LOCK OFF", None))
    ident = run_virtual(main)
    script.assert_done()
    assert ident == {
        "maker": "EA Elektro-Automatik",
        "model": "PSB 11000-80 4U",
        "serial": "2211000123",
        "firmware": "V3.02,KE 3.01",
    }


@pytest.mark.parametrize(
    ("signal", "value", "sent", "query", "reply", "expected"),
    [
        ("voltage_set", 850.0, "SOUR:VOLT 850", "SOUR:VOLT?", "850.00 V", 850.0),
        ("current_set", 60.5, "SOUR:CURR 60.5", "SOUR:CURR?", "60.50 A", 60.5),
        ("sink_current_set", 40.0, "SINK:CURR 40", "SINK:CURR?", "40.00 A", 40.0),
        ("power_set", 60000.0, "SOUR:POW 60000", "SOUR:POW?", "60000 W", 60000.0),
        ("output", 1.0, "OUTP ON", "OUTP?", "ON", 1.0),
        ("output", 0.0, "OUTP OFF", "OUTP?", "OFF", 0.0),
    ],
)
def test_set_writes_reads_back_and_checks_errors(
    signal: str, value: float, sent: str, query: str, reply: str, expected: float
) -> None:
    script = ScpiScript([*CONNECT, POLL, (sent, None), (query, reply), ("SYST:ERR?", OK), ("SYST:LOCK OFF", None)])
    h = Harness()

    async def main() -> dict[str, float]:
        d = _driver()
        await d.connect(h.context(asyncio.get_running_loop(), {"psu": script}))
        await settle()
        rb = await d.set({signal: value})
        await d.close()
        return rb

    assert run_virtual(main) == {signal: expected}
    script.assert_done()
    assert h.last(f"psu.{signal}") == expected


def test_instrument_error_fails_the_set_with_its_words() -> None:
    script = ScpiScript(
        [
            *CONNECT,
            POLL,
            ("SOUR:VOLT 1200", None),
            ("SOUR:VOLT?", "0.00 V"),
            ("SYST:ERR?", '-222,"Data out of range"'),
            ("SYST:ERR?", OK),
            ("SYST:LOCK OFF", None),
        ]
    )
    h = Harness()

    async def main() -> str:
        d = _driver()
        await d.connect(h.context(asyncio.get_running_loop(), {"psu": script}))
        await settle()
        try:
            await d.set({"voltage_set": 1200.0})
        except DeviceError as exc:
            return str(exc)
        finally:
            await d.close()
        return ""

    assert run_virtual(main) == 'psu: instrument error after setting voltage_set: -222,"Data out of range"'
    script.assert_done()


def test_readback_mismatch_is_an_error() -> None:
    script = ScpiScript(
        [*CONNECT, POLL, ("SOUR:CURR 60", None), ("SOUR:CURR?", "59.00 A"), ("SYST:ERR?", OK), ("SYST:LOCK OFF", None)]
    )
    h = Harness()

    async def main() -> str:
        d = _driver()
        await d.connect(h.context(asyncio.get_running_loop(), {"psu": script}))
        await settle()
        with pytest.raises(DeviceError) as info:
            await d.set({"current_set": 60.0})
        await d.close()
        return str(info.value)

    assert run_virtual(main) == "psu: current_set read back 59, expected 60"
    script.assert_done()


def test_error_at_connect_refuses_remote_control() -> None:
    script = ScpiScript(
        [
            ("*IDN?", IDN),
            ("*CLS", None),
            ("SYST:LOCK ON", None),
            ("SYST:ERR?", '-203,"Command protected"'),
            ("SYST:ERR?", OK),
        ]
    )
    h = Harness()

    async def main() -> str:
        d = _driver()
        with pytest.raises(DeviceError) as info:
            await d.connect(h.context(asyncio.get_running_loop(), {"psu": script}))
        return str(info.value)

    assert run_virtual(main) == 'psu: instrument error after taking remote control: -203,"Command protected"'
    script.assert_done()


def test_another_instrument_at_the_address_is_refused_before_any_write() -> None:
    script = ScpiScript([("*IDN?", "YOKOGAWA,WT5000,91N123456,F1.02")])
    h = Harness()

    async def main() -> str:
        d = _driver()
        with pytest.raises(DeviceError) as info:
            await d.connect(h.context(asyncio.get_running_loop(), {"psu": script}))
        return str(info.value)

    assert run_virtual(main) == (
        "psu: *IDN? answered 'YOKOGAWA,WT5000,91N123456,F1.02': not an EA PSB supply (wrong address?)"
    )
    script.assert_done()


def test_repeatedly_unparsable_measurements_are_a_device_fault() -> None:
    bad = ("MEAS:VOLT?;MEAS:CURR?;MEAS:POW?", "812.40 V;garbage;1 W")
    script = ScpiScript([*CONNECT, bad, bad, bad, ("SYST:LOCK OFF", None)])
    h = Harness()

    async def main() -> None:
        d = _driver()
        await d.connect(h.context(asyncio.get_running_loop(), {"psu": script}))
        await settle(2.5)  # three polls, one per poll_interval (1 s)
        await d.close()

    run_virtual(main)
    script.assert_done()
    assert h.faults == [("psu", "3 measurements in a row failed, last: not a number: 'garbage'")]
