"""A virtual-time asyncio event loop.

The loop's clock starts at 0 and jumps straight to the next scheduled timer whenever nothing
is ready to run, so hours of simulated bench time pass in seconds of wall time. File
descriptors are still polled (without blocking) before every jump of the clock, and every few
iterations while callbacks are ready, so signal handlers (Ctrl-C) and real I/O keep working.

While a person is asked something (a prompt answered in the browser station), the loop is
*paced*: it waits for real and its clock follows the wall clock, so the simulated bench goes on at
the pace of the person, a prompt's timeout counts in seconds the person has, and the answer
arrives at the instant it was given (:meth:`VirtualTimeLoop.paced`).

Everything in the engine, the drivers and the simulators takes time from ``loop.time()``,
``asyncio.sleep`` and ``asyncio.timeout``, which is what makes this substitution possible. Two
runs with the same inputs and seed produce the same samples at the same instants.
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import time
from collections.abc import Iterator
from typing import Any

# While callbacks are ready (timeout 0) the descriptors are polled only every this many
# iterations: a poll is a system call, and a busy virtual-time run makes hundreds of thousands of
# iterations with nothing on its descriptors. An idle loop (before the clock jumps) always polls.
_BUSY_POLL_EVERY = 16


class _VirtualSelector(selectors.DefaultSelector):
    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None
        self._busy = 0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout == 0 and self.loop is not None:
            self._busy += 1
            if self._busy < _BUSY_POLL_EVERY:
                return []
        self._busy = 0
        if self.loop is not None and self.loop.paced_by > 0 and timeout != 0:
            return self._select_paced(self.loop, timeout)
        events: list[tuple[selectors.SelectorKey, int]] = super().select(0)
        if events or self.loop is None:
            return events
        if timeout is None:
            # Nothing scheduled: only outside events (a signal, a thread) can wake us.
            result: list[tuple[selectors.SelectorKey, int]] = super().select(None)
            return result
        if timeout > 0:
            self.loop.advance(timeout)
        return events

    def _select_paced(self, loop: VirtualTimeLoop, timeout: float | None) -> list[tuple[selectors.SelectorKey, int]]:
        """Wait for real, up to the next timer, and move the clock by the time that passed."""
        start = time.monotonic()
        events: list[tuple[selectors.SelectorKey, int]] = super().select(timeout)
        passed = time.monotonic() - start
        # Never beyond the next timer: it runs at its own instant, as it would unpaced.
        loop.advance(passed if timeout is None else min(passed, timeout))
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self
        self._virtual_now = 0.0
        # Timers within this margin run together; keep it far below any cycle time we model.
        self._clock_resolution = 1e-9
        self.paced_by = 0  # how many holders want the clock to follow the wall clock

    @contextlib.contextmanager
    def paced(self) -> Iterator[None]:
        """The clock follows the wall clock while the block runs (a person is being asked)."""
        self.paced_by += 1
        try:
            yield
        finally:
            self.paced_by -= 1

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        self._virtual_now += seconds

    @property
    def virtual(self) -> bool:
        return True


def new_loop(virtual: bool) -> asyncio.AbstractEventLoop:
    if virtual:
        return VirtualTimeLoop()
    return asyncio.new_event_loop()


def is_virtual(loop: Any) -> bool:
    return isinstance(loop, VirtualTimeLoop)


def paced_if_virtual(loop: asyncio.AbstractEventLoop) -> contextlib.AbstractContextManager[None]:
    """:meth:`VirtualTimeLoop.paced` on a virtual-time loop; nothing to do on the wall clock."""
    return loop.paced() if isinstance(loop, VirtualTimeLoop) else contextlib.nullcontext()
