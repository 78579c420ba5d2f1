"""Data acquisition unit in the style of a Keysight DAQ970A with DAQM901A multiplexer modules.

The lab's own instrument on the pack: cell-voltage taps and thermocouples, read independently
of the BMS. The plant wires each channel to a quantity of the pack model (the true cell
voltage, the true temperature at a sensor location); what the BMS measures, and how it errs,
does not reach it.

Only the SCPI text is the interface: :meth:`Daq970a.scpi` takes one line and returns the reply
line (or None), as the instrument would on its LAN socket (port 5025). The subset, after the
Keysight DAQ970A/DAQ973A Programming Guide, chapter 2 "SCPI Programming" (command syntax; upper
case is the short form)::

    *IDN? *RST *CLS *OPC? and the other IEEE 488.2 common commands (simulators/scpi_device.py)
    CONFigure:VOLTage[:DC] [{<range>|AUTO|MIN|MAX|DEF}[,{<resolution>|MIN|MAX|DEF}],](@<scan_list>)
    CONFigure:TEMPerature {TCouple|DEF},{K|DEF}[,1[,<resolution>]],(@<scan_list>)
    ROUTe:SCAN (@<scan_list>)      ROUTe:SCAN:SIZE?
    FORMat:READing:CHANnel {OFF|ON}   FORMat:READing:{TIME|UNIT|ALARm} OFF
    READ?  = INITiate + FETCh?     INITiate     FETCh?
    SYSTem:ERRor?                  -> +0,"No error" | -113,"Undefined header" ...

As on the instrument, a CONFigure command redefines the scan list to its own channels, so a
driver that configures two functions sends ``ROUTe:SCAN`` with the whole list afterwards.
Channels are ``sccc``: slot 1..3, channel 01..20 of a DAQM901A (2-wire). Readings are NR3
(``+4.12345678E+00``), in scan-list order, comma separated; with ``FORMat:READing:CHANnel ON``
each is followed by its channel number. An open thermocouple or a voltage above 120 % of the
range reads ``+9.90000000E+37`` (overload), as the instrument reports it.

Documented simplifications: only the DCV and type-K thermocouple functions; temperature in
degC only; a scan takes no time (the instrument's scan rate is not modelled); readings carry
seeded noise well inside the instrument's accuracy, no systematic error.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from simulators.scpi_device import (
    ERR_CONFLICT,
    ERR_ILLEGAL,
    ERR_MISSING,
    ERR_RANGE,
    ERR_SYNTAX,
    ERR_UNDEFINED,
    ScpiDevice,
    ScpiError,
    parse_channel_list,
)

MAKER = "Keysight Technologies"
MODEL = "DAQ970A"
# The revision-code field of *IDN? (Programming Guide, *IDN?): hardware, main firmware, front
# panel, measurement board firmware, FPGA, measurement board, front panel board.
FIRMWARE = "A.03.01-01.00-03.01-00.02-02-01"
SLOTS = 3
CHANNELS_PER_SLOT = 20  # DAQM901A: 20 two-wire channels (its two current channels are not modelled)
OVERLOAD = 9.9e37
# DCV ranges of the DAQ970A (V); a reading above 120 % of the range is an overload.
_DCV_RANGES = (0.1, 1.0, 10.0, 100.0, 300.0)
_OVER_RANGE = 1.2

# Header nodes by long form; the short form is the upper-case prefix the programming guide prints.
_NODES = {
    "CONFIGURE": "CONF", "VOLTAGE": "VOLT", "DC": "DC", "TEMPERATURE": "TEMP", "ROUTE": "ROUT",
    "SCAN": "SCAN", "SIZE": "SIZE", "FORMAT": "FORM", "READING": "READ", "CHANNEL": "CHAN",
    "TIME": "TIME", "UNIT": "UNIT", "ALARM": "ALAR", "READ": "READ", "INITIATE": "INIT",
    "IMMEDIATE": "IMM", "FETCH": "FETC",
}  # fmt: skip
_NODE = {form: short for long, short in _NODES.items() for form in (long, short)}
_ON_OFF = {"ON": True, "1": True, "OFF": False, "0": False}

# A channel's source: the true value at its terminals, read when the channel is scanned.
Source = Callable[[], float]
# Many quantities of one model read together: their values at the given indices.
GroupRead = Callable[[Sequence[int]], list[float]]


@dataclass(frozen=True)
class Tap:
    """A source that is one of a group of quantities the plant computes together (a pack's cell
    voltages): a scan reads all the taps of one group in one call instead of one call each."""

    read: GroupRead
    index: int

    def __call__(self) -> float:
        return self.read((self.index,))[0]


@dataclass(frozen=True)
class DaqSpec:
    serial: str = "SIM00DAQ01"
    # Noise of one reading (uniform, +/-): far inside the 1-year accuracy (DCV 10 V range:
    # +/-(0.0030 % of reading + 0.0004 % of range), about 166 uV at 4.2 V; type K: 1.0 degC).
    noise_v: float = 20e-6
    noise_c: float = 0.05


@dataclass
class _Channel:
    function: str = "VOLT"  # VOLT | TEMP
    range_v: float | None = None  # None: autorange


def channel_name(slot: int, channel: int) -> int:
    """The instrument's channel number ``sccc`` (slot 1 channel 1 is 101)."""
    return slot * 100 + channel


