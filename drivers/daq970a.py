"""Keysight DAQ970A data acquisition units with DAQM901A multiplexers: the lab's own cell-voltage
taps and thermocouples on the pack, read independently of the BMS.

The subset used (Keysight DAQ970A/DAQ973A Programming Guide, chapter 2 "SCPI Programming"; see
docs/instruments.md, "DAQ"):

* set-up at connect, on every mainframe: ``*IDN?`` (must name a DAQ970A or DAQ973A), ``*CLS``,
  ``FORMat:READing:CHANnel ON`` (each reading followed by its channel number),
  ``CONFigure:VOLTage:DC 10,(@<cell channels>)`` (the 10 V range: its accuracy is the one the
  station's equipment register states), ``CONFigure:TEMPerature TC,K,(@<thermocouple channels>)``,
  then ``ROUTe:SCAN (@<all channels>)`` (each CONFigure redefines the scan list to its own
  channels), and ``SYSTem:ERRor?`` until it is empty;
* polling: ``READ?`` every ``poll_interval`` on every mainframe (one scan; the readings come back
  as ``<value>,<channel>,...``).

A pack has more cells than one mainframe has channels (three DAQM901A: 60), so the device may
span several mainframes: ``transport`` is the first, ``mainframes`` lists the others. Cells are
numbered in the order their channels are listed, mainframe by mainframe; so are thermocouples.

Signals: ``cell_v_max`` / ``cell_v_min`` (V) and ``cell_t_max`` / ``cell_t_min`` (degC) over every
scanned channel, and ``cell_v_max_id`` ... ``cell_t_min_id`` (the 1-based cell or thermocouple
number); with ``per_channel: true`` also ``cell_v_<n>`` and ``cell_t_<n>`` for every reading.
A poll fails, and publishes nothing, when a mainframe does not answer, answers other channels
than it was given, or reads an overload (``+9.9E+37``: an open thermocouple or a lost tap): the
extremes would be judged on a partial pack.

Station config::

    transport: {inproc: daq}
    poll_interval: 1 s
    cells: "@101:120,201:220,301:320"       # cell taps on this mainframe, in cell order
    thermocouples: "@113:120"               # optional
    per_channel: false                      # true: also cell_v_<n> / cell_t_<n> for every reading
    mainframes:                             # optional: further mainframes of the same device
      - {transport: {inproc: daq2}, cells: "@101:120,201:220,301:320"}
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.device import ConfigError, DeviceContext, SignalInfo
from bench.errors import DeviceError
from bench.units import parse_unit
from drivers.scpi import ScpiInstrument, channel_list, check_transport, open_transport
from drivers.scpi_driver import ScpiDriver

_KEYS = {"transport", "poll_interval", "model", "cells", "thermocouples", "mainframes", "per_channel"}
_MAINFRAME_KEYS = {"transport", "cells", "thermocouples"}
# Channel numbers sccc: slot 1..3 of a DAQ970A, channel 1..99 of the module in it (the module
# refuses a channel it does not have, with an error the set-up reports).
_SLOTS = range(1, 4)
_CHANNELS = range(1, 100)
# The instrument's overload / "no reading" value (an open thermocouple reads it too).
_OVERLOAD = 9.9e37
# DCV range for the cell taps: 10 V holds any cell voltage, and the register states its accuracy.
DCV_RANGE = "10"


@dataclass
class _Mainframe:
    label: str  # "mainframe 2", for messages
    transport_config: Mapping[str, Any]
    cells: list[int]  # channels, in cell order
    thermocouples: list[int]
    first_cell: int  # 1-based number of its first cell
    first_tc: int
    instr: ScpiInstrument | None = None

    def __post_init__(self) -> None:
        self.channels = set(self.cells) | set(self.thermocouples)
        # The order a scan returns its readings in: the scan list, which the instrument sorts.
        self.scan_order = sorted(self.channels)
        where = {ch: k for k, ch in enumerate(self.scan_order)}
        self.cell_at = [where[ch] for ch in self.cells]
        self.tc_at = [where[ch] for ch in self.thermocouples]


def parse_channels(text: Any, key: str) -> list[int]:
    """``"@101:103,201"`` (or ``"(@...)"``) -> [101, 102, 103, 201]."""
    if not isinstance(text, str):
        raise ConfigError(f"{key}: expected a channel list like '@101:120,201:205', got {text!r}", key)
    body = text.strip()
    if body.startswith("(") and body.endswith(")"):
        body = body[1:-1]
    if not body.startswith("@"):
        raise ConfigError(f"{key}: expected a channel list like '@101:120,201:205', got {text!r}", key)
    out: list[int] = []
    for part in body[1:].split(","):
        first, sep, last = part.strip().partition(":")
        try:
            a = int(first)
            b = int(last) if sep else a
        except ValueError:
            raise ConfigError(f"{key}: not a channel or range: '{part.strip()}'", key) from None
        if b < a:
            raise ConfigError(f"{key}: range '{part.strip()}' runs backwards", key)
        for ch in range(a, b + 1):
            slot, number = divmod(ch, 100)
            if slot not in _SLOTS or number not in _CHANNELS:
                raise ConfigError(f"{key}: channel {ch} is not sccc with slot 1..3", key)
            out.append(ch)
    return out


def scan_list(channels: list[int]) -> str:
    """[101, 102, 103, 201] -> ``(@101:103,201)``: the instrument's own notation, ranges joined."""
    return channel_list(channels)


