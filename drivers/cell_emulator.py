"""Battery cell emulator: Bloomy Controls ABS (Advanced Battery Simulator) units on one RS-485 bus,
plus resistor modules that stand in for the BMS's NTC temperature sensors.

The cell commands are those of Bloomy Controls' published SCPI client for the ABS,
``abs-scpi-driver`` (github.com/BloomyControls/abs-scpi-driver, BSD-3-Clause, files
``src/ScpiClient_Cells.cpp``, ``src/ScpiClient_System.cpp``, ``src/SerialDriver.cpp``), which
"implements all SCPI commands and queries supported by the ABS"; no ABS programming manual was
found in public. The resistor modules' commands are ours, in the same shape. docs/instruments.md,
"Cell emulator", says which command comes from where.

One ABS is eight cells; a pack of 16..192 cells takes 2..24 units, all on one RS-485 bus (a serial
device server gives it one TCP port), each line addressed ``@<device id> <commands>`` as Bloomy's
serial driver writes it. Modules are numbered in the order of ``units`` (m01, m02 ...), the
resistor modules in the order of ``resistor_modules`` (r01 ...); channels 1..8 within a module.

Signals, ``MM`` the 2-digit module number, ``C`` the channel 1..8 (cell n of the pack is module
(n − 1) // 8 + 1, channel (n − 1) % 8 + 1):

* ``mMMcC_voltage_set`` V, ``mMMcC_current_limit`` A (sourcing and sinking limit alike),
  ``mMMcC_output`` OFF/ON, ``mMMcC_fault`` NONE/OPEN/SHORT (the open-circuit / short relay):
  commanded, read back;
* ``mMMcC_voltage`` V, ``mMMcC_current`` A (+ = out of the emulator into the BMS): measured every
  ``poll_interval`` (one query per unit for all its cells);
* ``rMMcC_resistance`` ohm, ``rMMcC_temperature`` degC (set: the resistance the station's NTC
  model gives at that temperature), ``rMMcC_fault`` NONE/OPEN/SHORT;
* ``all_voltage_set``, ``all_current_limit``, ``all_output``, ``all_fault`` (every cell),
  ``all_temperature`` (every resistor channel): one command per unit with a channel list.
  ``all_output`` reads back ON when any cell's output is on.

A ``set`` of many signals goes out as ONE write: a line per unit, all the unit's channels in it
(``SOUR:VOLT 3.7,(@1:8)`` when they share a value, ``:SOUR1:VOLT 3.6;:SOUR2:VOLT 3.7 ...``
otherwise); then one query per unit reads the settings back together with its error queue.

Station config::

    transport: {inproc: cells}        # or {visa: "TCPIP::10.0.0.9::4001::SOCKET"} (the bus's port)
    poll_interval: 1 s
    units: [1, 2, 3, 4]               # ABS device ids, in module order (m01 = id 1 ...)
    resistor_modules: [5]             # resistor module ids (r01 = id 5)
    ntc: {model: beta, r25: 10 kohm, beta: 3435, t25: 25 degC}
    voltage_max: 5 V                  # refuse setpoints above this (the ABS's own range: 0..5 V)
    current_max: 5 A
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.device import ConfigError, DeviceContext, SignalInfo
from bench.errors import DeviceError
from bench.units import parse_unit
from drivers.ntc import NtcModel, ntc_model
from drivers.scpi import ScpiInstrument, ScpiTransport, channel_list, no_error, parse_number
from drivers.scpi_driver import ScpiDriver

CELLS_PER_UNIT = 8
RESISTORS_PER_MODULE = 8
ABS_VOLTAGE_MAX = 5.0
ABS_CURRENT_MAX = 5.0
RESISTANCE_RANGE = (1.0, 10e6)
ON_OFF = {"OFF": 0, "ON": 1}
FAULTS = {"NONE": 0, "OPEN": 1, "SHORT": 2}
_FAULT_WORD = {0: "NONE", 1: "OPEN", 2: "SHORT"}
_FAULT_REPLY = {"NONE": 0, "OPENCIRCUIT": 1, "SHORTCIRCUIT": 2, "OPEN": 1, "SHORT": 2}
_KEYS = {"transport", "poll_interval", "units", "resistor_modules", "ntc", "voltage_max", "current_max"}

# quantity -> the unit's list query that reads it back
_CELL_QUERY = {
    "voltage_set": "SOUR:VOLT?",
    "current_limit": "SOUR:CURR:SRC?",
    "output": "OUTP?",
    "fault": "OUTP:FAUL?",
}
_NTC_QUERY = {"resistance": "SOUR:RES?", "fault": "OUTP:FAUL?"}


class AddressedTransport(ScpiTransport):
    """One unit on a shared bus: every line it sends starts with the unit's ``@<id>``."""

    def __init__(self, bus: ScpiTransport, address: int) -> None:
        self.bus = bus
        self.address = address

    async def write(self, text: str) -> None:
        await self.bus.write(f"@{self.address} {text}")

    async def query(self, text: str) -> str:
        return await self.bus.query(f"@{self.address} {text}")

    async def close(self) -> None:
        await self.bus.close()


