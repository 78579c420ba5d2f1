"""Battery cell emulator in the style of the Bloomy Controls ABS (Advanced Battery Simulator),
with resistor modules that stand in for the BMS's NTC temperature sensors.

One ABS unit is eight isolated cell channels, each a source/sink with its own voltage setpoint,
sourcing and sinking current limits, output relay and fault relay (open circuit, short circuit).
A pack needs several units: on a physical bench they share one RS-485 bus, and every line the
controller sends is addressed to one unit by its device id (``@<id> <command>``, as Bloomy's
published SCPI client writes it on RS-485). The bus here is reached through one endpoint, as a
serial device server presents an RS-485 bus on one TCP port: :class:`CellEmulatorBus` takes the
lines and hands each to the unit it names. A line for an id nobody has, or without an id, gets
no answer, as on the bus.

The cell commands (Bloomy Controls' ``abs-scpi-driver`` library, ``src/ScpiClient_Cells.cpp``
and ``src/ScpiClient_System.cpp``; the numeric suffix is the 1-based cell of the unit, a channel
list ``(@1:8)`` sets or reads many cells in one command)::

    SOURce<n>:VOLTage <v>            SOURce:VOLTage <v>,(@<list>)     SOURce<n>:VOLTage?   SOURce:VOLTage? (@<list>)
    SOURce<n>:CURRent:SRC <a>        sourcing current limit, the same forms
    SOURce<n>:CURRent:SNK <a>        sinking current limit, the same forms
    OUTPut<n> {0|1}                  OUTPut {0|1},(@<list>)           OUTPut<n>?           OUTPut? (@<list>)
    OUTPut<n>:FAULt {NONE|OPEN|SHORT}   the same forms; the query answers NONE|OPENCIRCUIT|SHORTCIRCUIT
    MEASure<n>:VOLTage?   MEASure:VOLTage? (@<list>)   MEASure<n>:CURRent?   MEASure:CURRent? (@<list>)
    SYSTem:ERRor?  *IDN?  *CLS  *RST  and the other IEEE 488.2 common commands (simulators/scpi_device.py)

A resistor module (our own layout, no product's manual: see docs/instruments.md) has the same
shape with resistance channels::

    SOURce<n>:RESistance <ohm>       SOURce:RESistance <ohm>,(@<list>)   and the two queries
    OUTPut<n>:FAULt {NONE|OPEN|SHORT}   as the cell units

Plant side, plain Python (the simulated BMS reads these; it never goes through SCPI):
:meth:`CellEmulatorBus.cell` / :meth:`CellEmulatorBus.ntc` by 1-based number over the whole
chain, :attr:`CellChannel.sense_voltage` (what the BMS's sense input sees; None when the fault
relay has opened the line), :meth:`CellChannel.set_load_current` (the current the BMS draws from
the cell, its balancing current; + = out of the cell), :attr:`ResistorChannel.resistance` (what
the BMS's NTC input sees; ``inf`` when open, 0 when shorted).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from simulators.config_spec import NUM, Spec, check_section
from simulators.scpi_device import (
    ERR_ILLEGAL,
    ERR_MISSING,
    ERR_RANGE,
    ERR_SYNTAX,
    ERR_UNDEFINED,
    ScpiDevice,
    ScpiError,
    parse_channel_list,
)

CELLS_PER_UNIT = 8  # Bloomy ABS: kCellCount
RESISTORS_PER_MODULE = 8
ABS_MAKER = "Bloomy Controls"
ABS_MODEL = "ABS"
ABS_FIRMWARE = "1.0.0 (simulated)"
NTC_MAKER = "HIL-BENCH"
NTC_MODEL = "NTC-8 resistor module"
VOLTAGE_MAX = 5.0  # V, the ABS client's kMaxVoltage
CURRENT_MAX = 5.0  # A, kMaxSourcing / kMaxSinking
RESISTANCE_MIN = 1.0  # ohm: below it the module cannot go without its short relay
RESISTANCE_MAX = 10e6  # ohm

# Fault mnemonics: what a command takes (short forms) -> the state; what a query answers.
_FAULT_IN = {
    "NONE": "NONE",
    "OPEN": "OPEN",
    "OPENCIRCUIT": "OPEN",
    "SHORT": "SHORT",
    "SHORTCIRCUIT": "SHORT",
}
_FAULT_OUT = {"NONE": "NONE", "OPEN": "OPENCIRCUIT", "SHORT": "SHORTCIRCUIT"}
_BOOL_IN = {"0": False, "1": True, "OFF": False, "ON": True}
_NODES = {
    "SOURCE": "SOUR", "SOUR": "SOUR", "OUTPUT": "OUTP", "OUTP": "OUTP", "MEASURE": "MEAS", "MEAS": "MEAS",
    "VOLTAGE": "VOLT", "VOLT": "VOLT", "CURRENT": "CURR", "CURR": "CURR", "SRC": "SRC", "SNK": "SNK",
    "FAULT": "FAUL", "FAUL": "FAUL", "RESISTANCE": "RES", "RES": "RES",
}  # fmt: skip
_FIRST = re.compile(r"^([A-Z]+?)(\d*)$")
_ADDRESS = re.compile(r"^@(\d+)\s+(.*)$")


def _number(text: str, lo: float, hi: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ScpiError(ERR_ILLEGAL) from None
    if not (math.isfinite(value) and lo <= value <= hi):
        raise ScpiError(ERR_RANGE)
    return value


def _fault(text: str) -> str:
    state = _FAULT_IN.get(text.strip().upper())
    if state is None:
        raise ScpiError(ERR_ILLEGAL)
    return state


def _flag(text: str) -> bool:
    value = _BOOL_IN.get(text.strip().upper())
    if value is None:
        raise ScpiError(ERR_ILLEGAL)
    return value


def _setter(channels: Sequence[Any], attr: str, parse: Callable[[str], Any]) -> Callable[[int, str], None]:
    """What a command does to channel ``ch`` (1-based): ``attr`` of it set to the parsed text."""
    return lambda ch, text: setattr(channels[ch - 1], attr, parse(text))


@dataclass
class _Setting:
    """One per-channel setting or reading of a unit: how a command sets it and a query reads it."""

    get: Callable[[int], str]  # channel (1-based) -> reply text
    put: Callable[[int, str], None] | None  # None: query only


class ChannelUnit(ScpiDevice):
    """A unit of numbered channels whose commands take a numeric suffix or a channel list."""

    channel_count = CELLS_PER_UNIT

    def __init__(self) -> None:
        super().__init__()
        self._settings: dict[tuple[str, ...], _Setting] = {}

    def device_command(self, header: str, query: bool, arg: str) -> str | None:
        nodes = header.split(":")
        first = _FIRST.match(nodes[0])
        if first is None:
            raise ScpiError(ERR_UNDEFINED)
        key = []
        for node in (first.group(1), *nodes[1:]):
            short = _NODES.get(node)
            if short is None:
                raise ScpiError(ERR_UNDEFINED)
            key.append(short)
        setting = self._settings.get(tuple(key))
        if setting is None:
            raise ScpiError(ERR_UNDEFINED)
        suffix = first.group(2)
        value, channels = self._split(arg, query)
        if suffix and channels is not None:
            raise ScpiError(ERR_SYNTAX)  # a cell number and a channel list at once
        if channels is None:
            channel = int(suffix) if suffix else 1  # SCPI: an omitted numeric suffix is 1
            if not 1 <= channel <= self.channel_count:
                raise ScpiError(ERR_UNDEFINED)
            channels = [channel]
        if query:
            return ",".join(setting.get(ch) for ch in channels)
        if setting.put is None:
            raise ScpiError(ERR_UNDEFINED)  # a query-only header used as a command
        if not value:
            raise ScpiError(ERR_MISSING)
        for ch in channels:  # a bad value fails at the first channel: no channel of the list changes
            setting.put(ch, value)
        return None

    def _split(self, arg: str, query: bool) -> tuple[str, list[int] | None]:
        """(value, channel list or None) of an argument ``<value>[,(@list)]`` or a query's ``(@list)``."""
        at = arg.find("(@")
        if at < 0:
            if query and arg:
                raise ScpiError(ERR_SYNTAX)
            return arg.strip(), None
        value = arg[:at].strip().rstrip(",").strip()
        if query and value:
            raise ScpiError(ERR_SYNTAX)
        return value, parse_channel_list(arg[at:], lambda ch: 1 <= ch <= self.channel_count)