class Daq970aDriver(ScpiDriver):
    poll_what = "readings"
    setup_what = "configuring the scan"
    # The first scan at connect is a whole poll: the next one is due a poll interval later.
    polled_at_connect = True

    def __init__(self, name: str, config: Mapping[str, Any], base_dir: Path) -> None:
        super().__init__(name, config, base_dir, keys=_KEYS, kind="a DAQ", poll_interval="1 s")
        extra = self.config.get("mainframes", [])
        if not isinstance(extra, list) or any(not isinstance(m, Mapping) for m in extra):
            raise ConfigError("mainframes: expected a list of {transport, cells, thermocouples}", "mainframes")
        self.frames: list[_Mainframe] = []
        cell, tc = 1, 1
        seen: set[tuple[int, int]] = set()
        for k, entry in enumerate([self.config, *extra], start=1):
            where = "" if k == 1 else f"mainframes[{k - 2}]."
            if k > 1:
                unknown = sorted(set(entry) - _MAINFRAME_KEYS)
                if unknown:
                    raise ConfigError(f"{where}{unknown[0]}: unknown key (keys: transport, cells, thermocouples)")
                if not isinstance(entry.get("transport"), Mapping):
                    raise ConfigError(f"{where}transport: each mainframe needs its transport", "mainframes")
                check_transport(entry["transport"])
            cells = parse_channels(entry["cells"], f"{where}cells") if "cells" in entry else []
            tcs = parse_channels(entry["thermocouples"], f"{where}thermocouples") if "thermocouples" in entry else []
            for ch in cells + tcs:
                if (k, ch) in seen:
                    raise ConfigError(f"{where}channel {ch} is listed twice", "cells")
                seen.add((k, ch))
            if not cells and not tcs:
                raise ConfigError(f"{where}cells: a mainframe scans cells, thermocouples or both", "cells")
            self.frames.append(_Mainframe(f"mainframe {k}", entry["transport"], cells, tcs, cell, tc))
            cell += len(cells)
            tc += len(tcs)
        self.cell_count = cell - 1
        self.tc_count = tc - 1
        per_channel = self.config.get("per_channel", False)
        if not isinstance(per_channel, bool):
            raise ConfigError(f"per_channel: expected true or false, got {per_channel!r}", "per_channel")
        # Every reading as a signal of its own (cell_v_<n>, cell_t_<n>), besides the extremes.
        self.per_channel = per_channel
        self._extra_identities: dict[str, str] = {}

    def signals(self) -> list[SignalInfo]:
        n = self.name
        volt, deg, none = parse_unit("V"), parse_unit("degC"), parse_unit("")
        out: list[SignalInfo] = []
        if self.cell_count:
            out += [
                SignalInfo(f"{n}.cell_v_max", volt, doc=f"highest of {self.cell_count} cell-voltage taps (DCV)"),
                SignalInfo(f"{n}.cell_v_min", volt, doc=f"lowest of {self.cell_count} cell-voltage taps (DCV)"),
                SignalInfo(f"{n}.cell_v_max_id", none, doc="cell number (1-based) of cell_v_max"),
                SignalInfo(f"{n}.cell_v_min_id", none, doc="cell number (1-based) of cell_v_min"),
            ]
        if self.tc_count:
            out += [
                SignalInfo(f"{n}.cell_t_max", deg, doc=f"highest of {self.tc_count} type-K thermocouples"),
                SignalInfo(f"{n}.cell_t_min", deg, doc=f"lowest of {self.tc_count} type-K thermocouples"),
                SignalInfo(f"{n}.cell_t_max_id", none, doc="thermocouple number (1-based) of cell_t_max"),
                SignalInfo(f"{n}.cell_t_min_id", none, doc="thermocouple number (1-based) of cell_t_min"),
            ]
        if self.per_channel:
            out += [
                SignalInfo(f"{n}.cell_v_{k}", volt, doc=f"cell {k} tap (DCV)") for k in range(1, self.cell_count + 1)
            ]
            out += [
                SignalInfo(f"{n}.cell_t_{k}", deg, doc=f"thermocouple {k} (type K)")
                for k in range(1, self.tc_count + 1)
            ]
        return out

    def identity_problem(self, identity: Mapping[str, str]) -> str | None:
        if not identity["model"].upper().startswith(("DAQ970", "DAQ973")):
            return "not a Keysight DAQ970A / DAQ973A"
        return super().identity_problem(identity)

    async def connect(self, ctx: DeviceContext) -> None:
        try:
            await super().connect(ctx)
        except BaseException:
            await self._close_extra()
            raise

    async def setup(self, instr: ScpiInstrument) -> None:
        first = self.frames[0]
        first.instr = instr
        await self._configure(first)
        assert self._ctx is not None
        # The further mainframes: opened, identified, configured and their errors drained here, so
        # that the device is connected only when every mainframe is ready to scan.
        for frame in self.frames[1:]:
            transport = open_transport(self.name, frame.transport_config, self._ctx.inproc)
            frame.instr = other = ScpiInstrument(self.name, transport, error_query=self.error_query)
            identity = await other.identify()
            idn = ",".join(v for v in identity.values() if v)
            problem = self.identity_problem(identity)
            if problem is not None:
                raise DeviceError(self.name, f"{frame.label}: *IDN? answered '{idn}': {problem}")
            self._extra_identities[frame.label] = idn
            await other.write("*CLS")
            await self._configure(frame)
            await other.check_errors(f"{self.setup_what} of {frame.label}")

    async def _configure(self, frame: _Mainframe) -> None:
        assert frame.instr is not None
        await frame.instr.write("FORM:READ:CHAN ON")
        if frame.cells:
            await frame.instr.write(f"CONF:VOLT:DC {DCV_RANGE},{scan_list(frame.cells)}")
        if frame.thermocouples:
            await frame.instr.write(f"CONF:TEMP TC,K,{scan_list(frame.thermocouples)}")
        await frame.instr.write(f"ROUT:SCAN {scan_list(frame.cells + frame.thermocouples)}")

    async def identify(self) -> dict[str, str]:
        identity = await super().identify()
        if self._extra_identities:
            identity["mainframes"] = "; ".join(f"{k}: {v}" for k, v in self._extra_identities.items())
        return identity

    async def read_state(self, instr: ScpiInstrument, ctx: DeviceContext) -> None:
        try:
            self.publish(await self.poll_once(instr))
        except ValueError as exc:
            raise DeviceError(self.name, f"first scan: {exc}") from None

    async def poll_once(self, instr: ScpiInstrument) -> dict[str, float]:
        """One scan of every mainframe; the extremes over all of them, or an error."""
        volts: list[float] = []
        temps: list[float] = []
        for frame in self.frames:
            assert frame.instr is not None
            channels, values = _readings(await frame.instr.query("READ?"), frame.label)
            if channels != frame.scan_order:
                # Not the scan list as sent (another order, a channel twice or missing): by channel.
                readings = dict(zip(channels, values, strict=True))
                if readings.keys() != frame.channels:
                    expected = sorted(frame.channels)
                    raise ValueError(f"{frame.label}: scanned channels {sorted(readings)}, expected {expected}")
                values = [readings[ch] for ch in frame.scan_order]
            volts += [values[k] for k in frame.cell_at]
            temps += [values[k] for k in frame.tc_at]
        out: dict[str, float] = {}
        for prefix, values in (("cell_v", volts), ("cell_t", temps)):
            if values:
                # Numbered 1.. in order; a tie goes to the highest number for the maximum and the
                # lowest for the minimum (as max/min over (value, number) pairs).
                hi, lo = _last_max(values), _first_min(values)
                out |= {f"{prefix}_max": values[hi], f"{prefix}_min": values[lo]}
                out |= {f"{prefix}_max_id": float(hi + 1), f"{prefix}_min_id": float(lo + 1)}
            if self.per_channel:
                out |= {f"{prefix}_{number}": value for number, value in enumerate(values, start=1)}
        return out

    async def set(self, values: Mapping[str, float]) -> dict[str, float]:
        raise DeviceError(self.name, f"'{next(iter(values), '')}' cannot be set: the DAQ only measures")

    async def close(self) -> None:
        await self._close_extra()
        await super().close()

    async def _close_extra(self) -> None:
        for frame in self.frames[1:]:
            if frame.instr is not None:
                instr, frame.instr = frame.instr, None
                # Closing must not hide why the device is closed.
                with contextlib.suppress(Exception):
                    await instr.transport.close()


