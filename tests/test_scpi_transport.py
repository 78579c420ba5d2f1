"""The SCPI base over pyvisa + pyvisa-py on a raw TCP socket, byte for byte.

The instrument end is simulators/serve_scpi.py (what `bench sim serve` runs) around a small
scripted handler or the simulated EA supply, in the same event loop as the client: the client's
pyvisa calls run in worker threads, so the loop is free to answer them.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bench.device import ConfigError, DeviceContext
from bench.errors import DeviceError
from drivers.ea_psb import EaPsbDriver
from drivers.scpi import ScpiInstrument, VisaTransport, check_transport, open_transport
from simulators.serve_scpi import ScpiServer
from simulators.supply import Supply, SupplyRatings
from tests.served import free_ports


class Scripted:
    """Records every line it gets; answers from a table, or echoes queries it does not know."""

    def __init__(self, replies: dict[str, str | None] | None = None) -> None:
        self.lines: list[str] = []
        self.replies = replies or {}

    def scpi(self, line: str) -> str | None:
        self.lines.append(line)
        if line in self.replies:
            return self.replies[line]
        return f"echo {line}" if line.endswith("?") else None


def serve(handler: Any, body: Callable[[ScpiServer], Awaitable[None]]) -> None:
    async def main() -> None:
        server = ScpiServer("dut", handler, "127.0.0.1", 0)
        await server.start()
        try:
            await body(server)
        finally:
            await server.stop()

    asyncio.run(main())


def visa(server: ScpiServer, timeout: float = 1.0) -> VisaTransport:
    return VisaTransport("dut", f"TCPIP::127.0.0.1::{server.port}::SOCKET", timeout=timeout)


def test_query_sends_exactly_one_terminated_line() -> None:
    handler = Scripted({"*IDN?": "ACME,MODEL 1,SN1,1.0"})

    async def body(server: ScpiServer) -> None:
        instr = ScpiInstrument("dut", visa(server))
        ident = await instr.identify()
        await instr.write("VOLT 12")
        await instr.transport.close()
        assert ident == {"maker": "ACME", "model": "MODEL 1", "serial": "SN1", "firmware": "1.0"}

    serve(handler, body)
    # '\n' written after each command and nothing else: the server split on '\n' and saw no '\r'.
    assert handler.lines == ["*IDN?", "VOLT 12"]


def test_concurrent_queries_get_their_own_replies() -> None:
    async def body(server: ScpiServer) -> None:
        instr = ScpiInstrument("dut", visa(server))

        async def asker(k: int) -> list[bool]:
            return [await instr.query(f"Q{k}:{i}?") == f"echo Q{k}:{i}?" for i in range(30)]

        results = await asyncio.gather(*(asker(k) for k in range(4)))
        await instr.transport.close()
        assert all(all(r) for r in results)

    serve(Scripted(), body)


def test_timeout_names_the_device_and_the_command() -> None:
    async def body(server: ScpiServer) -> None:
        instr = ScpiInstrument("psu", VisaTransport("psu", f"TCPIP::127.0.0.1::{server.port}::SOCKET", timeout=0.3))
        with pytest.raises(DeviceError) as err:
            await instr.query("MEAS:VOLT?")
        await instr.transport.close()
        assert str(err.value) == (
            f"psu: timeout waiting for the reply to 'MEAS:VOLT?': no reply within 0.3 s "
            f"(TCPIP::127.0.0.1::{server.port}::SOCKET)"
        )

    serve(Scripted({"MEAS:VOLT?": None}), body)


def test_a_late_reply_is_not_taken_for_the_next_one() -> None:
    async def late(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            if line.strip() == b"SLOW?":
                await asyncio.sleep(0.4)
            writer.write(line.strip().lower() + b"\n")
            await writer.drain()
        writer.close()  # the client left: its socket is closed here, not by the garbage collector

    async def main() -> None:
        server = await asyncio.start_server(late, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        instr = ScpiInstrument("dut", VisaTransport("dut", f"TCPIP::127.0.0.1::{port}::SOCKET", timeout=0.2))
        try:
            with pytest.raises(DeviceError, match=r"timeout waiting for the reply to 'SLOW\?'"):
                await instr.query("SLOW?")
            await asyncio.sleep(0.4)  # the late "slow?" arrives now
            assert await instr.query("FAST?") == "fast?"
        finally:
            await instr.transport.close()
            server.close()

    asyncio.run(main())


def test_a_cancelled_query_does_not_leave_its_reply_for_the_next_one() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            if line.strip() == b"SLOW?":
                await asyncio.sleep(0.3)  # longer than a quiet-line clear waits
            writer.write(line.strip().lower() + b"\n")
            await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(slow, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        instr = ScpiInstrument("dut", VisaTransport("dut", f"TCPIP::127.0.0.1::{port}::SOCKET", timeout=1.0))
        try:
            assert await instr.query("OPEN?") == "open?"
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(instr.query("SLOW?"), 0.05)
            assert await instr.query("FAST?") == "fast?"
            assert await instr.query("NEXT?") == "next?"
        finally:
            await instr.transport.close()
            server.close()

    asyncio.run(main())


def test_an_instrument_that_hangs_up_is_one_clear_line() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        instr = ScpiInstrument("psu", VisaTransport("psu", f"TCPIP::127.0.0.1::{port}::SOCKET", timeout=1.0))
        try:
            with pytest.raises(DeviceError) as err:
                await instr.query("*IDN?")
        finally:
            await instr.transport.close()
            server.close()
        assert str(err.value) == (
            f"psu: query '*IDN?' on TCPIP::127.0.0.1::{port}::SOCKET failed: the instrument closed the connection"
        )

    asyncio.run(main())


def test_the_pyvisa_path_of_other_resource_kinds_speaks_the_same_text() -> None:
    handler = Scripted({"*IDN?": "ACME,MODEL 1,SN1,1.0"})

    async def body(server: ScpiServer) -> None:
        resource = f"TCPIP::127.0.0.1::{server.port}::SOCKET"
        instr = ScpiInstrument("dut", VisaTransport("dut", resource, timeout=1.0, native_socket=False))
        assert (await instr.identify())["model"] == "MODEL 1"
        await instr.write("VOLT 12")
        answers = await asyncio.gather(*(instr.query(f"Q{k}?") for k in range(5)))
        await instr.transport.close()
        assert answers == [f"echo Q{k}?" for k in range(5)]

    serve(handler, body)
    assert handler.lines == ["*IDN?", "VOLT 12"] + [f"Q{k}?" for k in range(5)]


def test_closed_port_is_one_clear_line() -> None:
    (port,) = free_ports(1)

    async def main() -> None:
        instr = ScpiInstrument("psu", VisaTransport("psu", f"TCPIP::127.0.0.1::{port}::SOCKET", timeout=0.5))
        with pytest.raises(DeviceError) as err:
            await instr.query("*IDN?")
        assert str(err.value) == f"psu: cannot reach TCPIP::127.0.0.1::{port}::SOCKET: Connection refused"

    asyncio.run(main())


def test_error_queue_is_drained_and_the_first_error_reported() -> None:
    queue = ['-222,"Data out of range"', '-113,"Undefined header"', '0,"No error"']

    class Errors(Scripted):
        def scpi(self, line: str) -> str | None:
            self.lines.append(line)
            return queue.pop(0) if line == "SYST:ERR?" else None

    handler = Errors()

    async def body(server: ScpiServer) -> None:
        instr = ScpiInstrument("psu", visa(server))
        with pytest.raises(DeviceError) as err:
            await instr.check_errors("setting voltage_set")
        await instr.transport.close()
        assert str(err.value) == 'psu: instrument error after setting voltage_set: -222,"Data out of range"'

    serve(handler, body)
    assert handler.lines == ["SYST:ERR?"] * 3, "read until the queue says 0"


def _ctx(loop: asyncio.AbstractEventLoop, published: dict[str, float], faults: list[str]) -> DeviceContext:
    return DeviceContext(
        loop, lambda n, v, t: published.__setitem__(n, v), lambda m, tx: None, lambda d, r: faults.append(r)
    )


def test_supply_driver_over_visa_reads_back_every_setpoint() -> None:
    supply = Supply(SupplyRatings(voltage_max_v=1000, current_max_a=80, power_max_w=30000), random.Random(1))

    async def body(server: ScpiServer) -> None:
        cfg = {"transport": {"visa": f"TCPIP::127.0.0.1::{server.port}::SOCKET", "timeout": "1 s"}}
        drv = EaPsbDriver("psu", cfg, Path("."))
        published: dict[str, float] = {}
        faults: list[str] = []
        await drv.connect(_ctx(asyncio.get_running_loop(), published, faults))
        try:
            assert (await drv.identify())["model"].startswith("PSB")
            assert await drv.set({"voltage_set": 400.0, "current_set": 10.0}) == {
                "voltage_set": 400.0,
                "current_set": 10.0,
            }
            assert supply.voltage_set == 400.0 and supply.locked
            with pytest.raises(DeviceError, match=r'^psu: instrument error after setting voltage_set: -222,"Data out'):
                await drv.set({"voltage_set": 1500.0})
            await asyncio.sleep(0.3)
            assert "psu.voltage" in published and not faults
        finally:
            await drv.close()
            # The served end shares this loop: give it a turn to read the last line before it stops.
            await asyncio.sleep(0.05)
        assert not supply.locked, "remote control is handed back at close"

    serve(supply, body)


def test_wrong_idn_is_refused_before_anything_is_written() -> None:
    handler = Scripted({"*IDN?": "YOKOGAWA,WT5000,SIM0000PA1,F1.02"})

    async def body(server: ScpiServer) -> None:
        drv = EaPsbDriver("psu", {"transport": {"visa": f"TCPIP::127.0.0.1::{server.port}::SOCKET"}}, Path("."))
        with pytest.raises(DeviceError) as err:
            await drv.connect(_ctx(asyncio.get_running_loop(), {}, []))
        assert str(err.value) == (
            "psu: *IDN? answered 'YOKOGAWA,WT5000,SIM0000PA1,F1.02': not an EA PSB supply (wrong address?)"
        )

    serve(handler, body)
    assert handler.lines == ["*IDN?"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "exactly one of 'inproc"),
        ({"inproc": "psu", "visa": "TCPIP::h::1::SOCKET"}, "exactly one of 'inproc"),
        ({"visa": "TCPIP::h::1::SOCKET", "timeout": "2 V"}, "timeout must be a duration"),
        ({"visa": "TCPIP::h::1::SOCKET", "timeout": 0}, "timeout must be > 0"),
        ({"visa": "TCPIP::h::1::SOCKET", "baud": 9600}, "unknown key 'baud'"),
    ],
)
def test_bad_transport_config_is_refused_at_load(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_transport(config)


def test_inproc_transport_is_kept() -> None:
    handler = Scripted({"*IDN?": "A,B,C,D"})

    async def main() -> None:
        instr = ScpiInstrument("dut", open_transport("dut", {"inproc": "x"}, {"x": handler}))
        assert (await instr.identify())["model"] == "B"

    asyncio.run(main())
