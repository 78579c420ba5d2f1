"""Bidirectional DC supply (source + sink) in the style of an EA Elektro-Automatik PSB 10000.

Only the SCPI text is the interface: :meth:`Supply.scpi` takes one line and returns the reply
line (or None), exactly what a TCP socket server would exchange. The IEEE 488.2 common
commands, status registers and error queue are :class:`simulators.scpi_device.ScpiDevice`'s.
The plant reads the setpoints and writes back what the output terminals see.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from simulators.scpi_device import (
    ERR_ILLEGAL,
    ERR_MISSING,
    ERR_PROTECTED,
    ERR_RANGE,
    ERR_UNDEFINED,
    ScpiDevice,
    ScpiError,
)

MODEL = "PSB 11000-80 4U"
FIRMWARE = "V3.02 (simulated)"

# (long form, short form) of every header node we understand.
_NODES = (
    ("SOURCE", "SOUR"), ("SINK", "SINK"), ("VOLTAGE", "VOLT"), ("CURRENT", "CURR"),
    ("POWER", "POW"), ("OUTPUT", "OUTP"), ("MEASURE", "MEAS"), ("SYSTEM", "SYST"),
    ("ERROR", "ERR"), ("LOCK", "LOCK"), ("NEXT", "NEXT"), ("COMMUNICATE", "COMM"),
    ("WATCHDOG", "WATC"),
)  # fmt: skip
_NODE = {form: short for long, short in _NODES for form in (long, short)}
_NUMBER = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)$")
_ON_OFF = {"ON": True, "1": True, "OFF": False, "0": False}


@dataclass(frozen=True)
class SupplyRatings:
    voltage_max_v: float = 1000.0
    current_max_a: float = 80.0
    power_max_w: float = 30000.0
    serial: str = "SIM0000001"
    noise_v: float = 0.05
    noise_a: float = 0.02


def _fmt(value: float, unit: str) -> str:
    text = f"{value:.0f}" if unit == "W" else f"{value:.2f}"
    if text.lstrip("-").strip("0.") == "":
        text = text.lstrip("-")  # no "-0.00": it reads like a sign error to a driver
    return f"{text} {unit}"


class Supply(ScpiDevice):
    """Front-panel state plus SCPI parser. Current sign: positive = sourcing into the load."""

    def __init__(self, ratings: SupplyRatings, rng: random.Random) -> None:
        super().__init__()
        self.ratings = ratings
        self._rng = rng
        self.locked = False
        self.output = False
        self.voltage_set = 0.0
        self.source_current_set = 0.0
        self.sink_current_set = 0.0
        self.source_power_set = ratings.power_max_w
        self.sink_power_set = ratings.power_max_w
        self.meas_voltage = 0.0
        self.meas_current = 0.0
        # The header path of the previous command on the line being parsed (IEEE 488.2).
        self._path: tuple[str, ...] = ()
        self._resolved: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}
        # Interface watchdog: output off when the controller has been silent this long (0 = off).
        self.watchdog_s = 0.0
        self.watchdog_tripped = False
        self._last_rx = 0.0
        r = ratings
        self._setpoints: dict[tuple[str, ...], tuple[str, str, float]] = {
            ("SOUR", "VOLT"): ("voltage_set", "V", r.voltage_max_v),
            ("SOUR", "CURR"): ("source_current_set", "A", r.current_max_a),
            ("SOUR", "POW"): ("source_power_set", "W", r.power_max_w),
            ("SINK", "CURR"): ("sink_current_set", "A", r.current_max_a),
            ("SINK", "POW"): ("sink_power_set", "W", r.power_max_w),
            ("SYST", "COMM", "WATC"): ("watchdog_s", "S", 3600.0),
        }
        self._queries: dict[tuple[str, ...], Callable[[], str]] = {
            ("MEAS", "VOLT"): lambda: _fmt(self.meas_voltage, "V"),
            ("MEAS", "CURR"): lambda: _fmt(self.meas_current, "A"),
            ("MEAS", "POW"): lambda: _fmt(self.meas_voltage * self.meas_current, "W"),
            ("SYST", "ERR"): self.pop_error,
            ("SYST", "ERR", "NEXT"): self.pop_error,
        }

    # -- plant side -------------------------------------------------------------------------

    def measure(self, voltage: float, current: float) -> None:
        """What the output terminals see this tick; adds the instrument's measurement noise."""
        rnd = self._rng.random
        v = voltage + (rnd() - 0.5) * 2.0 * self.ratings.noise_v
        self.meas_voltage = v if v > 0.0 else 0.0
        self.meas_current = current + (rnd() - 0.5) * 2.0 * self.ratings.noise_a

    def check_watchdog(self, now: float) -> None:
        """Called every plant tick: a silent controller means nobody is watching the output."""
        if self.watchdog_s > 0.0 and self.output and now - self._last_rx > self.watchdog_s:
            self.output = False
            self.watchdog_tripped = True

    def reset(self) -> None:
        # *RST: the power-on settings. The remote lock and the interface watchdog stay: they
        # belong to the controller's session, not to the output's settings.
        self.output = False
        self.voltage_set = 0.0
        self.source_current_set = 0.0
        self.sink_current_set = 0.0
        # Power limits come back at the rated power, not 0 W: output off is what makes the
        # supply safe, and a driver that never sets a power limit must still get current.
        self.source_power_set = self.ratings.power_max_w
        self.sink_power_set = self.ratings.power_max_w

    # -- SCPI -------------------------------------------------------------------------------

    def identity(self) -> str:
        return f"EA Elektro-Automatik,{MODEL},{self.ratings.serial},{FIRMWARE}"

    def scpi(self, line: str) -> str | None:
        """Process one line (commands separated by ';'); reply to its queries, or None."""
        with contextlib.suppress(RuntimeError):  # parsed outside a loop (unit tests): no watchdog clock
            self._last_rx = asyncio.get_running_loop().time()
        self._path = ()
        return super().scpi(line)

    def program_header(self, header: str, query: bool, arg: str) -> str | None:
        key = self._resolve(header, self._path)
        self._path = key[:-1]
        if query:
            return self._query(key)
        self._set(key, arg)
        return None

    def _resolve(self, header: str, path: tuple[str, ...]) -> tuple[str, ...]:
        # A poll resolves the same few headers on the same paths again and again.
        key = self._resolved.get((header, path))
        if key is None:
            key = self._resolved[header, path] = self._resolve_header(header, path)
        return key

    def _resolve_header(self, header: str, path: tuple[str, ...]) -> tuple[str, ...]:
        absolute = header.startswith(":")
        nodes = []
        for node in header.lstrip(":").upper().split(":"):
            short = _NODE.get(node)
            if short is None:
                raise ScpiError(ERR_UNDEFINED)
            nodes.append(short)
        # IEEE 488.2: a header after ';' is relative to the previous command's path. Drivers
        # often repeat the full path instead, so fall back to the root when that is unknown.
        candidates = [] if absolute or not path else [path + tuple(nodes)]
        candidates.append(tuple(nodes))
        for key in candidates:
            if key[0] in ("VOLT", "CURR", "POW"):
                key = ("SOUR", *key)  # SOURce is the optional node of the family
            if key in self._setpoints or key in self._queries or key in (("OUTP",), ("SYST", "LOCK")):
                return key
        raise ScpiError(ERR_UNDEFINED)

    def _query(self, key: tuple[str, ...]) -> str:
        if key in self._setpoints:
            attr, unit, _ = self._setpoints[key]
            return _fmt(getattr(self, attr), unit)
        if key == ("OUTP",):
            return "ON" if self.output else "OFF"
        if key == ("SYST", "LOCK"):
            return "ON" if self.locked else "OFF"
        return self._queries[key]()

    def _set(self, key: tuple[str, ...], arg: str) -> None:
        if key in self._queries:
            raise ScpiError(ERR_UNDEFINED)  # query-only header used as a command
        if not arg:
            raise ScpiError(ERR_MISSING)
        if key == ("SYST", "LOCK"):
            self.locked = _on_off(arg)
            return
        if not self.locked:
            raise ScpiError(ERR_PROTECTED)
        if key == ("OUTP",):
            self.output = _on_off(arg)
            return
        attr, unit, maximum = self._setpoints[key]
        setattr(self, attr, _number(arg, unit, maximum))


def _on_off(arg: str) -> bool:
    value = _ON_OFF.get(arg.upper())
    if value is None:
        raise ScpiError(ERR_ILLEGAL)
    return value


def _number(arg: str, unit: str, maximum: float) -> float:
    word = arg.upper()
    if word in ("MAX", "MAXIMUM"):
        return maximum
    if word in ("MIN", "MINIMUM"):
        return 0.0
    match = _NUMBER.match(arg)
    if match is None or match.group(2).upper() not in ("", unit):
        raise ScpiError(ERR_ILLEGAL)
    value = float(match.group(1))
    if not 0.0 <= value <= maximum:
        raise ScpiError(ERR_RANGE)
    return value