class CellChannel:
    """One cell channel: its settings (from SCPI) and what its terminals carry (for the plant)."""

    def __init__(self, rng: random.Random, noise_v: float, noise_a: float) -> None:
        self._rng = rng
        self.noise_v = noise_v
        self.noise_a = noise_a
        self.load_current = 0.0
        self.reset()

    def reset(self) -> None:
        self.voltage_set = 0.0
        self.source_limit = 0.0
        self.sink_limit = 0.0
        self.enabled = False
        self.fault = "NONE"

    # -- plant side -------------------------------------------------------------------------

    def set_load_current(self, amps: float) -> None:
        """The current the BMS draws from this cell (balancing, measurement): + = out of the cell."""
        self.load_current = float(amps)

    @property
    def current(self) -> float:
        """What flows out of the channel into the BMS: the load within the current limits."""
        if not self.enabled or self.fault != "NONE":
            return 0.0
        return max(-self.sink_limit, min(self.source_limit, self.load_current))

    @property
    def terminal_voltage(self) -> float:
        """The channel's output voltage: the setpoint, lower when the load exceeds the sourcing limit."""
        if not self.enabled or self.fault == "SHORT":
            return 0.0
        load = self.load_current
        if self.fault == "NONE" and load > self.source_limit:
            # Current limited: the output sags as a resistive load would pull it.
            return self.voltage_set * (self.source_limit / load)
        return self.voltage_set

    @property
    def sense_voltage(self) -> float | None:
        """What the BMS's sense input across this cell sees; None when the fault relay opened the line."""
        if self.fault == "OPEN":
            return None
        return self.terminal_voltage

    @property
    def current_limited(self) -> bool:
        return self.enabled and self.fault == "NONE" and self.current != self.load_current

    def measured_voltage(self) -> float:
        return self.terminal_voltage + (self._rng.random() * 2.0 - 1.0) * self.noise_v

    def measured_current(self) -> float:
        return self.current + (self._rng.random() * 2.0 - 1.0) * self.noise_a


