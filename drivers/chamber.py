"""Climate chamber with conditioning of the item's coolant loop, over SCPI.

Layout (see docs/instruments.md): ``TEMP <degC>`` / ``TEMP:SET?`` setpoint, ``TEMP?`` measured
air temperature, ``RAMP <K/min>`` / ``RAMP?`` gradient (0 = as fast as the chamber can),
``COOL ON|OFF`` / ``COOL?`` the coolant loop of the item under test, ``*IDN?``, ``*CLS``,
``SYST:ERR?``. Replies are plain numbers (``"25.00"``) or ``ON`` / ``OFF``.

Signals: ``temp_set`` (degC), ``ramp`` (K/min), ``cooling`` (OFF/ON) are commanded and read
back; ``temp`` (degC, the air) is measured every ``poll_interval``. ``model``, when given,
must appear in the model field of ``*IDN?``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.device import ConfigError, DeviceContext, SignalInfo
from bench.errors import DeviceError
from bench.units import parse_unit
from drivers.scpi import ScpiInstrument, parse_number, parse_on_off
from drivers.scpi_driver import ScpiDriver

_KEYS = {"transport", "poll_interval", "model", "temp_min", "temp_max", "ramp_max"}
ON_OFF = {"OFF": 0, "ON": 1}
# signal -> (set command, query); replies carry two decimals, so read-backs compare to that.
_SETPOINTS = {"temp_set": ("TEMP", "TEMP:SET?"), "ramp": ("RAMP", "RAMP?")}
_READBACK_TOLERANCE = 0.006


class ChamberDriver(ScpiDriver):
    def __init__(self, name: str, config: Mapping[str, Any], base_dir: Path) -> None:
        super().__init__(name, config, base_dir, keys=_KEYS, kind="a climate chamber", poll_interval="1 s")
        self.temp_min = self.config_quantity("temp_min", "-40 degC", "degC")
        self.temp_max = self.config_quantity("temp_max", "150 degC", "degC")
        if self.temp_min >= self.temp_max:
            raise ConfigError(f"temp_min ({self.temp_min:g} degC) must be below temp_max", "temp_min")
        self.ramp_max = self.config_quantity("ramp_max", "5 K/min", "K/min")
        if self.ramp_max <= 0:
            raise ConfigError(f"ramp_max must be > 0, got '{self.config.get('ramp_max')}'", "ramp_max")

    def signals(self) -> list[SignalInfo]:
        n = self.name
        return [
            SignalInfo(
                f"{n}.temp_set", parse_unit("degC"), None, True, self.temp_min, self.temp_max, "air setpoint (TEMP)"
            ),
            SignalInfo(
                f"{n}.ramp",
                parse_unit("K/min"),
                None,
                True,
                0.0,
                self.ramp_max,
                "gradient toward the setpoint, 0 = as fast as the chamber can (RAMP)",
            ),
            SignalInfo(f"{n}.cooling", parse_unit(""), ON_OFF, True, doc="coolant loop of the item under test (COOL)"),
            SignalInfo(f"{n}.temp", parse_unit("degC"), doc="measured air temperature (TEMP?)"),
        ]

    async def read_state(self, instr: ScpiInstrument, ctx: DeviceContext) -> None:
        t = ctx.loop.time
        for sig, (_, query) in _SETPOINTS.items():
            ctx.publish(f"{self.name}.{sig}", parse_number(await instr.query(query)), t())
        ctx.publish(f"{self.name}.cooling", float(parse_on_off(await instr.query("COOL?"))), t())

    async def poll_once(self, instr: ScpiInstrument) -> dict[str, float]:
        return {"temp": parse_number(await instr.query("TEMP?"))}

    async def set(self, values: Mapping[str, float]) -> dict[str, float]:
        assert self._instr is not None and self._ctx is not None
        readback: dict[str, float] = {}
        for short, value in values.items():
            want = float(value)
            if short == "cooling":
                await self._instr.write(f"COOL {'ON' if want else 'OFF'}")
                got = float(parse_on_off(await self._instr.query("COOL?")))
                want = float(bool(want))
            elif short in _SETPOINTS:
                cmd, query = _SETPOINTS[short]
                await self._instr.write(f"{cmd} {want:.6g}")
                got = parse_number(await self._instr.query(query))
            else:
                raise DeviceError(self.name, f"'{short}' cannot be set")
            await self._instr.check_errors(f"setting {short}")
            if abs(got - want) > _READBACK_TOLERANCE:
                raise DeviceError(self.name, f"{short} read back {got:g}, expected {want:g}")
            readback[short] = got
            self._ctx.publish(f"{self.name}.{short}", got, self._ctx.loop.time())
        return readback
