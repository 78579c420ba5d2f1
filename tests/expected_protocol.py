"""Byte-for-byte driver tests in the style of pymeasure's ``expected_protocol``.

A driver is connected to a scripted instrument that asserts every line (or byte string) the
driver sends, in order, and answers with the scripted reply. Nothing else is faked: the driver
runs with its real transport code (``inproc`` endpoints), on a virtual-time loop, so poll
intervals and timeouts pass instantly and deterministically.

    script = ScpiScript([("*CLS", None), ("*IDN?", "MAKER,MODEL,SN,FW")])   # None: a write
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bench.device import DeviceContext, Driver
from bench.errors import DeviceError
from bench.vtime import VirtualTimeLoop

T = TypeVar("T")
D = TypeVar("D", bound=Driver)

OK = '0,"No error"'
"""The ``SYST:ERR?`` reply of an empty error queue."""


class ScpiScript:
    """An instrument that expects exactly these ``(line sent, reply or None)`` exchanges."""

    def __init__(self, exchanges: list[tuple[str, str | None]]) -> None:
        self.exchanges = list(exchanges)
        self.index = 0

    def add(self, exchanges: list[tuple[str, str | None]]) -> None:
        self.exchanges += exchanges

    def scpi(self, line: str) -> str | None:
        assert self.index < len(self.exchanges), f"unexpected extra line {line!r} (script done)"
        want, reply = self.exchanges[self.index]
        assert line == want, f"exchange {self.index}: driver sent {line!r}, expected {want!r}"
        self.index += 1
        return reply

    def assert_done(self) -> None:
        left = self.exchanges[self.index :]
        assert not left, f"the driver never sent {[w for w, _ in left]}"


class SerialScript:
    """A serial device (the ``open(send)`` / ``close()`` contract) with scripted bytes.

    ``push(data)`` sends bytes to the driver; ``expect`` lists the exact byte strings the driver
    must write, each answered by the given bytes (or nothing).
    """

    def __init__(self, expect: list[tuple[bytes, bytes | None]] | None = None) -> None:
        self.expect = list(expect or [])
        self.index = 0
        self.send: Callable[[bytes], None] | None = None
        self.opened = 0
        self.closed = 0

    def open(self, send: Callable[[bytes], None]) -> Callable[[bytes], None]:
        self.opened += 1
        self.send = send
        return self._receive

    def close(self) -> None:
        self.closed += 1
        self.send = None

    def push(self, data: bytes) -> None:
        assert self.send is not None, "port not open"
        self.send(data)

    def _receive(self, data: bytes) -> None:
        assert self.index < len(self.expect), f"unexpected bytes from the driver: {data!r}"
        want, reply = self.expect[self.index]
        assert data == want, f"write {self.index}: driver sent {data!r}, expected {want!r}"
        self.index += 1
        if reply is not None and self.send is not None:
            asyncio.get_running_loop().call_soon(self.send, reply)

    def assert_done(self) -> None:
        assert self.index == len(self.expect), f"the driver never sent {self.expect[self.index :]}"


@dataclass
class Harness:
    """What a driver published and reported while under test."""

    samples: list[tuple[str, float, float]] = field(default_factory=list)
    faults: list[tuple[str, str]] = field(default_factory=list)

    def last(self, name: str) -> float:
        for n, v, _ in reversed(self.samples):
            if n == name:
                return v
        raise AssertionError(f"no sample of {name}")

    def names(self) -> set[str]:
        return {n for n, _, _ in self.samples}

    def context(self, loop: asyncio.AbstractEventLoop, inproc: dict[str, Any]) -> DeviceContext:
        return DeviceContext(
            loop,
            lambda n, v, t: self.samples.append((n, v, t)),
            lambda msg, tx: None,
            lambda dev, reason: self.faults.append((dev, reason)),
            inproc,
        )


def run_virtual(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main()`` on a fresh virtual-time loop."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def make(driver_cls: type[D], config: dict[str, Any], name: str = "dev") -> D:
    return driver_cls(name, config, Path("."))


@contextlib.asynccontextmanager
async def connected(driver: D, harness: Harness, inproc: dict[str, Any]) -> AsyncIterator[D]:
    """``driver`` connected to the in-process instruments ``inproc``, closed on the way out."""
    await driver.connect(harness.context(asyncio.get_running_loop(), inproc))
    try:
        yield driver
    finally:
        await driver.close()


async def connect_error(driver: Driver, inproc: dict[str, Any]) -> str:
    """The message of the DeviceError that refuses the connection."""
    with pytest.raises(DeviceError) as info:
        await driver.connect(Harness().context(asyncio.get_running_loop(), inproc))
    return str(info.value)


async def settle(seconds: float = 0.0) -> None:
    """Let tasks run (and virtual time pass)."""
    await asyncio.sleep(seconds)
    for _ in range(5):
        await asyncio.sleep(0)


Step = Callable[[], Awaitable[Any]]
