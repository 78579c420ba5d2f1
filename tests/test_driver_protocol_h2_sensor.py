"""Serial H2 sensor driver, byte for byte: the bytes it writes, the lines it parses, and how a
lost port or a silent stream becomes a device fault with a clear reason."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from bench.device import ConfigError
from bench.errors import DeviceError
from drivers.h2_sensor import H2SensorDriver, LineError, parse_line
from tests.expected_protocol import Harness, SerialScript, make, run_virtual, settle

LINE = b"$H2,0.012,30.0,0000*66\r\n"
ID_LINE = b"$ID,H2scan,HY-OPTIMA 740,SN1,2.4.1*52\r\n"
CONFIG = {"transport": {"inproc": "h2"}, "period": "1 s", "silence_periods": 3}


def _run(
    dev: SerialScript, steps: Callable[[H2SensorDriver, SerialScript], Awaitable[None]], config: dict | None = None
) -> Harness:
    h = Harness()

    async def main() -> None:
        d = make(H2SensorDriver, config or CONFIG, "h2")
        assert isinstance(d, H2SensorDriver)
        loop = asyncio.get_running_loop()
        loop.call_later(0.5, dev.push, LINE)  # the first line of the stream
        await d.connect(h.context(loop, {"h2": dev}))
        try:
            await steps(d, dev)
        finally:
            await d.close()

    run_virtual(main)
    dev.assert_done()
    return h


def test_parse_line_checks_the_checksum() -> None:
    assert parse_line(LINE) == ("H2", ["0.012", "30.0", "0000"])
    assert parse_line(ID_LINE) == ("ID", ["H2scan", "HY-OPTIMA 740", "SN1", "2.4.1"])
    for bad in (b"$H2,0.013,30.0,0000*66\r\n", b"H2,0.012,30.0,0000*66\r\n", b"$H2,0.012*ZZ\r\n", b"\r\n"):
        with pytest.raises(LineError):
            parse_line(bad)


def test_connect_waits_for_the_first_line_and_publishes_it() -> None:
    async def steps(d: H2SensorDriver, dev: SerialScript) -> None:
        dev.push(b"$H2,1.250,31.5,0001*")
        dev.push(b"66\r\n")  # a line split across reads
        await settle()

    h = _run(SerialScript(), steps)
    assert [(n, v) for n, v, _ in h.samples] == [
        ("h2.concentration", 0.012), ("h2.temperature", 30.0), ("h2.fault", 0.0), ("h2.status", 0.0),
        ("h2.concentration", 1.25), ("h2.temperature", 31.5), ("h2.fault", 1.0), ("h2.status", 1.0),
    ]  # fmt: skip
    assert [t for n, _, t in h.samples if n == "h2.concentration"] == [0.5, 0.5]
    assert not h.faults


def test_identify_sends_id_query_and_parses_the_reply() -> None:
    async def steps(d: H2SensorDriver, dev: SerialScript) -> None:
        assert await d.identify() == {
            "maker": "H2scan", "model": "HY-OPTIMA 740", "serial": "SN1", "firmware": "2.4.1", "port": "inproc:h2",
        }  # fmt: skip

    _run(SerialScript([(b"ID?\r\n", ID_LINE)]), steps)


def test_identify_without_answer_is_recorded_not_fatal() -> None:
    async def steps(d: H2SensorDriver, dev: SerialScript) -> None:
        loop = asyncio.get_running_loop()
        for k in range(1, 4):
            loop.call_later(k, dev.push, LINE)  # the stream goes on while nobody answers ID?
        assert await d.identify() == {"port": "inproc:h2", "identity": "no answer to ID? within 3 s"}

    _run(SerialScript([(b"ID?\r\n", None)]), steps)


def test_garbage_is_counted_and_does_not_count_as_data() -> None:
    async def steps(d: H2SensorDriver, dev: SerialScript) -> None:
        loop = asyncio.get_running_loop()
        for k in range(1, 3):
            loop.call_later(k, dev.push, b"$H2,0.5,30.0,0000*00\r\n")  # bad checksum at 1.5 s and 2.5 s
        await settle(5.0)
        assert d.bad_lines == 2

    h = _run(SerialScript(), steps)
    assert h.faults == [("h2", "no data from inproc:h2 for 3 s")]


def test_silence_longer_than_n_periods_is_a_fault_naming_the_port() -> None:
    async def steps(d: H2SensorDriver, dev: SerialScript) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(1.0, dev.push, LINE)
        await settle(4.4)
        assert h.faults == []
        await settle(0.2)  # last line at 1.5 s + 3 x 1 s

    h = Harness()
    h = _run(SerialScript(), steps)
    assert h.faults == [("h2", "no data from inproc:h2 for 3 s")]


def test_port_loss_is_a_fault_with_the_reason() -> None:
    async def steps(d: H2SensorDriver, dev: SerialScript) -> None:
        assert d._link is not None
        d._link.reader.feed_eof()  # the device end went away (USB adapter unplugged)
        await settle()

    h = _run(SerialScript(), steps)
    assert h.faults == [("h2", "serial port inproc:h2 closed (end of stream)")]


def test_no_first_line_refuses_connect() -> None:
    dev = SerialScript()
    h = Harness()

    async def main() -> str:
        d = make(H2SensorDriver, CONFIG, "h2")
        with pytest.raises(DeviceError) as info:
            await d.connect(h.context(asyncio.get_running_loop(), {"h2": dev}))
        return str(info.value)

    assert run_virtual(main) == "h2: no data from inproc:h2 within 3 s"
    assert dev.closed == 1  # the port is released


def test_missing_endpoint_and_config_errors() -> None:
    async def main() -> str:
        d = make(H2SensorDriver, CONFIG, "h2")
        with pytest.raises(DeviceError) as info:
            await d.connect(Harness().context(asyncio.get_running_loop(), {}))
        return str(info.value)

    assert "no in-process serial device 'h2'" in run_virtual(main)
    with pytest.raises(ConfigError, match="exactly one of 'inproc' and 'url'"):
        make(H2SensorDriver, {"transport": {}})
    with pytest.raises(ConfigError, match="period: expected a duration > 0"):
        make(H2SensorDriver, {**CONFIG, "period": "0 s"})


def test_nothing_can_be_set() -> None:
    async def steps(d: H2SensorDriver, dev: SerialScript) -> None:
        with pytest.raises(DeviceError, match="only measures"):
            await d.set({"concentration": 1.0})

    _run(SerialScript(), steps)


def test_real_port_that_does_not_exist_is_a_clear_error() -> None:
    async def main() -> str:
        d = make(H2SensorDriver, {"transport": {"url": "/dev/does-not-exist-h2", "baudrate": 9600}}, "h2")
        with pytest.raises(DeviceError) as info:
            await d.connect(Harness().context(asyncio.get_event_loop(), {}))
        return str(info.value)

    message = asyncio.run(main())
    assert message.startswith("h2: cannot open serial port /dev/does-not-exist-h2:")
