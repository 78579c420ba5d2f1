"""Industrial hydrogen sensor with a streaming serial line, for enclosure H2 monitoring.

Modelled on the continuous-output mode of the H2scan HY-OPTIMA 700 series (a palladium-nickel
sensor with an RS-232/RS-422 port that streams one ASCII reading per period and answers a few
commands); the field layout below is ours (see docs/instruments.md)::

    $H2,<conc %vol, 3 dp>,<sensor temp degC, 1 dp>,<status, 4 hex digits>*<checksum, 2 hex>\\r\\n
    $ID,<maker>,<model>,<serial>,<firmware>*<checksum>\\r\\n      reply to the command ID?

The checksum is the XOR of every character between ``$`` and ``*`` (as in NMEA 0183), so a
corrupted line is recognisable on a noisy line. Status bits: 0x0001 sensor fault (element or
heater), 0x0002 warming up, 0x0004 over range.

The serial device contract (the same object is served on a pty by ``bench sim serve``):
``open(send)`` gets the function that pushes bytes to the host and returns the function that
takes bytes from the host; ``close()`` stops the stream. ``send(b"")`` hangs the line up (a
pulled cable): the host's port ends, and nothing more is sent until the host opens it again.
Lines are sent on the event loop's clock, so in virtual time a sensor with a 1 s period costs
one timer per simulated second.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass

from simulators.faults import (
    H2_SENSOR_DISCONNECTED_AFTER_S,
    H2_SENSOR_OFFSET_PCT,
    H2_SENSOR_SILENT_AFTER_S,
    Faults,
)

MAKER = "H2scan"
MODEL = "HY-OPTIMA 740"
FIRMWARE = "2.4.1 (simulated)"
STATUS_FAULT = 0x0001
STATUS_WARMUP = 0x0002
STATUS_OVER_RANGE = 0x0004
_RANGE_PCT = 5.0


@dataclass(frozen=True)
class H2SensorSpec:
    serial: str = "SIM00H2001"
    period_s: float = 1.0
    noise_pct: float = 0.002
    temperature_c: float = 30.0
    # Full scale: an enclosure sensor's 5 %vol, or an exhaust analyser's 100 %vol.
    range_pct: float = _RANGE_PCT


def checksum(body: str) -> str:
    value = 0
    for ch in body.encode("ascii"):
        value ^= ch
    return f"{value:02X}"


def frame(body: str) -> bytes:
    return f"${body}*{checksum(body)}\r\n".encode("ascii")


class H2Sensor:
    def __init__(
        self, spec: H2SensorSpec, concentration: Callable[[], float], faults: Faults, rng: random.Random
    ) -> None:
        self.spec = spec
        self._concentration = concentration
        self.faults = faults
        self._rng = rng
        self._send: Callable[[bytes], None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._hang_up_timer: asyncio.TimerHandle | None = None
        self._rx = bytearray()
        self._stuck: float | None = None
        self._opened_at = 0.0

    # -- serial device contract -----------------------------------------------------------------

    def open(self, send: Callable[[bytes], None]) -> Callable[[bytes], None]:
        self.close()
        self._send = send
        loop = asyncio.get_running_loop()
        self._opened_at = loop.time()
        self._task = loop.create_task(self._stream(), name="h2-sensor-stream")
        if self.faults.h2_sensor_disconnected:
            # A timer, not a check in the stream loop: the link goes exactly N s after opening.
            self._hang_up_timer = loop.call_later(H2_SENSOR_DISCONNECTED_AFTER_S, self._hang_up)
        return self._receive

    def close(self) -> None:
        if self._hang_up_timer is not None:
            self._hang_up_timer.cancel()
            self._hang_up_timer = None
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._send = None
        self._rx.clear()

    def _hang_up(self) -> None:
        send = self._send
        self._hang_up_timer = None
        self.close()
        if send is not None:
            send(b"")

    # -- behaviour --------------------------------------------------------------------------

    def reading(self) -> tuple[float, int]:
        """Concentration the sensor reports (%vol) and its status word."""
        true = max(0.0, self._concentration())
        value = true + (self._rng.random() - 0.5) * 2.0 * self.spec.noise_pct
        if self.faults.h2_sensor_offset:
            value += H2_SENSOR_OFFSET_PCT
        if self.faults.h2_sensor_stuck:
            # A frozen element keeps reporting its first reading with a clean status word.
            if self._stuck is None:
                self._stuck = value
            value = self._stuck
        value = min(max(value, 0.0), self.spec.range_pct)
        status = STATUS_OVER_RANGE if true > self.spec.range_pct else 0
        if self.faults.h2_sensor_fault_flag:
            status |= STATUS_FAULT
        return value, status

    def line(self) -> bytes:
        value, status = self.reading()
        temp = self.spec.temperature_c
        return frame(f"H2,{value:.3f},{temp:.1f},{status:04X}")

    async def _stream(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            silent = self.faults.h2_sensor_silent and loop.time() - self._opened_at >= H2_SENSOR_SILENT_AFTER_S
            if self._send is not None and not silent:
                self._send(self.line())
            deadline += self.spec.period_s
            await asyncio.sleep(max(0.0, deadline - loop.time()))

    def _receive(self, data: bytes) -> None:
        self._rx += data
        while b"\n" in self._rx or b"\r" in self._rx:
            cut = min(i for i in (self._rx.find(b"\n"), self._rx.find(b"\r")) if i >= 0)
            command = bytes(self._rx[:cut]).decode("ascii", "replace").strip().upper()
            del self._rx[: cut + 1]
            if command == "ID?" and self._send is not None:
                silent = self.faults.h2_sensor_silent and self._silent_now()
                if not silent:
                    self._send(frame(f"ID,{MAKER},{MODEL},{self.spec.serial},{FIRMWARE}"))

    def _silent_now(self) -> bool:
        with contextlib.suppress(RuntimeError):
            return asyncio.get_running_loop().time() - self._opened_at >= H2_SENSOR_SILENT_AFTER_S
        return False
