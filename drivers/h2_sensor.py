"""Streaming serial hydrogen sensor (H2scan HY-OPTIMA 700 style continuous output, see docs/instruments.md).

The sensor sends one line per period; the driver parses it, checks its checksum and publishes:

* ``concentration`` (%vol), ``temperature`` (degC) of the sensing element;
* ``fault`` (OK / FAULT): the sensor's own fault flag (status bit 0x0001);
* ``status``: the raw status word, for the record.

Line format: ``$H2,<%vol>,<degC>,<status hex>*<XOR checksum hex>\\r\\n``. ``ID?`` is answered
with ``$ID,<maker>,<model>,<serial>,<firmware>*<checksum>``, which is the identity recorded.

A safety sensor that stops talking must not look like clean air: when no valid line arrives
for ``silence_periods`` x ``period``, or the port closes or fails, the driver reports a device
fault with the port and the reason, and the run ends with ERROR.

Station config::

    transport: {inproc: h2}            # or {url: /dev/ttyUSB0, baudrate: 19200} (drivers/serial_link.py)
    period: 1 s                        # the sensor's reporting period
    silence_periods: 3                 # how many missed lines make the stream "lost"
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.device import ConfigError, DeviceContext, Driver, SignalInfo
from bench.errors import DeviceError
from bench.units import parse_unit
from drivers.serial_link import SerialLink, check_config, describe, open_link

_KEYS = {"transport", "period", "silence_periods"}
FAULT_STATES = {"OK": 0, "FAULT": 1}
STATUS_FAULT = 0x0001
IDENTIFY_TIMEOUT = 3.0


class LineError(ValueError):
    pass


def checksum(body: bytes) -> int:
    value = 0
    for b in body:
        value ^= b
    return value


def parse_line(raw: bytes) -> tuple[str, list[str]]:
    """``b'$H2,0.012,30.0,0000*4B\\r\\n'`` -> ``('H2', ['0.012', '30.0', '0000'])``; LineError if bad."""
    line = raw.strip()
    if not line.startswith(b"$") or len(line) < 4 or line[-3:-2] != b"*":
        raise LineError(f"not a sensor line: {raw!r}")
    body = line[1:-3]
    try:
        given = int(line[-2:], 16)
    except ValueError:
        raise LineError(f"bad checksum field: {raw!r}") from None
    if checksum(body) != given:
        raise LineError(f"checksum mismatch: {raw!r}")
    fields = body.decode("ascii", "replace").split(",")
    return fields[0], fields[1:]


class H2SensorDriver(Driver):
    def __init__(self, name: str, config: Mapping[str, Any], base_dir: Path) -> None:
        super().__init__(name, config, base_dir)
        self.check_keys(_KEYS)
        self.transport = check_config(self.config.get("transport"))
        self.port = describe(self.transport)
        self.period = self.config_quantity("period", "1 s", "s")
        periods = self.config.get("silence_periods", 3)
        if isinstance(periods, bool) or not isinstance(periods, int | float) or periods < 1:
            raise ConfigError(f"silence_periods: expected a number >= 1, got {periods!r}", "silence_periods")
        self.silence = float(periods) * self.period
        self._ctx: DeviceContext | None = None
        self._link: SerialLink | None = None
        self._task: asyncio.Task[None] | None = None
        self._first: asyncio.Future[None] | None = None
        self._id_reply: asyncio.Future[list[str]] | None = None
        self.bad_lines = 0

    def signals(self) -> list[SignalInfo]:
        n = self.name
        return [
            SignalInfo(f"{n}.concentration", parse_unit("%vol"), None, False, 0.0, 100.0, "hydrogen, %vol"),
            SignalInfo(f"{n}.temperature", parse_unit("degC"), doc="sensing element temperature"),
            SignalInfo(f"{n}.fault", parse_unit(""), FAULT_STATES, doc="sensor fault flag (status bit 0x0001)"),
            SignalInfo(f"{n}.status", parse_unit(""), doc="raw status word"),
        ]

    def update_period(self, signal: str) -> float | None:
        return self.period  # every line carries every signal

    async def connect(self, ctx: DeviceContext) -> None:
        self._ctx = ctx
        self._link = await open_link(self.name, self.transport, ctx.inproc)
        self._first = ctx.loop.create_future()
        self._task = ctx.start_task(self.name, self._read_loop(self._link), f"{self.name}-serial")
        wait = max(self.silence, 2.0 * self.period)
        try:
            async with asyncio.timeout(wait):
                await asyncio.shield(self._first)
        except BaseException as exc:
            # Not connected, so the engine will not close it: release the port here.
            await self.close()
            if isinstance(exc, TimeoutError):
                raise DeviceError(self.name, f"no data from {self.port} within {wait:g} s") from None
            raise

    async def identify(self) -> dict[str, str]:
        assert self._link is not None and self._ctx is not None
        self._id_reply = self._ctx.loop.create_future()
        try:
            self._link.write(b"ID?\r\n")
            async with asyncio.timeout(IDENTIFY_TIMEOUT):
                fields = await self._id_reply
        except TimeoutError:
            # Some firmware has no ID command: the run goes on, the record says so.
            return {"port": self.port, "identity": f"no answer to ID? within {IDENTIFY_TIMEOUT:g} s"}
        finally:
            self._id_reply = None
        fields += [""] * (4 - len(fields))
        return {"maker": fields[0], "model": fields[1], "serial": fields[2], "firmware": fields[3], "port": self.port}

    async def _read_loop(self, link: SerialLink) -> None:
        assert self._ctx is not None
        ctx = self._ctx
        reason: str | None = None
        while reason is None:
            try:
                async with asyncio.timeout(self.silence):
                    reason = await self._next_data_line(link)
            except TimeoutError:
                reason = f"no data from {self.port} for {self.silence:g} s"
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                reason = f"lost serial port {self.port}: {exc or type(exc).__name__}"
            except Exception as exc:  # pyserial's SerialException is an IOError subclass; anything else too
                reason = f"lost serial port {self.port}: {type(exc).__name__}: {exc}"
        if self._first is not None and not self._first.done():
            self._first.set_exception(DeviceError(self.name, reason))
            self._first.exception()  # retrieved here: connect() reports it (or timed out already)
        elif not link.closed:
            ctx.fault(self.name, reason)

    async def _next_data_line(self, link: SerialLink) -> str | None:
        """Read until one valid reading is published; a reason string when the stream has ended."""
        assert self._ctx is not None
        while True:
            raw = await link.reader.readline()
            if not raw:
                return f"serial port {self.port} closed (end of stream)"
            try:
                kind, fields = parse_line(raw)
                if kind == "H2":
                    self._publish(fields)
                    return None
                if kind == "ID" and self._id_reply is not None and not self._id_reply.done():
                    self._id_reply.set_result(fields)
            except LineError:
                # Garbage does not count as data: a sensor that only sends noise goes silent.
                self.bad_lines += 1

    def _publish(self, fields: list[str]) -> None:
        assert self._ctx is not None
        if len(fields) != 3:
            raise LineError(f"expected 3 fields, got {fields}")
        try:
            conc, temp, status = float(fields[0]), float(fields[1]), int(fields[2], 16)
        except ValueError:
            raise LineError(f"bad field in {fields}") from None
        t = self._ctx.loop.time()
        n = self.name
        publish = self._ctx.publish
        publish(f"{n}.concentration", conc, t)
        publish(f"{n}.temperature", temp, t)
        publish(f"{n}.fault", float(1 if status & STATUS_FAULT else 0), t)
        publish(f"{n}.status", float(status), t)
        if self._first is not None and not self._first.done():
            self._first.set_result(None)

    async def set(self, values: Mapping[str, float]) -> dict[str, float]:
        raise DeviceError(self.name, f"'{next(iter(values), '')}' cannot be set: the H2 sensor only measures")

    async def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await link.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
