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

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.device import DeviceContext, SignalInfo
from bench.errors import DeviceError
from bench.units import parse_unit
from drivers.scpi import ScpiInstrument, parse_number, parse_on_off
from drivers.scpi_driver import ScpiDriver

_KEYS = {"transport", "poll_interval", "voltage_max", "current_max", "power_max", "watchdog"}
ON_OFF = {"OFF": 0, "ON": 1}
# signal -> (set command, query, unit)
_SETPOINTS = {
    "voltage_set": ("SOUR:VOLT", "SOUR:VOLT?", "V"),
    "current_set": ("SOUR:CURR", "SOUR:CURR?", "A"),
    "sink_current_set": ("SINK:CURR", "SINK:CURR?", "A"),
    "power_set": ("SOUR:POW", "SOUR:POW?", "W"),
}


class EaPsbDriver(ScpiDriver):
    setup_what = "taking remote control"
    release_command = "SYST:LOCK OFF"

    def __init__(self, name: str, config: Mapping[str, Any], base_dir: Path) -> None:
        super().__init__(name, config, base_dir, keys=_KEYS, kind="a supply", poll_interval="200 ms")
        # The supply switches its output off when the bench has been silent this long (0 = off):
        # the rig goes safe even if this process dies.
        self.watchdog = self.config_quantity("watchdog", "0 s", "s") if "watchdog" in self.config else 0.0
        self.limits = {
            "V": self.config_quantity("voltage_max", "1000 V", "V"),
            "A": self.config_quantity("current_max", "80 A", "A"),
            "W": self.config_quantity("power_max", "30000 W", "W"),
        }

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

    def identity_problem(self, identity: Mapping[str, str]) -> str | None:
        if "PSB" not in identity["model"].upper():
            return "not an EA PSB supply (wrong address?)"
        return None

    async def setup(self, instr: ScpiInstrument) -> None:
        await instr.write("SYST:LOCK ON")
        if self.watchdog:
            await instr.write(f"SYST:COMM:WATC {self.watchdog:g}")

    async def read_state(self, instr: ScpiInstrument, ctx: DeviceContext) -> None:
        for sig, (_, query, _) in _SETPOINTS.items():
            ctx.publish(f"{self.name}.{sig}", parse_number(await instr.query(query)), ctx.loop.time())
        state = await instr.query("OUTP?")
        ctx.publish(f"{self.name}.output", float(parse_on_off(state)), ctx.loop.time())

    async def poll_once(self, instr: ScpiInstrument) -> dict[str, float]:
        reply = await instr.query("MEAS:VOLT?;MEAS:CURR?;MEAS:POW?")
        v, i, p = (parse_number(x) for x in reply.split(";"))
        return {"voltage": v, "current": i, "power": p}

    async def set(self, values: Mapping[str, float]) -> dict[str, float]:
        assert self._instr is not None and self._ctx is not None
        readback: dict[str, float] = {}
        for short, value in values.items():
            if short == "output":
                want = "ON" if value else "OFF"
                await self._instr.write(f"OUTP {want}")
                got = float(parse_on_off(await self._instr.query("OUTP?")))
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