def parse_scan_list(text: str) -> list[int]:
    """``(@101:103,201)`` -> [101, 102, 103, 201]; a ScpiError for anything else."""
    return parse_channel_list(text, _is_channel, empty_ok=True)


def _is_channel(ch: int) -> bool:
    slot, number = divmod(ch, 100)
    return 1 <= slot <= SLOTS and 1 <= number <= CHANNELS_PER_SLOT


class Daq970a(ScpiDevice):
    """One mainframe, three DAQM901A modules, its channels wired to the plant by ``sources``."""

    def __init__(self, spec: DaqSpec, sources: Mapping[int, Source], rng: random.Random) -> None:
        super().__init__()
        self.spec = spec
        self._rng = rng
        self.sources = dict(sources)
        self.channels = {
            channel_name(s, c): _Channel() for s in range(1, SLOTS + 1) for c in range(1, CHANNELS_PER_SLOT + 1)
        }
        self.scan: list[int] = []
        self.format_channel = False
        # The last scan: its plan (channels, reply formats) and its readings, for FETCh?.
        self._scanned: _ScanPlan | None = None
        self._readings: list[float] = []
        # The scan as compiled for the current configuration; None after any change to it.
        self._plan: _ScanPlan | None = None
        self._handler_table = self._handlers()  # built once: a poll sends READ? every second

    # -- SCPI -------------------------------------------------------------------------------

    def identity(self) -> str:
        return f"{MAKER},{MODEL},{self.spec.serial},{FIRMWARE}"

    def reset(self) -> None:
        # *RST: every channel back to DCV autorange, the scan list and reading memory cleared,
        # reading format back to values only.
        for ch in self.channels.values():
            ch.function, ch.range_v = "VOLT", None
        self.scan = []
        self._scanned, self._readings, self._plan = None, [], None
        self.format_channel = False

    def device_command(self, header: str, query: bool, arg: str) -> str | None:
        nodes = []
        for node in header.split(":"):
            short = _NODE.get(node)
            if short is None:
                raise ScpiError(ERR_UNDEFINED)
            nodes.append(short)
        handler = self._handler_table.get((tuple(nodes), query))
        if handler is None:
            raise ScpiError(ERR_UNDEFINED)
        return handler(arg)

    def _handlers(self) -> dict[tuple[tuple[str, ...], bool], Callable[[str], str | None]]:
        return {
            (("CONF", "VOLT", "DC"), False): self._conf_volt,
            (("CONF", "VOLT"), False): self._conf_volt,
            (("CONF", "TEMP"), False): self._conf_temp,
            (("ROUT", "SCAN"), False): self._route_scan,
            (("ROUT", "SCAN", "SIZE"), True): lambda arg: self._no_arg(arg) or str(len(self.scan)),
            (("FORM", "READ", "CHAN"), False): self._format_channel,
            (("FORM", "READ", "CHAN"), True): lambda arg: self._no_arg(arg) or str(int(self.format_channel)),
            (("FORM", "READ", "TIME"), False): self._format_off_only,
            (("FORM", "READ", "UNIT"), False): self._format_off_only,
            (("FORM", "READ", "ALAR"), False): self._format_off_only,
            (("READ",), True): self._read,
            (("INIT",), False): self._initiate,
            (("INIT", "IMM"), False): self._initiate,
            (("FETC",), True): self._fetch,
        }

    @staticmethod
    def _no_arg(arg: str) -> None:
        if arg:
            raise ScpiError(ERR_SYNTAX)

    def _conf_volt(self, arg: str) -> str | None:
        params, channels = _split_scan_list(arg)
        range_v: float | None = None
        if params and params[0].upper() not in ("AUTO", "DEF"):
            range_v = _dcv_range(params[0])
        for ch in channels:
            self.channels[ch].function, self.channels[ch].range_v = "VOLT", range_v
        self.scan, self._plan = channels, None
        return None

    def _conf_temp(self, arg: str) -> str | None:
        params, channels = _split_scan_list(arg)
        if len(params) < 2:
            raise ScpiError(ERR_MISSING)
        probe, kind = params[0].upper(), params[1].upper()
        if probe not in ("TC", "TCOUPLE", "DEF") or kind not in ("K", "DEF"):
            raise ScpiError(ERR_ILLEGAL)  # only type-K thermocouples are simulated
        for ch in channels:
            self.channels[ch].function, self.channels[ch].range_v = "TEMP", None
        self.scan, self._plan = channels, None
        return None

    def _route_scan(self, arg: str) -> str | None:
        self.scan, self._plan = parse_scan_list(arg), None
        return None

    def _format_channel(self, arg: str) -> str | None:
        self.format_channel = _on_off(arg)
        return None

    def _format_off_only(self, arg: str) -> str | None:
        if _on_off(arg):
            raise ScpiError(ERR_ILLEGAL)  # time, unit and alarm fields are not simulated
        return None

    def _initiate(self, arg: str) -> str | None:
        self._no_arg(arg)
        if not self.scan:
            raise ScpiError(ERR_CONFLICT)  # nothing to scan
        if self._plan is None:
            self._plan = self._compile_scan()
        self._scanned, self._readings = self._plan, self._plan.take(self._rng.random)
        return None

    def _fetch(self, arg: str) -> str | None:
        self._no_arg(arg)
        if self._scanned is None:
            return ""
        return self._scanned.reply(self._readings, self.format_channel)

    def _read(self, arg: str) -> str | None:
        self._initiate(arg)
        return self._fetch("")

    # -- measurement ------------------------------------------------------------------------

    def _compile_scan(self) -> _ScanPlan:
        """What one scan of the current scan list reads, worked out once per configuration."""
        entries: list[tuple[Source, float, float]] = []
        open_tc: list[int] = []
        for k, ch in enumerate(self.scan):
            cfg = self.channels[ch]
            source = self.sources.get(ch)
            if cfg.function == "TEMP":
                if source is None:
                    open_tc.append(k)  # no thermocouple on the terminals: open circuit
                # A thermocouple reading has no range to exceed.
                entries.append((source or _no_voltage, self.spec.noise_c, math.inf))
            else:
                limit = _OVER_RANGE * (cfg.range_v if cfg.range_v is not None else _DCV_RANGES[-1])
                entries.append((source or _no_voltage, self.spec.noise_v, limit))
        return _ScanPlan(list(self.scan), entries, open_tc)


