"""What every simulated plant on the in-process CAN link does the same way: open its channel,
answer UDS (identity DIDs and, with a DTC memory, DTCs), tick its physics on absolute deadlines
and send its cyclic frames, then stop cleanly.

A plant supplies its frame listener, its cyclic transmissions, one physics ``step`` and the
shutdown of its own parts; everything runs on the event loop's clock. The physics tick and the
transmissions are timers (bench/periodic.py), not tasks: they never await anything, and a task
per cycle costs several times a timer.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable
from typing import Any, NamedTuple

import can

from bench.periodic import Periodic
from simulators.dtc import DtcMemory
from simulators.uds_server import UdsServer


class Cyclic(NamedTuple):
    """One cyclic transmission: ``send()`` every ``period`` s, the first ``phase`` s after start."""

    period: float
    phase: float
    send: Callable[[], None]
    name: str


class CanPlant(abc.ABC):
    def __init__(self, *, channel: str, tick_s: float) -> None:
        self.channel = channel
        self.tick_s = tick_s
        self.dids: dict[int, bytes] = {}
        self.uds_ids = (0x7E0, 0x7E8)
        # The firmware's DTC memory, read and cleared over UDS; None: the ECU has no DTC services.
        self.dtcs: DtcMemory | None = None
        self.uds: UdsServer | None = None
        self.bus: can.BusABC | None = None
        self._timers: list[Periodic] = []

    @abc.abstractmethod
    def on_frame(self) -> Callable[[can.Message], None]:
        """The listener of the item under test for frames the bench sends."""

    @abc.abstractmethod
    def transmitters(self, bus: can.BusABC) -> list[Cyclic]:
        """The cyclic transmissions of the item."""

    @abc.abstractmethod
    def step(self, dt: float, now: float) -> None:
        """One physics tick."""

    @abc.abstractmethod
    def shutdown_parts(self) -> None:
        """Cancel the item's own timers and close its other endpoints; must not raise."""

    async def start(self) -> None:
        if self._timers:
            return
        # InProcBus: frames arrive through add_listener on the loop, no receive thread.
        bus: Any = can.Bus(interface="inproc", channel=self.channel)
        self.bus = bus
        bus.add_listener(self.on_frame())
        if self.dids:
            self.uds = UdsServer(self.dids, bus.send, *self.uds_ids, dtcs=self.dtcs)
            bus.add_listener(self.uds.on_frame)
        loop = asyncio.get_running_loop()
        now, dt = loop.time(), self.tick_s
        # The firmware's clock is its own tick count, as an MCU's scheduler's is: on the wall clock
        # a tick served late by the loop still steps to its own instant, so a debounce of N ticks
        # takes N ticks (a tick stamped late followed by one on time would otherwise cost one more).
        physics = Periodic(
            loop, dt, lambda: self.step(dt, physics.deadline), now + dt, name=f"{type(self).__name__}-physics"
        )
        self._timers.append(physics)
        for cyclic in self.transmitters(bus):
            self._timers.append(Periodic(loop, cyclic.period, cyclic.send, now + cyclic.phase, name=cyclic.name))

    async def stop(self) -> None:
        timers, self._timers = self._timers, []
        # A timer that crashed (a send refused on bus-off) was reported when it stopped.
        for timer in timers:
            timer.cancel()
        self.shutdown_parts()
        if self.uds is not None:
            self.uds.shutdown()
        if self.bus is not None:
            self.bus.shutdown()
            self.bus = None