class AbsUnit(ChannelUnit):
    """One Bloomy ABS: eight cell channels."""

    def __init__(self, serial: str, rng: random.Random, noise_v: float = 0.2e-3, noise_a: float = 0.5e-3) -> None:
        super().__init__()
        self.serial = serial
        self.cells = [CellChannel(rng, noise_v, noise_a) for _ in range(CELLS_PER_UNIT)]
        c = self.cells

        def volts(text: str) -> float:
            return _number(text, 0.0, VOLTAGE_MAX)

        def amps(text: str) -> float:
            return _number(text, 0.0, CURRENT_MAX)

        self._settings = {
            ("SOUR", "VOLT"): _Setting(lambda ch: f"{c[ch - 1].voltage_set:.4f}", _setter(c, "voltage_set", volts)),
            ("SOUR", "CURR", "SRC"): _Setting(
                lambda ch: f"{c[ch - 1].source_limit:.4f}", _setter(c, "source_limit", amps)
            ),
            ("SOUR", "CURR", "SNK"): _Setting(lambda ch: f"{c[ch - 1].sink_limit:.4f}", _setter(c, "sink_limit", amps)),
            ("OUTP",): _Setting(lambda ch: "1" if c[ch - 1].enabled else "0", _setter(c, "enabled", _flag)),
            ("OUTP", "FAUL"): _Setting(lambda ch: _FAULT_OUT[c[ch - 1].fault], _setter(c, "fault", _fault)),
            ("MEAS", "VOLT"): _Setting(lambda ch: f"{c[ch - 1].measured_voltage():.5f}", None),
            ("MEAS", "CURR"): _Setting(lambda ch: f"{c[ch - 1].measured_current():.5f}", None),
        }

    def identity(self) -> str:
        return f"{ABS_MAKER},{ABS_MODEL},{self.serial},{ABS_FIRMWARE}"

    def reset(self) -> None:
        # *RST (the ABS reboots): every cell off, setpoints and limits zero, fault relays released.
        for cell in self.cells:
            cell.reset()


class ResistorChannel:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.resistance_set = 10e3
        self.fault = "NONE"

    @property
    def resistance(self) -> float:
        """What the BMS's NTC input sees across the channel (ohm): ``inf`` when open, 0 when shorted."""
        if self.fault == "OPEN":
            return math.inf
        if self.fault == "SHORT":
            return 0.0
        return self.resistance_set


class ResistorModule(ChannelUnit):
    """Eight programmable resistors with open and short relays (our layout; see the module docstring)."""

    channel_count = RESISTORS_PER_MODULE

    def __init__(self, serial: str) -> None:
        super().__init__()
        self.serial = serial
        self.channels = [ResistorChannel() for _ in range(RESISTORS_PER_MODULE)]
        r = self.channels

        def ohms(text: str) -> float:
            return _number(text, RESISTANCE_MIN, RESISTANCE_MAX)

        self._settings = {
            ("SOUR", "RES"): _Setting(lambda ch: f"{r[ch - 1].resistance_set:.6g}", _setter(r, "resistance_set", ohms)),
            ("OUTP", "FAUL"): _Setting(lambda ch: _FAULT_OUT[r[ch - 1].fault], _setter(r, "fault", _fault)),
        }

    def identity(self) -> str:
        return f"{NTC_MAKER},{NTC_MODEL},{self.serial},1.0"

    def reset(self) -> None:
        for ch in self.channels:
            ch.reset()