class _ScanPlan:
    """One scan list as compiled: each channel's source, noise amplitude and overload limit, and
    the reply formats (NR3 readings, with or without channel numbers)."""

    def __init__(self, channels: list[int], entries: list[tuple[Source, float, float]], open_tc: list[int]) -> None:
        self.channels = channels
        self.noise = [noise for _, noise, _ in entries]
        self.limits = [limit for _, _, limit in entries]
        self.open_tc = open_tc
        # Taps of one group are read in one call (scan positions, indices in the group); the
        # other sources one by one.
        groups: dict[GroupRead, tuple[list[int], list[int]]] = {}
        self.single: list[tuple[int, Source]] = []
        for k, (source, _, _) in enumerate(entries):
            if isinstance(source, Tap):
                positions, indices = groups.setdefault(source.read, ([], []))
                positions.append(k)
                indices.append(source.index)
            else:
                self.single.append((k, source))
        self.groups = [(read, positions, indices) for read, (positions, indices) in groups.items()]
        self.formats = {
            False: ",".join("%+.8E" for _ in channels),
            True: ",".join(f"%+.8E,{ch}" for ch in channels),
        }

    def take(self, uniform: Callable[[], float]) -> list[float]:
        """The readings of one scan, in scan order: the true value plus uniform noise (one draw per
        channel, in scan order), an overload above the range."""
        true = [0.0] * len(self.channels)
        for read, positions, indices in self.groups:
            for k, value in zip(positions, read(indices), strict=True):
                true[k] = value
        for k, source in self.single:
            true[k] = source()
        readings = [
            OVERLOAD if abs(v := value + (uniform() * 2.0 - 1.0) * noise) > limit else v
            for value, noise, limit in zip(true, self.noise, self.limits, strict=True)
        ]
        for k in self.open_tc:
            readings[k] = OVERLOAD
        return readings

    def reply(self, readings: list[float], with_channels: bool) -> str:
        return self.formats[with_channels] % tuple(readings)