@dataclass
class _Module:
    label: str  # "m01" / "r01"
    address: int
    cells: bool  # an ABS unit (else a resistor module)
    instr: ScpiInstrument | None = None
    identity: str = ""
    # channel -> {quantity: text value} to send, gathered per set
    pending: dict[str, dict[int, str]] = field(default_factory=dict)


def _ids(config: Mapping[str, Any], key: str) -> list[int]:
    raw = config.get(key, [])
    if not isinstance(raw, list) or any(not isinstance(a, int) or isinstance(a, bool) for a in raw):
        raise ConfigError(f"{key}: expected a list of device ids like [1, 2, 3], got {raw!r}", key)
    for a in raw:
        if not 0 <= a <= 255:
            raise ConfigError(f"{key}: device id {a} is outside 0..255 (the RS-485 address range)", key)
    return list(raw)


class CellEmulatorDriver(ScpiDriver):
    setup_what = "clearing the error queues"
    poll_what = "cell measurements"
    polled_at_connect = True

    def __init__(self, name: str, config: Mapping[str, Any], base_dir: Path) -> None:
        super().__init__(name, config, base_dir, keys=_KEYS, kind="a cell emulator", poll_interval="1 s")
        units = _ids(self.config, "units")
        resistors = _ids(self.config, "resistor_modules")
        if not units:
            raise ConfigError("units: a cell emulator needs at least one ABS unit id", "units")
        if len(units) > 24:
            raise ConfigError(f"units: at most 24 units (192 cells), got {len(units)}", "units")
        both = units + resistors
        twice = sorted({a for a in both if both.count(a) > 1})
        if twice:
            raise ConfigError(f"units: device id {twice[0]} is used twice on the bus", "units")
        self.voltage_max = self.config_quantity("voltage_max", "5 V", "V")
        self.current_max = self.config_quantity("current_max", "5 A", "A")
        if not 0 < self.voltage_max <= ABS_VOLTAGE_MAX:
            raise ConfigError(f"voltage_max: must be > 0 V and <= {ABS_VOLTAGE_MAX:g} V (the ABS range)")
        if not 0 < self.current_max <= ABS_CURRENT_MAX:
            raise ConfigError(f"current_max: must be > 0 A and <= {ABS_CURRENT_MAX:g} A (the ABS range)")
        if resistors and "ntc" not in self.config:
            raise ConfigError("ntc: resistor modules need the NTC model (ntc: {model: beta, ...})", "ntc")
        self.ntc: NtcModel | None = ntc_model(self.config["ntc"]) if "ntc" in self.config else None
        self.modules = [_Module(f"m{k:02d}", a, True) for k, a in enumerate(units, start=1)]
        self.modules += [_Module(f"r{k:02d}", a, False) for k, a in enumerate(resistors, start=1)]
        self.cell_modules = [m for m in self.modules if m.cells]
        self.ntc_modules = [m for m in self.modules if not m.cells]
        # short name -> (module, channel or None for every channel, quantity)
        self._targets: dict[str, tuple[list[_Module], int | None, str]] = {}
        for m in self.cell_modules:
            for c in range(1, CELLS_PER_UNIT + 1):
                for q in _CELL_QUERY:
                    self._targets[f"{m.label}c{c}_{q}"] = ([m], c, q)
        for m in self.ntc_modules:
            for c in range(1, RESISTORS_PER_MODULE + 1):
                for q in ("resistance", "temperature", "fault"):
                    self._targets[f"{m.label}c{c}_{q}"] = ([m], c, q)
        for q in _CELL_QUERY:
            self._targets[f"all_{q}"] = (self.cell_modules, None, q)
        if self.ntc_modules:
            self._targets["all_temperature"] = (self.ntc_modules, None, "temperature")
        self._bus: ScpiTransport | None = None
        self._polled = self.cell_modules

    # -- what the engine sees -----------------------------------------------------------------

    @property
    def cell_count(self) -> int:
        return CELLS_PER_UNIT * len(self.cell_modules)

    def cell_signal(self, cell: int, quantity: str) -> str:
        """The short name of ``quantity`` of pack cell ``cell`` (1-based): cell 9 -> ``m02c1_...``."""
        module, channel = divmod(cell - 1, CELLS_PER_UNIT)
        return f"{self.cell_modules[module].label}c{channel + 1}_{quantity}"

    def signals(self) -> list[SignalInfo]:
        n = self.name
        volt, amp, ohm, deg, none = (parse_unit(u) for u in ("V", "A", "ohm", "degC", ""))
        out: list[SignalInfo] = []
        for m in self.cell_modules:
            for c in range(1, CELLS_PER_UNIT + 1):
                p, where = f"{n}.{m.label}c{c}", f"ABS id {m.address} cell {c}"
                out += [
                    SignalInfo(f"{p}_voltage_set", volt, None, True, 0.0, self.voltage_max, f"{where}: SOUR{c}:VOLT"),
                    SignalInfo(
                        f"{p}_current_limit", amp, None, True, 0.0, self.current_max, f"{where}: SOUR{c}:CURR:SRC|SNK"
                    ),
                    SignalInfo(f"{p}_output", none, ON_OFF, True, doc=f"{where}: OUTP{c}"),
                    SignalInfo(f"{p}_fault", none, FAULTS, True, doc=f"{where}: OUTP{c}:FAUL (open/short relay)"),
                    SignalInfo(f"{p}_voltage", volt, doc=f"{where}: MEAS:VOLT?"),
                    SignalInfo(f"{p}_current", amp, doc=f"{where}: MEAS:CURR?, + = into the BMS"),
                ]
        lo, hi = RESISTANCE_RANGE
        for m in self.ntc_modules:
            for c in range(1, RESISTORS_PER_MODULE + 1):
                p, where = f"{n}.{m.label}c{c}", f"resistor module id {m.address} channel {c}"
                out += [
                    SignalInfo(f"{p}_resistance", ohm, None, True, lo, hi, f"{where}: SOUR{c}:RES"),
                    SignalInfo(f"{p}_temperature", deg, None, True, doc=f"{where}: NTC at this temperature"),
                    SignalInfo(f"{p}_fault", none, FAULTS, True, doc=f"{where}: OUTP{c}:FAUL (open/short sensor)"),
                ]
        cells = f"all {self.cell_count} cells"
        out += [
            SignalInfo(f"{n}.all_voltage_set", volt, None, True, 0.0, self.voltage_max, f"{cells}: SOUR:VOLT"),
            SignalInfo(f"{n}.all_current_limit", amp, None, True, 0.0, self.current_max, f"{cells}: current limit"),
            SignalInfo(f"{n}.all_output", none, ON_OFF, True, doc=f"{cells}: OUTP (reads ON if any is on)"),
            SignalInfo(f"{n}.all_fault", none, FAULTS, True, doc=f"{cells}: OUTP:FAUL"),
        ]
        if self.ntc_modules:
            out.append(SignalInfo(f"{n}.all_temperature", deg, None, True, doc="every resistor channel: NTC at T"))
        return out

    def identity_problem(self, identity: Mapping[str, str]) -> str | None:
        if "ABS" not in identity["model"].upper():
            return "not a Bloomy Controls ABS (wrong device id or bus?)"
        return None

    def open_transport(self, ctx: DeviceContext) -> ScpiTransport:
        self._bus = super().open_transport(ctx)
        return AddressedTransport(self._bus, self.modules[0].address)

    async def setup(self, instr: ScpiInstrument) -> None:
        assert self._bus is not None
        first = self.modules[0]
        first.instr, first.identity = instr, ",".join(v for v in self._identity.values() if v)
        for m in self.modules[1:]:
            m.instr = other = ScpiInstrument(self.name, AddressedTransport(self._bus, m.address), self.error_query)
            identity = await other.identify()
            m.identity = ",".join(v for v in identity.values() if v)
            if m.cells and "ABS" not in identity["model"].upper():
                raise DeviceError(self.name, f"{m.label} (id {m.address}): *IDN? answered '{m.identity}': not an ABS")
            await other.write("*CLS")
            await other.check_errors(f"{self.setup_what} of {m.label} (id {m.address})")
        if self._ctx is not None and self._ctx.wanted is not None:
            # Poll only the units whose measurements the run reads.
            wanted = {w.partition(".")[2] for w in self._ctx.wanted if w.startswith(f"{self.name}.")}
            measured = {w for w in wanted if w.endswith(("_voltage", "_current"))}
            self._polled = [m for m in self.cell_modules if any(w.startswith(m.label) for w in measured)]

    def polls(self) -> bool:
        return bool(self._polled)

    async def identify(self) -> dict[str, str]:
        identity = await super().identify()
        others = [f"{m.label} (id {m.address}): {m.identity}" for m in self.modules[1:]]
        if others:
            identity["modules"] = "; ".join(others)
        return identity

    # -- reading ------------------------------------------------------------------------------

    async def read_state(self, instr: ScpiInstrument, ctx: DeviceContext) -> None:
        values: dict[str, float] = {}
        try:
            for m in self.modules:
                queries = _CELL_QUERY if m.cells else _NTC_QUERY
                values |= await self._read_back(m, list(queries), range(1, CELLS_PER_UNIT + 1))
            values |= await self.poll_once(instr)
        except ValueError as exc:
            raise DeviceError(self.name, f"reading the state at connect: {exc}") from None
        values["all_output"] = self._any_output(values)
        self.publish(values)

    async def poll_once(self, instr: ScpiInstrument) -> dict[str, float]:
        out: dict[str, float] = {}
        every = channel_list(range(1, CELLS_PER_UNIT + 1))
        for m in self._polled:
            assert m.instr is not None
            reply = await m.instr.query(f"MEAS:VOLT? {every};:MEAS:CURR? {every}")
            volts, amps = _lists(reply, 2, CELLS_PER_UNIT, m.label)
            for c in range(1, CELLS_PER_UNIT + 1):
                out[f"{m.label}c{c}_voltage"] = float(volts[c - 1])
                out[f"{m.label}c{c}_current"] = float(amps[c - 1])
        return out

    async def _read_back(self, m: _Module, quantities: Sequence[str], channels: Sequence[int]) -> dict[str, float]:
        """The settings ``quantities`` of ``channels`` of one module and its error queue, in one query."""
        assert m.instr is not None
        table = _CELL_QUERY if m.cells else _NTC_QUERY
        chans = channel_list(channels)
        text = ";:".join(f"{table[q]} {chans}" for q in quantities)
        reply = await m.instr.query(f"{text};:{m.instr.error_query}")
        body, _, error = reply.rpartition(";")
        if not no_error(error):
            with contextlib.suppress(DeviceError):
                await m.instr.check_errors("the first error")  # drain what follows it
            raise DeviceError(self.name, f"instrument error on {m.label} (id {m.address}): {error.strip()}")
        parsed = _lists(body, len(quantities), len(channels), m.label)
        out: dict[str, float] = {}
        for q, fields in zip(quantities, parsed, strict=True):
            for c, text_value in zip(channels, fields, strict=True):
                value = _value(q, text_value)
                out[f"{m.label}c{c}_{q}"] = value
                if q == "resistance" and self.ntc is not None:
                    out[f"{m.label}c{c}_temperature"] = self.ntc.temperature(value)
        return out

    # -- setting ------------------------------------------------------------------------------

    async def set(self, values: Mapping[str, float]) -> dict[str, float]:
        assert self._bus is not None and self._ctx is not None
        for m in self.modules:
            m.pending = {}
        requested: dict[str, float] = {}
        for short, value in values.items():
            target = self._targets.get(short)
            if target is None:
                raise DeviceError(self.name, f"'{short}' cannot be set")
            modules, channel, quantity = target
            text, wanted = self._command_value(short, quantity, float(value))
            channels = [channel] if channel is not None else None
            for m in modules:
                span = channels or list(range(1, CELLS_PER_UNIT + 1))
                q = "resistance" if quantity == "temperature" else quantity
                m.pending.setdefault(q, {}).update(dict.fromkeys(span, text))
                for c in span:
                    requested[f"{m.label}c{c}_{q}"] = wanted
        lines = [f"@{m.address} {self._unit_line(m)}" for m in self.modules if m.pending]
        # ONE write for the whole set: a line per unit, every channel of the unit in it.
        await self._bus.write("\n".join(lines))
        readback: dict[str, float] = {}
        for m in self.modules:
            if m.pending:
                channels = sorted({c for chans in m.pending.values() for c in chans})
                readback |= await self._read_back(m, list(m.pending), channels)
        for key, want in requested.items():
            got = readback[key]
            if abs(got - want) > max(1e-4, abs(want) * 1e-5):
                raise DeviceError(self.name, f"{key} read back {got:g}, expected {want:g}")
        for short in values:
            if short.startswith("all_"):
                readback[short] = self._all_readback(short, readback, float(values[short]))
        self.publish(readback)
        # Every channel's read-back is published; the step's record names what it set (a set of
        # all_voltage_set is one value there, not 192).
        return {short: readback[short] for short in values}

    def _command_value(self, short: str, quantity: str, value: float) -> tuple[str, float]:
        """(the text the instrument gets, the value its read-back must show) for one signal's value."""
        if quantity == "output":
            if value not in (0.0, 1.0):
                raise DeviceError(self.name, f"{short}: expected OFF or ON, got {value:g}")
            return str(int(value)), value
        if quantity == "fault":
            word = _FAULT_WORD.get(int(value)) if value == int(value) else None
            if word is None:
                raise DeviceError(self.name, f"{short}: expected NONE, OPEN or SHORT, got {value:g}")
            return word, value
        if quantity == "temperature":
            if self.ntc is None:
                raise DeviceError(self.name, f"{short}: no NTC model in the station (ntc:)")
            try:
                ohms = self.ntc.resistance(value)
            except (ValueError, OverflowError, ZeroDivisionError):
                ohms = math.nan
            lo, hi = RESISTANCE_RANGE
            if not lo <= ohms <= hi:
                raise DeviceError(
                    self.name, f"{short}: {value:g} degC needs {ohms:.6g} ohm, outside the module's {lo:g}..{hi:g} ohm"
                )
            text = f"{ohms:.6g}"
            return text, float(text)
        limit, unit = {
            "voltage_set": (self.voltage_max, "V"),
            "current_limit": (self.current_max, "A"),
            "resistance": (RESISTANCE_RANGE[1], "ohm"),
        }[quantity]
        low = RESISTANCE_RANGE[0] if quantity == "resistance" else 0.0
        if not low <= value <= limit:
            raise DeviceError(self.name, f"{short}: {value:g} {unit} is outside {low:g}..{limit:g} {unit}")
        text = f"{value:.6g}" if quantity == "resistance" else f"{value:.4f}"
        return text, float(text)

    def _unit_line(self, m: _Module) -> str:
        """Every pending setting of one unit as one line: a channel list where the values agree."""
        commands: list[str] = []
        for quantity, by_channel in m.pending.items():
            headers = _HEADERS[quantity]
            groups: dict[str, list[int]] = {}
            for c, text in by_channel.items():
                groups.setdefault(text, []).append(c)
            for text, chans in groups.items():
                for header in headers:
                    if len(chans) == 1:
                        node, _, rest = header.partition(":")
                        commands.append(f":{node}{chans[0]}{':' + rest if rest else ''} {text}")
                    else:
                        commands.append(f":{header} {text},{channel_list(chans)}")
        return ";".join(commands)

    def _all_readback(self, short: str, readback: Mapping[str, float], value: float) -> float:
        quantity = short.removeprefix("all_")
        if quantity == "temperature":
            temps = [v for k, v in readback.items() if k.endswith("_temperature")]
            return max(temps, key=lambda t: abs(t - value))  # the channel furthest from the request
        if quantity == "output":
            return self._any_output(readback)
        return readback[f"{self.cell_modules[0].label}c1_{quantity}"]

    def _any_output(self, values: Mapping[str, float]) -> float:
        """``all_output``: ON (1) when any cell's output is on, so that OFF means every cell is off."""
        return float(
            any(values[f"{m.label}c{c}_output"] for m in self.cell_modules for c in range(1, CELLS_PER_UNIT + 1))
        )

    async def close(self) -> None:
        await super().close()  # closes the bus through the first unit's transport


# quantity -> the headers that set it (the current limit is both the sourcing and the sinking limit)
_HEADERS = {
    "voltage_set": ("SOUR:VOLT",),
    "current_limit": ("SOUR:CURR:SRC", "SOUR:CURR:SNK"),
    "output": ("OUTP",),
    "fault": ("OUTP:FAUL",),
    "resistance": ("SOUR:RES",),
}


def _lists(reply: str, count: int, length: int, label: str) -> list[list[str]]:
    """``a,b;c,d`` -> [[a, b], [c, d]]; a ValueError when the reply has another shape."""
    parts = reply.split(";")
    lists = [p.split(",") for p in parts]
    if len(lists) != count or any(len(x) != length for x in lists):
        raise ValueError(f"{label}: expected {count} lists of {length} values, got '{reply}'")
    return lists


def _value(quantity: str, text: str) -> float:
    if quantity == "fault":
        state = _FAULT_REPLY.get(text.strip().upper())
        if state is None:
            raise ValueError(f"not a fault state: '{text}'")
        return float(state)
    if quantity == "output":
        return float(parse_number(text) != 0)
    return parse_number(text)
