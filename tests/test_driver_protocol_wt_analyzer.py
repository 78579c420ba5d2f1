"""Yokogawa WT5000 driver, byte for byte: every line it sends and every reply it must understand."""

from __future__ import annotations

import asyncio

import pytest

from bench.errors import DeviceError
from drivers.wt_analyzer import INTEGRATE_STATES, WtAnalyzerDriver
from tests.expected_protocol import Harness, ScpiScript, make, run_virtual, settle

OK = '0,"No error"'
IDN = "YOKOGAWA,WT5000,91N123456,F1.02"
SETUP = [
    ("*IDN?", IDN),
    ("*CLS", None),
    (":COMM:REM ON", None),
    (":COMM:HEAD OFF", None),
    (":COMM:VERB OFF", None),
    (":NUM:FORM ASC", None),
    (":NUM:NORM:NUMB 4", None),
    (":NUM:NORM:ITEM1 U,1", None),
    (":NUM:NORM:ITEM2 I,1", None),
    (":NUM:NORM:ITEM3 P,1", None),
    (":NUM:NORM:ITEM4 WP,1", None),
    (":STAT:ERR?", OK),
]
READ = ":NUM:NORM:VAL?;:INTEG:STAT?"
VALUES = "8.12400E+02,6.00000E+01,4.87440E+04,0.00000E+00;RES"
CONNECT = [*SETUP, (READ, VALUES)]
CLOSE = [(":COMM:REM OFF", None)]
CONFIG = {"transport": {"inproc": "pa"}, "elements": [1], "poll_interval": "1 s"}


def _run(script: ScpiScript, steps: object, config: dict[str, object] | None = None) -> Harness:
    h = Harness()

    async def main() -> None:
        d = make(WtAnalyzerDriver, config or CONFIG, "pa")
        await d.connect(h.context(asyncio.get_running_loop(), {"pa": script}))
        try:
            assert callable(steps)
            await steps(d)
        finally:
            await d.close()

    run_virtual(main)
    script.assert_done()
    return h


def test_connect_sets_up_items_and_reads_once() -> None:
    async def steps(d: WtAnalyzerDriver) -> None:
        assert await d.identify() == {
            "maker": "YOKOGAWA",
            "model": "WT5000",
            "serial": "91N123456",
            "firmware": "F1.02",
        }

    h = _run(ScpiScript([*CONNECT, *CLOSE]), steps)
    assert h.last("pa.voltage_1") == pytest.approx(812.4)
    assert h.last("pa.current_1") == pytest.approx(60.0)
    assert h.last("pa.power_1") == pytest.approx(48744.0)
    assert h.last("pa.energy_1") == 0.0
    assert h.last("pa.integrate") == INTEGRATE_STATES["RESET"]


def test_two_elements_get_eight_items_in_element_order() -> None:
    setup = [*SETUP[:6], (":NUM:NORM:NUMB 8", None)]
    setup += [
        (f":NUM:NORM:ITEM{k} {fn},{e}", None)
        for k, (e, fn) in enumerate([(e, fn) for e in (1, 3) for fn in ("U", "I", "P", "WP")], start=1)
    ]
    setup += [(":STAT:ERR?", OK), (READ, "1.0E+00,2.0E+00,2.0E+00,0.0E+00,3.0E+00,NAN,9.91E+37,1.5E+00;STAR")]
    h = _run(ScpiScript([*setup, *CLOSE]), lambda d: settle(), {**CONFIG, "elements": [1, 3]})
    assert h.last("pa.voltage_3") == 3.0
    assert h.last("pa.energy_3") == 1.5
    # "no data" replies publish nothing
    assert "pa.current_3" not in h.names() and "pa.power_3" not in h.names()
    assert h.last("pa.integrate") == INTEGRATE_STATES["START"]


def test_poll_every_interval() -> None:
    polls = [(READ, "8.0E+02,1.0E+01,8.0E+03,1.0E+00;STAR"), (READ, "8.0E+02,1.0E+01,8.0E+03,3.2E+00;STAR")]
    h = _run(ScpiScript([*CONNECT, *polls, *CLOSE]), lambda d: settle(2.0))
    assert h.last("pa.energy_1") == 3.2
    assert [t for n, _, t in h.samples if n == "pa.energy_1"] == [0.0, 1.0, 2.0]