def _readings(reply: str, label: str) -> tuple[list[int], list[float]]:
    """``+4.1E+00,101,+4.2E+00,102`` -> ([101, 102], [4.1, 4.2]); a ValueError for an overload."""
    fields = reply.split(",")
    if len(fields) % 2:
        raise ValueError(f"{label}: expected <reading>,<channel> pairs, got '{reply}'")
    try:
        # float() and int() ignore the blanks around a field, as the instrument may send them.
        values = list(map(float, fields[::2]))
        channels = list(map(int, fields[1::2]))
    except ValueError:
        raise _first_problem(reply, fields, label) from None
    if not all(map(_OVERLOAD.__gt__, map(abs, values))):  # also NaN
        raise _first_problem(reply, fields, label)
    return channels, values


def _first_problem(reply: str, fields: list[str], label: str) -> ValueError:
    """What is wrong with the first pair of a reply that does not read as a scan, in reply order."""
    for value_text, channel_text in zip(fields[::2], fields[1::2], strict=True):
        try:
            value, channel = float(value_text), int(channel_text)
        except ValueError:
            break
        if not abs(value) < _OVERLOAD:
            return ValueError(
                f"{label}: channel {channel} reads overload ({value_text.strip()}): open thermocouple or tap?"
            )
    return ValueError(f"{label}: expected <reading>,<channel> pairs, got '{reply}'")


def _last_max(values: list[float]) -> int:
    """Index of the maximum; of the last one where several are equal."""
    top = max(values)
    return len(values) - 1 - values[::-1].index(top)


def _first_min(values: list[float]) -> int:
    """Index of the minimum; of the first one where several are equal."""
    return values.index(min(values))
