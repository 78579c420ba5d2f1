"""A virtual-time asyncio event loop.

The loop's clock starts at 0 and jumps straight to the next scheduled timer whenever nothing
is ready to run, so hours of simulated bench time pass in seconds of wall time. File
descriptors are still polled (without blocking) before every jump of the clock, and every few
iterations while callbacks are ready, so signal handlers (Ctrl-C) and real I/O keep working.

Everything in the engine, the drivers and the simulators takes time from ``loop.time()``,
``asyncio.sleep`` and ``asyncio.timeout``, which is what makes this substitution possible. Two
runs with the same inputs and seed produce the same samples at the same instants.
"""

from __future__ import annotations

import asyncio
import heapq
import selectors
from asyncio import base_events
from typing import Any

# The base loop's constants, which typeshed does not list.
_MIN_SCHEDULED_TIMER_HANDLES: int = getattr(base_events, "_MIN_SCHEDULED_TIMER_HANDLES")  # noqa: B009
_MIN_CANCELLED_TIMER_HANDLES_FRACTION: float = getattr(base_events, "_MIN_CANCELLED_TIMER_HANDLES_FRACTION")  # noqa: B009
_MAXIMUM_SELECT_TIMEOUT: float = getattr(base_events, "MAXIMUM_SELECT_TIMEOUT")  # noqa: B009

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


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self
        self._virtual_now = 0.0
        # Timers within this margin run together; keep it far below any cycle time we model.
        self._clock_resolution = 1e-9

    def time(self) -> float:
        return self._virtual_now

    def _run_once(self) -> None:
        """``BaseEventLoop._run_once`` step for step, with the virtual selector's busy passes
        decided here: a busy virtual-time run makes hundreds of thousands of passes, and the
        calls a pass saves (the selector, the clock, an empty event list) are a tenth of its cost.
        The order in which timers and callbacks run is the base loop's."""
        loop: Any = self  # the base loop's private state, which typeshed does not describe
        if loop._debug:
            super()._run_once()  # type: ignore[misc]
            return
        scheduled = loop._scheduled
        sched_count = len(scheduled)
        if (
            sched_count > _MIN_SCHEDULED_TIMER_HANDLES
            and loop._timer_cancelled_count / sched_count > _MIN_CANCELLED_TIMER_HANDLES_FRACTION
        ):
            kept = []
            for handle in scheduled:
                if handle._cancelled:
                    handle._scheduled = False
                else:
                    kept.append(handle)
            heapq.heapify(kept)
            loop._scheduled = scheduled = kept
            loop._timer_cancelled_count = 0
        else:
            while scheduled and scheduled[0]._cancelled:
                loop._timer_cancelled_count -= 1
                handle = heapq.heappop(scheduled)
                handle._scheduled = False

        ready = loop._ready
        selector = loop._selector
        timeout: float | None = None
        if ready or loop._stopping:
            timeout = 0
        elif scheduled:
            timeout = min(max(0, scheduled[0]._when - self._virtual_now), _MAXIMUM_SELECT_TIMEOUT)
        if timeout == 0 and selector._busy < _BUSY_POLL_EVERY - 1:
            selector._busy += 1  # what select(0) would do on a pass that does not poll
        else:
            event_list = selector.select(timeout)
            if event_list:
                loop._process_events(event_list)

        end_time = self._virtual_now + self._clock_resolution
        while scheduled:
            handle = scheduled[0]
            if handle._when >= end_time:
                break
            handle = heapq.heappop(scheduled)
            handle._scheduled = False
            ready.append(handle)

        popleft = ready.popleft
        for _ in range(len(ready)):
            handle = popleft()
            if not handle._cancelled:
                handle._run()
        handle = None  # break cycles when an exception occurs

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