class CellEmulatorBus:
    """The units on one bus, reached through one endpoint; each line names its unit (``@<id> ...``)."""

    def __init__(self, units: Mapping[int, ChannelUnit]) -> None:
        self.units = dict(units)
        self.abs_units = [u for _, u in sorted(self.units.items()) if isinstance(u, AbsUnit)]
        self.resistor_modules = [u for _, u in sorted(self.units.items()) if isinstance(u, ResistorModule)]
        self._cells = [c for u in self.abs_units for c in u.cells]
        self._ntcs = [r for m in self.resistor_modules for r in m.channels]

    @property
    def cell_count(self) -> int:
        return len(self._cells)

    @property
    def ntc_count(self) -> int:
        return len(self._ntcs)

    def cell(self, number: int) -> CellChannel:
        """Cell ``number`` (1-based) over the chain: unit by unit in id order, eight cells each."""
        return self._cells[number - 1]

    def ntc(self, number: int) -> ResistorChannel:
        """Resistor channel ``number`` (1-based) over the resistor modules, in id order."""
        return self._ntcs[number - 1]

    def set_load_current(self, number: int, amps: float) -> None:
        """The BMS's hook: the current it draws from cell ``number`` (+ = out of the cell)."""
        self._cells[number - 1].set_load_current(amps)

    def scpi(self, text: str) -> str | None:
        """Lines (``\\n`` separated), each ``@<id> <commands>``; the replies, one line per answering line."""
        replies = []
        for line in text.split("\n"):
            match = _ADDRESS.match(line.strip())
            if match is None:
                continue  # no address: no unit on the bus takes it
            unit = self.units.get(int(match.group(1)))
            if unit is None:
                continue  # nobody has that id: the line goes unanswered, as on the bus
            reply = unit.scpi(match.group(2))
            if reply is not None:
                replies.append(reply)
        return "\n".join(replies) if replies else None


# -- the plant: the emulator on its own (bms_cells builds the same bus and wires a BMS to it) ----

_TOP: dict[str, Spec] = {
    "endpoint": ((str,), "cells", None, None, False),
    "units": ((int,), 2, 1, 24, False),
    "resistor_modules": ((int,), 1, 0, 8, False),
    "first_id": ((int,), 1, 1, 200, False),
    "serial_prefix": ((str,), "SIMABS", None, None, False),
    "noise_v": (NUM, 0.2e-3, 0, 0.01, False),
    "noise_a": (NUM, 0.5e-3, 0, 0.1, False),
}


def build_bus(
    config: Mapping[str, Any], rng: random.Random, *, plant: str = "cell_emulator", where: str = ""
) -> CellEmulatorBus:
    """The units of a ``cell_emulator`` config: ABS units ``first_id``.., then the resistor modules.

    ``plant`` and ``where`` name the config in an error: a plant that owns the bus checks it as a
    section of its own config (``bms_cells config: emulator.units ...``)."""
    cfg = check_section(plant, config, _TOP, where)
    units: dict[int, ChannelUnit] = {}
    next_id = cfg["first_id"]
    for k in range(cfg["units"]):
        units[next_id] = AbsUnit(f"{cfg['serial_prefix']}{k + 1:02d}", rng, cfg["noise_v"], cfg["noise_a"])
        next_id += 1
    for k in range(cfg["resistor_modules"]):
        units[next_id] = ResistorModule(f"{cfg['serial_prefix']}R{k + 1:02d}")
        next_id += 1
    return CellEmulatorBus(units)


class CellEmulatorPlant:
    """The emulator alone: nothing drives its cells but the bench (and a plant's hooks)."""

    def __init__(self, bus: CellEmulatorBus) -> None:
        self.bus = bus

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


def build_plant(
    config: Mapping[str, Any], *, faults: Sequence[str], seed: int, register: Callable[[str, Any], None]
) -> CellEmulatorPlant:
    """Entry point ``cell_emulator``: the bus of ABS units and resistor modules on one endpoint."""
    bus = build_bus(config, random.Random(seed))
    register(str(config.get("endpoint", "cells")), bus)
    return CellEmulatorPlant(bus)
