"""Elektro-Automatik PSB 10000 series bidirectional DC supply (source and sink), over SCPI.

Used as battery emulator or charger/discharger. The subset used here: ``SYST:LOCK`` (remote
control), ``SOUR:VOLT``, ``SOUR:CURR``, ``SINK:CURR``, ``SOUR:POW``, ``OUTP``, ``MEAS:VOLT?``,
``MEAS:CURR?``, ``MEAS:POW?``, ``SYST:ERR?``, ``*IDN?``. Numeric replies carry a unit
(``"812.40 V"``). Measured current is positive when the supply sources into the load.

Signals: ``voltage_set``, ``current_set``, ``sink_current_set``, ``power_set``, ``output``
(OFF/ON) are commanded and read back; ``voltage``, ``current``, ``power`` are measured every
``poll_interval``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.device import ConfigError, DeviceContext, Driver
from bench.errors import DeviceError
from bench.expr import SignalInfo
from bench.units import parse_unit
from drivers.scpi import ScpiInstrument, check_transport, open_transport, parse_number

_KEYS = {"transport", "poll_interval", "voltage_max", "current_max", "power_max", "watchdog"}
ON_OFF = {"OFF": 0, "ON": 1}
MAX_POLL_FAILURES = 3
# signal -> (set command, query, unit)
_SETPOINTS = {
    "voltage_set": ("SOUR:VOLT", "SOUR:VOLT?", "V"),
    "current_set": ("SOUR:CURR", "SOUR:CURR?", "A"),
    "sink_current_set": ("SINK:CURR", "SINK:CURR?", "A"),
    "power_set": ("SOUR:POW", "SOUR:POW?", "W"),
}


class EaPsbDriver(Driver):
    def __init__(self, name: str, config: Mapping[str, Any], base_dir: Path) -> None:
        super().__init__(name, config, base_dir)
        self.check_keys(_KEYS)
        if not isinstance(self.config.get("transport"), dict):
            raise ConfigError("a supply needs 'transport'", "transport")
        check_transport(self.config["transport"])
        self.poll_interval = self.config_quantity("poll_interval", "200 ms", "s")
        # The supply switches its output off when the bench has been silent this long (0 = off):
        # the rig goes safe even if this process dies.
        self.watchdog = self.config_quantity("watchdog", "0 s", "s") if "watchdog" in self.config else 0.0
        self.limits = {
            "V": self.config_quantity("voltage_max", "1000 V", "V"),
            "A": self.config_quantity("current_max", "80 A", "A"),
            "W": self.config_quantity("power_max", "30000 W", "W"),
        }
        self._instr: ScpiInstrument | None = None
        self._identity: dict[str, str] = {}
        self._ctx: DeviceContext | None = None
        self._poll: asyncio.Task[None] | None = None

    def signals(self) -> list[SignalInfo]:
        n = self.name
        out = [
            SignalInfo(f"{n}.{sig}", parse_unit(unit), None, True, 0.0, self.limits[unit], f"setpoint ({cmd})")
            for sig, (cmd, _, unit) in _SETPOINTS.items()
        ]
        out.append(SignalInfo(f"{n}.output", parse_unit(""), ON_OFF, True, doc="output state (OUTP)"))
        out.append(SignalInfo(f"{n}.voltage", parse_unit("V"), doc="measured output voltage (MEAS:VOLT?)"))
        out.append(SignalInfo(f"{n}.current", parse_unit("A"), doc="measured current, + = sourcing (MEAS:CURR?)"))
        out.append(SignalInfo(f"{n}.power", parse_unit("W"), doc="measured power (MEAS:POW?)"))
        return out

    async def connect(self, ctx: DeviceContext) -> None:
        self._ctx = ctx
        transport = open_transport(self.name, self.config["transport"], ctx.inproc)
        self._instr = ScpiInstrument(self.name, transport)
        try:
            # *IDN? first: it proves the instrument answers and that it is the kind this driver
            # speaks to, before anything is written to it.
            self._identity = await self._instr.identify()
            if "PSB" not in self._identity["model"].upper():
                idn = ",".join(v for v in self._identity.values() if v)
                raise DeviceError(self.name, f"*IDN? answered '{idn}': not an EA PSB supply (wrong address?)")
            await self._instr.write("*CLS")
            await self._instr.write("SYST:LOCK ON")
            if self.watchdog:
                await self._instr.write(f"SYST:COMM:WATC {self.watchdog:g}")
            await self._instr.check_errors("taking remote control")
            await self._read_setpoints()
        except BaseException:
            # Not connected, so the engine will not close it: release the socket or port here.
            with contextlib.suppress(Exception):
                await transport.close()
            self._instr = None
            raise
        self._poll = ctx.start_task(self.name, self._poll_loop(), f"{self.name}-poll")

    async def identify(self) -> dict[str, str]:
        return dict(self._identity)

    async def _read_setpoints(self) -> None:
        assert self._instr is not None and self._ctx is not None
        for sig, (_, query, _) in _SETPOINTS.items():
            self._ctx.publish(f"{self.name}.{sig}", parse_number(await self._instr.query(query)), self._ctx.loop.time())
        state = await self._instr.query("OUTP?")
        self._ctx.publish(f"{self.name}.output", float(_on_off(state)), self._ctx.loop.time())

    async def _poll_loop(self) -> None:
        assert self._instr is not None and self._ctx is not None
        loop = self._ctx.loop
        deadline = loop.time()
        n = self.name
        failures = 0
        while True:
            try:
                reply = await self._instr.query("MEAS:VOLT?;MEAS:CURR?;MEAS:POW?")
                v, i, p = (parse_number(x) for x in reply.split(";"))
                failures = 0
            except (DeviceError, ValueError) as exc:
                # One lost reply on a busy network is not a lost instrument; repeated ones are.
                failures += 1
                if failures >= MAX_POLL_FAILURES:
                    self._ctx.fault(self.name, f"{failures} measurements in a row failed, last: {exc}")
                    return
                deadline += self.poll_interval
                await asyncio.sleep(max(0.0, deadline - loop.time()))
                continue
            t = loop.time()
            self._ctx.publish(f"{n}.voltage", v, t)
            self._ctx.publish(f"{n}.current", i, t)
            self._ctx.publish(f"{n}.power", p, t)
            deadline += self.poll_interval
            await asyncio.sleep(max(0.0, deadline - loop.time()))

    async def set(self, values: Mapping[str, float]) -> dict[str, float]:
        assert self._instr is not None and self._ctx is not None
        readback: dict[str, float] = {}
        for short, value in values.items():
            if short == "output":
                want = "ON" if value else "OFF"
                await self._instr.write(f"OUTP {want}")
                got = float(_on_off(await self._instr.query("OUTP?")))
            elif short in _SETPOINTS:
                cmd, query, _ = _SETPOINTS[short]
                await self._instr.write(f"{cmd} {value:.6g}")
                got = parse_number(await self._instr.query(query))
            else:
                raise DeviceError(self.name, f"'{short}' cannot be set")
            await self._instr.check_errors(f"setting {short}")
            if abs(got - float(value)) > max(1e-3, abs(float(value)) * 1e-4):
                raise DeviceError(self.name, f"{short} read back {got:g}, expected {float(value):g}")
            readback[short] = got
            self._ctx.publish(f"{self.name}.{short}", got, self._ctx.loop.time())
        return readback

    async def close(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._poll
            self._poll = None
        if self._instr is not None:
            await self._instr.release("SYST:LOCK OFF")
            self._instr = None


def _on_off(reply: str) -> int:
    text = reply.strip().upper()
    if text in ("ON", "1"):
        return 1
    if text in ("OFF", "0"):
        return 0
    raise ValueError(f"not ON/OFF: '{reply}'")
