"""What every simulated plant on the in-process CAN link does the same way: open its channel,
answer UDS (identity DIDs and, with a DTC memory, DTCs), tick its physics on absolute deadlines
and send its cyclic frames, then stop cleanly.

A plant supplies its frame listener, its cyclic transmit coroutines, one physics ``step`` and
the shutdown of its own parts; everything runs on the event loop's clock.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import can

from simulators.dtc import DtcMemory
from simulators.uds_server import UdsServer

log = logging.getLogger(__name__)


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
        self._tasks: list[asyncio.Task[None]] = []

    @abc.abstractmethod
    def on_frame(self) -> Callable[[can.Message], None]:
        """The listener of the item under test for frames the bench sends."""

    @abc.abstractmethod
    def transmitters(self, bus: can.BusABC) -> list[tuple[Coroutine[Any, Any, None], str]]:
        """The cyclic transmit coroutines of the item, each with its task name."""

    @abc.abstractmethod
    def step(self, dt: float, now: float) -> None:
        """One physics tick."""

    @abc.abstractmethod
    def shutdown_parts(self) -> None:
        """Cancel the item's own timers and close its other endpoints; must not raise."""

    async def start(self) -> None:
        if self._tasks:
            return
        # InProcBus: frames arrive through add_listener on the loop, no receive thread.
        bus: Any = can.Bus(interface="inproc", channel=self.channel)
        self.bus = bus
        bus.add_listener(self.on_frame())
        if self.dids:
            self.uds = UdsServer(self.dids, bus.send, *self.uds_ids, dtcs=self.dtcs)
            bus.add_listener(self.uds.on_frame)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._run_physics(), name=f"{type(self).__name__}-physics"))
        for coro, name in self.transmitters(bus):
            self._tasks.append(loop.create_task(coro, name=name))
        for task in self._tasks:
            task.add_done_callback(_report_crash)

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            # A task that crashed (a send refused on bus-off) was reported when it died: its
            # exception must not keep the bus below from being shut down.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.shutdown_parts()
        if self.uds is not None:
            self.uds.shutdown()
        if self.bus is not None:
            self.bus.shutdown()
            self.bus = None

    async def _run_physics(self) -> None:
        loop = asyncio.get_running_loop()
        dt = self.tick_s
        deadline = loop.time()
        while True:
            deadline += dt
            delay = deadline - loop.time()
            await asyncio.sleep(delay if delay > 0.0 else 0.0)
            self.step(dt, loop.time())


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("simulator task %s crashed", task.get_name(), exc_info=task.exception())
