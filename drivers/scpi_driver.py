"""The base of every SCPI driver: connect by ``*IDN?``, set up, poll, let go.

:class:`ScpiDriver` reads ``transport`` and ``poll_interval`` (and ``model``, for the drivers
that take it) from the config, and at connect:

1. opens the transport and reads ``*IDN?`` first: something answers, and it is the kind of
   instrument the driver speaks to (:meth:`ScpiDriver.identity_problem`);
2. sends ``*CLS``, then the driver's own set-up (:meth:`ScpiDriver.setup`), and drains the
   error queue;
3. reads the instrument's state once (:meth:`ScpiDriver.read_state`);
4. polls it every ``poll_interval`` (:meth:`ScpiDriver.poll_once`), when anything changes on
   its own (:meth:`ScpiDriver.polls`).

The poll policy, the same for every polled instrument: a failed poll (no reply, an instrument
error, a reply that does not parse) publishes nothing and is forgiven; :data:`MAX_POLL_FAILURES`
failures in a row are a device fault, and polling stops. One lost reply on a busy network is
not a lost instrument; three in a row are. Closing sends :attr:`ScpiDriver.release_command`
(handing the instrument back to its front panel), or nothing: the station's safe state says
where the instrument goes.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from bench.device import ConfigError, DeviceContext, Driver
from bench.errors import DeviceError
from drivers.scpi import ScpiInstrument, ScpiTransport, check_transport, open_transport

MAX_POLL_FAILURES = 3


class ScpiDriver(Driver):
    # What a failed poll fetches, for the fault message ("3 measurements in a row failed").
    poll_what = "measurements"
    # The instrument's error queue query (SCPI-1999; Yokogawa WT: ":STAT:ERR?").
    error_query = "SYST:ERR?"
    # What the error-queue drain after set-up is named in an instrument error.
    setup_what = "clearing the error queue"
    # Sent when closing, to hand the instrument back to its front panel (None: nothing).
    release_command: str | None = None
    # read_state() already read what a poll reads: the first poll waits one poll interval.
    polled_at_connect = False

    def __init__(
        self,
        name: str,
        config: Mapping[str, Any],
        base_dir: Path,
        *,
        keys: Collection[str],
        kind: str,
        poll_interval: str,
    ) -> None:
        super().__init__(name, config, base_dir)
        self.check_keys(keys)
        if not isinstance(self.config.get("transport"), dict):
            raise ConfigError(f"{kind} needs 'transport'", "transport")
        check_transport(self.config["transport"])
        self.poll_interval = self.config_quantity("poll_interval", poll_interval, "s")
        model = self.config.get("model")
        if model is not None and not isinstance(model, str):
            raise ConfigError(f"model: expected text found in the *IDN? model field, got {model!r}", "model")
        self.model = model
        self._instr: ScpiInstrument | None = None
        self._identity: dict[str, str] = {}
        self._ctx: DeviceContext | None = None
        self._poll: asyncio.Task[None] | None = None

    def identity_problem(self, identity: Mapping[str, str]) -> str | None:
        """Why the ``*IDN?`` answer is not this driver's instrument, or None when it is."""
        if self.model is not None and self.model.upper() not in identity["model"].upper():
            return f"not a '{self.model}' (wrong address?)"
        return None

    async def setup(self, instr: ScpiInstrument) -> None:
        """Commands after ``*CLS`` (remote control, formats); the error queue is drained after them."""

    @abc.abstractmethod
    async def read_state(self, instr: ScpiInstrument, ctx: DeviceContext) -> None:
        """Read and publish every signal once, after the error queue was drained at connect."""

    @abc.abstractmethod
    async def poll_once(self, instr: ScpiInstrument) -> dict[str, float]:
        """One poll: signal short name -> value; raise DeviceError or ValueError on a bad reply."""

    def polls(self) -> bool:
        """Whether anything changes on its own and needs the poll task."""
        return True

    def update_period(self, signal: str) -> float | None:
        # A measured signal comes with every poll; a setpoint is published when it is set.
        if not self.polls():
            return None
        info = next((s for s in self.signals() if s.name == signal), None)
        return None if info is None or info.writable else self.poll_interval

    def publish(self, values: Mapping[str, float]) -> None:
        """Publish short-named values with one timestamp: now, when their reply is in."""
        assert self._ctx is not None
        t = self._ctx.loop.time()
        for short, value in values.items():
            self._ctx.publish(f"{self.name}.{short}", value, t)

    def open_transport(self, ctx: DeviceContext) -> ScpiTransport:
        """The pipe to the instrument; a driver whose instrument shares a bus wraps it (addressing)."""
        return open_transport(self.name, self.config["transport"], ctx.inproc)

    async def connect(self, ctx: DeviceContext) -> None:
        self._ctx = ctx
        transport = self.open_transport(ctx)
        self._instr = instr = ScpiInstrument(self.name, transport, error_query=self.error_query)
        try:
            # *IDN? first: something answers, and it is the instrument the station names, before
            # anything is written to it.
            self._identity = await instr.identify()
            problem = self.identity_problem(self._identity)
            if problem is not None:
                idn = ",".join(v for v in self._identity.values() if v)
                raise DeviceError(self.name, f"*IDN? answered '{idn}': {problem}")
            await instr.write("*CLS")
            await self.setup(instr)
            await instr.check_errors(self.setup_what)
            await self.read_state(instr, ctx)
        except BaseException:
            # Not connected, so the engine will not close it: release the socket or port here.
            with contextlib.suppress(Exception):
                await transport.close()
            self._instr = None
            raise
        if self.polls():
            self._poll = ctx.start_task(self.name, self._poll_loop(instr, ctx), f"{self.name}-poll")

    async def identify(self) -> dict[str, str]:
        return dict(self._identity)

    async def _poll_loop(self, instr: ScpiInstrument, ctx: DeviceContext) -> None:
        loop = ctx.loop
        deadline = loop.time()
        if self.polled_at_connect:
            deadline += self.poll_interval
            await asyncio.sleep(self.poll_interval)
        failures = 0
        while True:
            try:
                values = await self.poll_once(instr)
            except (DeviceError, ValueError) as exc:
                failures += 1
                if failures >= MAX_POLL_FAILURES:
                    ctx.fault(self.name, f"{failures} {self.poll_what} in a row failed, last: {exc}")
                    return
            else:
                failures = 0
                self.publish(values)
            deadline += self.poll_interval
            await asyncio.sleep(max(0.0, deadline - loop.time()))

    async def close(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._poll
            self._poll = None
        if self._instr is not None:
            instr, self._instr = self._instr, None
            if self.release_command is not None:
                await instr.release(self.release_command)
            else:
                with contextlib.suppress(Exception):
                    await instr.transport.close()
