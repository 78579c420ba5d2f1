"""Climate chamber with conditioning of the test item's coolant loop, over SCPI.

The command layout is ours, modelled on the remote interfaces of common environmental test
chambers (a temperature setpoint, a gradient in K/min, the measured air temperature, an
auxiliary output switched ON/OFF): ``TEMP <degC>`` / ``TEMP:SET?``, ``TEMP?`` (air),
``RAMP <K/min>`` / ``RAMP?`` (0 = as fast as the chamber can), ``COOL ON|OFF`` / ``COOL?``
(the coolant loop of the item under test), ``SYST:ERR?`` and the IEEE 488.2 common commands
of :class:`simulators.scpi_device.ScpiDevice` (``*RST``: setpoint to ambient, ramp 0, cooling
ON). Numeric replies are plain numbers with two decimals.

Only the SCPI text is the interface (:meth:`Chamber.scpi`, the contract of
:meth:`simulators.supply.Supply.scpi`); the plant calls :meth:`Chamber.step` every tick and
reads ``air_c`` and ``cooling``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from simulators.scpi_device import (
    ERR_ILLEGAL,
    ERR_MISSING,
    ERR_RANGE,
    ERR_UNDEFINED,
    ERROR_QUERY_HEADERS,
    ScpiDevice,
    ScpiError,
)

MAKER = "BENCH-SIM"
MODEL = "CLIMATE CHAMBER TC-600"
FIRMWARE = "1.0 (simulated)"
_NUMBER = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z/]*)$")
_ON_OFF = {"ON": True, "1": True, "OFF": False, "0": False}

# Accepted spellings of each header (long and short forms), mapped to one key. ScpiDevice
# answers the SYST:ERR queries; the command form stays a known header here, so that it is
# refused as a missing parameter (-109) or, with a value, as a query-only header (-113).
_HEADERS = {
    "TEMP": "TEMP", "TEMPERATURE": "TEMP",
    "TEMP:SET": "TEMP:SET", "TEMPERATURE:SETPOINT": "TEMP:SET", "TEMP:SETP": "TEMP:SET",
    "TEMPERATURE:SET": "TEMP:SET",
    "RAMP": "RAMP",
    "COOL": "COOL", "COOLING": "COOL",
    **dict.fromkeys(ERROR_QUERY_HEADERS, "SYST:ERR"),
}  # fmt: skip


@dataclass(frozen=True)
class ChamberSpec:
    serial: str = "SIM00CH001"
    min_temp_c: float = -40.0
    max_temp_c: float = 150.0
    # The fastest gradient the chamber achieves; RAMP 0 means this.
    max_ramp_k_per_min: float = 5.0
    # Setpoint and air temperature at power-on and after *RST.
    initial_temp_c: float = 25.0


class Chamber(ScpiDevice):
    def __init__(self, spec: ChamberSpec) -> None:
        super().__init__()
        self.spec = spec
        self.air_c = spec.initial_temp_c
        self.temp_set = spec.initial_temp_c
        self.ramp = 0.0
        self.cooling = True

    # -- plant side -------------------------------------------------------------------------

    def step(self, dt: float) -> None:
        """Move the air toward the setpoint at the programmed gradient."""
        rate = self.ramp if self.ramp > 0.0 else self.spec.max_ramp_k_per_min
        max_step = rate / 60.0 * dt
        gap = self.temp_set - self.air_c
        self.air_c = self.temp_set if abs(gap) <= max_step else self.air_c + math.copysign(max_step, gap)

    def reset(self) -> None:
        # The air keeps its temperature: *RST changes what the chamber is told, not the physics.
        self.temp_set = self.spec.initial_temp_c
        self.ramp = 0.0
        self.cooling = True

    # -- SCPI -------------------------------------------------------------------------------

    def identity(self) -> str:
        return f"{MAKER},{MODEL},{self.spec.serial},{FIRMWARE}"

    def device_command(self, header: str, query: bool, arg: str) -> str | None:
        key = _HEADERS.get(header)
        if key is None:
            raise ScpiError(ERR_UNDEFINED)
        if query:
            return self._query(key)
        if not arg:
            raise ScpiError(ERR_MISSING)
        spec = self.spec
        if key in ("TEMP", "TEMP:SET"):
            self.temp_set = _number(arg, ("", "C", "CEL", "DEGC"), spec.min_temp_c, spec.max_temp_c)
        elif key == "RAMP":
            self.ramp = _number(arg, ("", "K/MIN"), 0.0, spec.max_ramp_k_per_min)
        elif key == "COOL":
            state = _ON_OFF.get(arg.upper())
            if state is None:
                raise ScpiError(ERR_ILLEGAL)
            self.cooling = state
        else:
            raise ScpiError(ERR_UNDEFINED)  # a query-only header used as a command
        return None

    def _query(self, key: str) -> str:
        if key == "TEMP":
            return f"{self.air_c:.2f}"
        if key == "TEMP:SET":
            return f"{self.temp_set:.2f}"
        if key == "RAMP":
            return f"{self.ramp:.2f}"
        if key == "COOL":
            return "ON" if self.cooling else "OFF"
        raise ScpiError(ERR_UNDEFINED)


def _number(arg: str, units: tuple[str, ...], lo: float, hi: float) -> float:
    word = arg.upper()
    if word in ("MIN", "MINIMUM"):
        return lo
    if word in ("MAX", "MAXIMUM"):
        return hi
    match = _NUMBER.match(arg)
    if match is None or match.group(2).upper() not in units:
        raise ScpiError(ERR_ILLEGAL)
    value = float(match.group(1))
    if not lo <= value <= hi:
        raise ScpiError(ERR_RANGE)
    return value