@pytest.mark.parametrize(
    ("state", "command", "reply", "values"),
    [
        ("START", ":INTEG:STAR", "STAR", "8.0E+02,1.0E+01,8.0E+03,0.0E+00;STAR"),
        ("STOP", ":INTEG:STOP", "STOP", "8.0E+02,1.0E+01,8.0E+03,1.23456E+02;STOP"),
        ("RESET", ":INTEG:RES", "RES", "8.0E+02,1.0E+01,8.0E+03,0.0E+00;RES"),
        ("STOP", ":INTEG:STOP", "STOP", "8.0E+02,1.0E+01,8.0E+03,1.23456E+02;STOP"),
    ],
)
def test_integrate_commands_read_back_and_refresh_energy(state: str, command: str, reply: str, values: str) -> None:
    script = ScpiScript(
        [*CONNECT, (command, None), (":STAT:ERR?", OK), (":INTEG:STAT?", reply), (READ, values), *CLOSE]
    )

    async def steps(d: WtAnalyzerDriver) -> None:
        assert await d.set({"integrate": INTEGRATE_STATES[state]}) == {"integrate": INTEGRATE_STATES[state]}

    h = _run(script, steps)
    assert h.last("pa.integrate") == INTEGRATE_STATES[state]
    assert h.last("pa.energy_1") == float(values.split(";")[0].split(",")[3])


def test_long_form_state_replies_are_understood() -> None:
    script = ScpiScript([*CONNECT, (":INTEG:STAR", None), (":STAT:ERR?", OK), (":INTEG:STAT?", "START"),
                         (READ, "0,0,0,0;START"), *CLOSE])  # fmt: skip
    _run(script, lambda d: d.set({"integrate": INTEGRATE_STATES["START"]}))


def test_refused_integration_command_names_the_instrument_error() -> None:
    script = ScpiScript(
        [*CONNECT, (":INTEG:RES", None), (":STAT:ERR?", '221,"Settings conflict"'), (":STAT:ERR?", OK), *CLOSE]
    )

    async def steps(d: WtAnalyzerDriver) -> None:
        with pytest.raises(DeviceError) as info:
            await d.set({"integrate": INTEGRATE_STATES["RESET"]})
        assert str(info.value) == 'pa: instrument error after integrate RESET: 221,"Settings conflict"'

    _run(script, steps)


def test_state_not_reached_is_an_error() -> None:
    script = ScpiScript([*CONNECT, (":INTEG:STAR", None), (":STAT:ERR?", OK), (":INTEG:STAT?", "RES"), *CLOSE])

    async def steps(d: WtAnalyzerDriver) -> None:
        with pytest.raises(DeviceError, match="integrate read back RESET, expected START"):
            await d.set({"integrate": INTEGRATE_STATES["START"]})

    _run(script, steps)


def test_only_integrate_commands_can_be_set() -> None:
    async def steps(d: WtAnalyzerDriver) -> None:
        with pytest.raises(DeviceError, match="integrate can be set to RESET, START or STOP, not READY"):
            await d.set({"integrate": INTEGRATE_STATES["READY"]})
        with pytest.raises(DeviceError, match="'voltage_1' cannot be set"):
            await d.set({"voltage_1": 1.0})

    _run(ScpiScript([*CONNECT, *CLOSE]), steps)


def test_setup_error_and_wrong_instrument_refuse_connect() -> None:
    for script, message in [
        (
            ScpiScript([*SETUP[:-1], (":STAT:ERR?", '113,"Undefined header"'), (":STAT:ERR?", OK)]),
            'pa: instrument error after setting up the numeric items: 113,"Undefined header"',
        ),
        (
            ScpiScript([("*IDN?", "EA Elektro-Automatik,PSB 11000-80 4U,1,V3")]),
            "pa: *IDN? answered 'EA Elektro-Automatik,PSB 11000-80 4U,1,V3': not a Yokogawa WT power analyzer",
        ),
    ]:
        h = Harness()

        async def main(script: ScpiScript = script, h: Harness = h) -> str:
            d = make(WtAnalyzerDriver, CONFIG, "pa")
            with pytest.raises(DeviceError) as info:
                await d.connect(h.context(asyncio.get_running_loop(), {"pa": script}))
            return str(info.value)

        assert run_virtual(main) == message
        script.assert_done()


def test_repeatedly_short_replies_during_polling_are_a_device_fault() -> None:
    short = (READ, "8.0E+02,1.0E+01;STAR")
    h = _run(ScpiScript([*CONNECT, short, short, short, *CLOSE]), lambda d: settle(3.5))
    assert h.faults == [
        (
            "pa",
            "3 measurements in a row failed, last: "
            "expected 4 values and the integrator state, got '8.0E+02,1.0E+01;STAR'",
        )
    ]


def test_config_is_checked_at_load() -> None:
    from bench.device import ConfigError

    with pytest.raises(ConfigError, match=r"elements: expected a list of distinct element numbers 1\.\.7"):
        make(WtAnalyzerDriver, {**CONFIG, "elements": [0]})
    with pytest.raises(ConfigError, match="poll_interval: expected a duration > 0"):
        make(WtAnalyzerDriver, {**CONFIG, "poll_interval": "5 V"})
    with pytest.raises(ConfigError, match="unknown key 'port'"):
        make(WtAnalyzerDriver, {**CONFIG, "port": 1})
