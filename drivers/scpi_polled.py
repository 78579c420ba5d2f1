"""What the chamber and fault-box drivers share: connect by ``*IDN?``, poll, let go.

:class:`PolledScpiDriver` reads ``transport``, ``poll_interval`` and ``model`` from the config,
opens the transport, checks ``*IDN?`` (``model``, when given, must appear in its model field),
clears the error queue, lets the driver read its state, and polls it every ``poll_interval``.
Closing sends nothing: the station's safe state says where the instrument goes.
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
from drivers.scpi import ScpiInstrument, check_transport, open_transport

MAX_POLL_FAILURES = 3


class PolledScpiDriver(Driver):
    # What a failed poll fetches, for the fault message ("3 measurements in a row failed").
    poll_what = "measurements"

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

    @abc.abstractmethod
    async def read_state(self, instr: ScpiInstrument, ctx: DeviceContext) -> None:
        """Read and publish every signal once, after the error queue was cleared at connect."""

    @abc.abstractmethod
    async def poll_once(self, instr: ScpiInstrument) -> dict[str, float]:
        """One poll: signal short name -> value; raise DeviceError or ValueError on a bad reply."""

    def polls(self) -> bool:
        """Whether anything changes on its own and needs the poll task."""
        return True

    async def connect(self, ctx: DeviceContext) -> None:
        self._ctx = ctx
        transport = open_transport(self.name, self.config["transport"], ctx.inproc)
        self._instr = instr = ScpiInstrument(self.name, transport)
        try:
            # *IDN? first: something answers, and it is the instrument the station names.
            self._identity = await instr.identify()
            if self.model is not None and self.model.upper() not in self._identity["model"].upper():
                idn = ",".join(v for v in self._identity.values() if v)
                raise DeviceError(self.name, f"*IDN? answered '{idn}': not a '{self.model}' (wrong address?)")
            await instr.write("*CLS")
            await instr.check_errors("clearing the error queue")
            await self.read_state(instr, ctx)
        except BaseException:
            # Not connected, so the engine will not close it: release the socket or port here.
            with contextlib.suppress(Exception):
                await transport.close()
            self._instr = None
            raise
        if self.polls():
            self._poll = ctx.start_task(self.name, self._poll_loop(), f"{self.name}-poll")

    async def identify(self) -> dict[str, str]:
        return dict(self._identity)

    async def _poll_loop(self) -> None:
        assert self._instr is not None and self._ctx is not None
        loop = self._ctx.loop
        deadline = loop.time()
        failures = 0
        while True:
            try:
                values = await self.poll_once(self._instr)
                failures = 0
            except (DeviceError, ValueError) as exc:
                # One lost reply on a busy network is not a lost instrument; repeated ones are.
                failures += 1
                if failures >= MAX_POLL_FAILURES:
                    self._ctx.fault(self.name, f"{failures} {self.poll_what} in a row failed, last: {exc}")
                    return
            else:
                t = loop.time()
                for short, value in values.items():
                    self._ctx.publish(f"{self.name}.{short}", value, t)
            deadline += self.poll_interval
            await asyncio.sleep(max(0.0, deadline - loop.time()))

    async def close(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._poll
            self._poll = None
        if self._instr is not None:
            # No command on the way out: the station's safe state says where the instrument goes.
            instr, self._instr = self._instr, None
            with contextlib.suppress(Exception):
                await instr.transport.close()