def _no_voltage() -> float:
    """Nothing wired to the terminals: 0 V (plus the reading's noise)."""
    return 0.0


def _split_scan_list(arg: str) -> tuple[list[str], list[int]]:
    """``10,(@101:103)`` -> (["10"], [101, 102, 103]): the parameters before the scan list."""
    at = arg.find("(@")
    if at < 0:
        raise ScpiError(ERR_MISSING)  # the simulator configures channels, not the bare DMM
    head = arg[:at].strip().rstrip(",")
    params = [p.strip() for p in head.split(",")] if head else []
    return params, parse_scan_list(arg[at:])


def _dcv_range(text: str) -> float:
    word = text.upper()
    if word == "MIN":
        return _DCV_RANGES[0]
    if word == "MAX":
        return _DCV_RANGES[-1]
    try:
        wanted = float(text)
    except ValueError:
        raise ScpiError(ERR_ILLEGAL) from None
    # The instrument selects the smallest range that holds the value given.
    for r in _DCV_RANGES:
        if abs(wanted) <= r:
            return r
    raise ScpiError(ERR_RANGE)


def _on_off(arg: str) -> bool:
    if not arg:
        raise ScpiError(ERR_MISSING)
    value = _ON_OFF.get(arg.strip().upper())
    if value is None:
        raise ScpiError(ERR_ILLEGAL)
    return value


def pack_wiring(cells: int, thermocouples: int) -> list[dict[int, tuple[str, int]]]:
    """Which channel of which mainframe sees which quantity: one dict per mainframe.

    The lab's wiring rule (docs/instruments.md, "DAQ"): the cell-voltage taps in cell order on
    consecutive channels (slot 1 channels 1..20, then slot 2, slot 3, then the next mainframe),
    the thermocouples after the last cell on the next free channels. Values are
    ``("cell", i)`` / ``("tc", j)``, 0-based.
    """
    per_mainframe = SLOTS * CHANNELS_PER_SLOT
    quantities = [("cell", i) for i in range(cells)] + [("tc", j) for j in range(thermocouples)]
    frames: list[dict[int, tuple[str, int]]] = []
    for g, quantity in enumerate(quantities):
        frame, k = divmod(g, per_mainframe)
        if frame == len(frames):
            frames.append({})
        slot, channel = divmod(k, CHANNELS_PER_SLOT)
        frames[frame][channel_name(slot + 1, channel + 1)] = quantity
    return frames
