"""A callback run every ``period`` seconds of loop time on absolute deadlines, at the cost of a
timer instead of a task.

A task that loops over ``await asyncio.sleep(deadline - loop.time())`` pays per cycle for a
coroutine, a future, its callback and the task's step. The simulators and the in-process
drivers wake hundreds of thousands of times in one simulated hour, so the cyclic work that does
not await anything runs here instead: one timer per wake-up and one ready callback.

It wakes in exactly the place of the loop's queue where such a task would: the timer is armed
as ``asyncio.sleep`` arms its own (``call_later`` of the same delay), and the callback runs one
pass of the loop after the timer fired, where the task's step would run (a zero or negative
delay skips the timer, as ``asyncio.sleep(0)`` does). So a virtual-time run does the same things
in the same order as with the task, and its record stays the same to the byte.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    """Calls ``body()`` at ``first``, ``first + period``, ... until :meth:`cancel`.

    ``body_first``: call ``body()`` at once, before waiting for ``first`` (a loop that sends,
    then sleeps). A body that raises stops the schedule; ``on_error`` gets the exception
    (default: logged).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        period: float,
        body: Callable[[], None],
        first: float,
        *,
        name: str,
        body_first: bool = False,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._loop = loop
        self._period = period
        self._body = body
        self._deadline = first
        self.name = name
        self._on_error = on_error
        self._handle: asyncio.Handle | None = None
        self.running = True
        if body_first:
            self._run()
        else:
            # Where a new task's first step would run.
            self._handle = loop.call_soon(self._wait)

    @property
    def deadline(self) -> float:
        """The instant the running (or next) call is scheduled for, in the loop's time. On the wall
        clock a call runs a little after it; a schedule that counts in its own instants (a firmware's
        tick) reads this rather than ``loop.time()``, so that the loop's latency does not enter it."""
        return self._deadline

    def cancel(self) -> None:
        self.running = False
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _wait(self) -> None:
        loop = self._loop
        delay = self._deadline - loop.time()
        if delay > 0.0:
            self._handle = loop.call_later(delay, self._fired)
        else:
            self._handle = loop.call_soon(self._run)

    def _fired(self) -> None:
        # The timer of a sleeping task resolves its future; the task steps one pass later.
        # Running the body here instead reorders it against callbacks of the same instant,
        # which changes the record of the reference run (measured): the extra pass stays.
        self._handle = self._loop.call_soon(self._run)

    def _run(self) -> None:
        try:
            self._body()
        except Exception as exc:
            self.running = False
            self._handle = None
            if self._on_error is not None:
                self._on_error(exc)
            else:
                log.error("periodic %s crashed", self.name, exc_info=exc)
            return
        self._deadline += self._period
        self._wait()
