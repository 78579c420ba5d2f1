"""Cyclic CAN transmission on a dedicated thread, for buses that run on the wall clock.

python-can's software cyclic tasks jitter by up to the GIL switch interval (5 ms, seen as
10 ms at p99) as soon as another thread does Python work, and asyncio timers have about 1 ms
granularity. So on a real bus the cyclic messages are sent by one thread of their own, on
absolute deadlines, with a shorter GIL switch interval. Interfaces whose kernel or hardware
schedules cyclic frames (socketcan's BCM) are better still; the in-process link, which runs on
the event loop's (possibly virtual) clock, keeps using loop tasks instead.

This is the one place outside the event loop that reads the OS clock: it exists to meet
wall-clock deadlines.
"""

from __future__ import annotations

import heapq
import sys
import threading
import time
from collections.abc import Callable

import can

# GIL hand-off interval while a sender runs; the default 5 ms is the jitter we are avoiding.
SWITCH_INTERVAL_S = 0.0005

Producer = Callable[[], can.Message | None]


class CyclicSender:
    """Sends each registered message at its period from one thread, on absolute deadlines."""

    def __init__(
        self,
        bus: can.BusABC,
        on_error: Callable[[Exception], None],
        on_sent: Callable[[can.Message], None] | None = None,
    ) -> None:
        self._bus = bus
        self._on_error = on_error
        self._on_sent = on_sent
        self._entries: list[tuple[int, int, int, Producer]] = []  # (deadline ns, seq, period ns, producer)
        self._seq = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._old_switch = sys.getswitchinterval()
        self.sent = 0

    def add(self, period_s: float, producer: Producer) -> None:
        now = time.perf_counter_ns()
        self._seq += 1
        heapq.heappush(self._entries, (now, self._seq, int(period_s * 1e9), producer))

    def start(self) -> None:
        self._old_switch = sys.getswitchinterval()
        sys.setswitchinterval(min(self._old_switch, SWITCH_INTERVAL_S))
        self._thread = threading.Thread(target=self._run, name="can-cyclic-tx", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        sys.setswitchinterval(self._old_switch)

    def _run(self) -> None:
        while not self._stop.is_set() and self._entries:
            deadline, seq, period, producer = self._entries[0]
            wait = (deadline - time.perf_counter_ns()) / 1e9
            if wait > 0 and self._stop.wait(wait):
                return
            heapq.heapreplace(self._entries, (deadline + period, seq, period, producer))
            try:
                msg = producer()
                if msg is not None:
                    self._bus.send(msg)
                    self.sent += 1
                    if self._on_sent is not None:
                        self._on_sent(msg)
            except Exception as exc:  # reported to the engine, which aborts the run
                self._on_error(exc)
                return
