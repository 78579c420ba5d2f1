"""Fault-injection box over SCPI: relays and programmable resistors, one SCPI keyword per channel.

The driver knows no box: the station's ``channels`` table names each channel's SCPI keyword,
unit, range or state names, so the same driver serves any box that follows the layout
(``<KEYWORD> <value>`` to set, ``<KEYWORD>?`` to read, ``*RST`` to its safe values,
``SYST:ERR?``)::

    channels:
      open_wire: {scpi: "OPEN:CELL", doc: "cell sense line opened (0 = none)", min: 0, max: 192}
      iso_ro:    {scpi: "ISO:RES", unit: kOhm, min: 0, max: 10000}
      ext_short: {scpi: "SHOR:EXT", states: {OPEN: 0, CLOSED: 1}}
      valve_position: {scpi: "VALV:POS", states: {CLOSED: 0, OPEN: 1}, read_only: true}

Every channel becomes the signal ``<device>.<channel>``. Settable channels are written, read
back and compared; read-only channels (sense inputs such as a position switch) are polled
every ``poll_interval``. ``model``, when given, must appear in the model field of ``*IDN?``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.device import ConfigError, DeviceContext, SignalInfo
from bench.errors import DeviceError, ExpressionError
from bench.units import Unit, parse_unit
from drivers.scpi import ScpiInstrument, parse_number
from drivers.scpi_driver import ScpiDriver

_KEYS = {"transport", "poll_interval", "channels", "model"}
_CHANNEL_KEYS = {"scpi", "unit", "doc", "min", "max", "states", "read_only"}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KEYWORD = re.compile(r"^:?[A-Za-z][A-Za-z0-9]*(?::[A-Za-z][A-Za-z0-9]*)*$")


@dataclass(frozen=True)
class ChannelSpec:
    name: str
    scpi: str
    unit: Unit
    doc: str
    minimum: float | None
    maximum: float | None
    states: dict[str, int] | None
    read_only: bool


class FaultBoxDriver(ScpiDriver):
    poll_what = "readings"

    def __init__(self, name: str, config: Mapping[str, Any], base_dir: Path) -> None:
        super().__init__(name, config, base_dir, keys=_KEYS, kind="a fault-injection box", poll_interval="200 ms")
        table = self.config.get("channels")
        if not isinstance(table, Mapping) or not table:
            raise ConfigError("a fault-injection box needs 'channels': {name: {scpi: KEYWORD, ...}}", "channels")
        self.channels = {str(k): _channel(str(k), v) for k, v in table.items()}
        keywords = [c.scpi.lstrip(":").upper() for c in self.channels.values()]
        for kw in keywords:
            if keywords.count(kw) > 1:
                raise ConfigError(f"channels: SCPI keyword '{kw}' is used by more than one channel", "channels")
        self._sense = [ch for ch in self.channels.values() if ch.read_only]
        self._sense_query = ";".join(f"{ch.scpi}?" for ch in self._sense)

    def signals(self) -> list[SignalInfo]:
        out = []
        for ch in self.channels.values():
            kind = "sense input, polled" if ch.read_only else "set and read back"
            doc = f"{ch.doc} ({ch.scpi}, {kind})" if ch.doc else f"{ch.scpi} ({kind})"
            out.append(
                SignalInfo(f"{self.name}.{ch.name}", ch.unit, ch.states, not ch.read_only, ch.minimum, ch.maximum, doc)
            )
        return out

    async def read_state(self, instr: ScpiInstrument, ctx: DeviceContext) -> None:
        for ch in self.channels.values():
            try:
                value = parse_number(await instr.query(f"{ch.scpi}?"))
            except (DeviceError, ValueError) as exc:
                raise DeviceError(
                    self.name, f"channel {ch.name}: '{ch.scpi}?' failed ({exc}); is it a channel of this box?"
                ) from None
            ctx.publish(f"{self.name}.{ch.name}", value, ctx.loop.time())
        await instr.check_errors("reading the channels")

    def polls(self) -> bool:
        return bool(self._sense)

    async def poll_once(self, instr: ScpiInstrument) -> dict[str, float]:
        query = self._sense_query
        parts = (await instr.query(query)).split(";")
        if len(parts) != len(self._sense):
            raise ValueError(f"{len(parts)} values for {len(self._sense)} channels in reply to '{query}'")
        return {ch.name: parse_number(p) for ch, p in zip(self._sense, parts, strict=True)}

    async def set(self, values: Mapping[str, float]) -> dict[str, float]:
        assert self._instr is not None and self._ctx is not None
        readback: dict[str, float] = {}
        for short, value in values.items():
            ch = self.channels.get(short)
            if ch is None:
                raise DeviceError(self.name, f"'{short}' is not a channel of this box")
            if ch.read_only:
                raise DeviceError(self.name, f"'{short}' is a sense input ({ch.scpi}?) and cannot be set")
            want = float(value)
            text = str(int(want)) if want == int(want) else f"{want:.6g}"
            await self._instr.write(f"{ch.scpi} {text}")
            got = parse_number(await self._instr.query(f"{ch.scpi}?"))
            await self._instr.check_errors(f"setting {short}")
            if abs(got - want) > max(1e-6, abs(want) * 1e-6):
                raise DeviceError(self.name, f"{short} read back {got:g}, expected {want:g}")
            readback[short] = got
            self._ctx.publish(f"{self.name}.{short}", got, self._ctx.loop.time())
        return readback


def _channel(name: str, spec: Any) -> ChannelSpec:
    where = f"channels.{name}"

    def fail(message: str) -> ConfigError:
        return ConfigError(f"{where}: {message}", "channels")

    if not _NAME.match(name):
        raise fail("a channel name is a signal name: letters, digits and '_', not starting with a digit")
    if not isinstance(spec, Mapping):
        raise fail(f'expected a mapping such as {{scpi: "OPEN:CELL"}}, got {spec!r}')
    unknown = sorted(set(spec) - _CHANNEL_KEYS)
    if unknown:
        raise fail(f"unknown key '{unknown[0]}' (keys: {', '.join(sorted(_CHANNEL_KEYS))})")
    scpi = spec.get("scpi")
    if not isinstance(scpi, str) or not _KEYWORD.match(scpi):
        raise fail(f"scpi: expected a SCPI header such as 'OPEN:CELL' (no '?', no value), got {scpi!r}")
    unit_text = spec.get("unit", "")
    try:
        unit = parse_unit(str(unit_text))
    except ExpressionError as exc:
        raise fail(f"unit: {exc}") from None
    doc = spec.get("doc", "")
    if not isinstance(doc, str):
        raise fail(f"doc: expected text, got {doc!r}")
    read_only = spec.get("read_only", False)
    if not isinstance(read_only, bool):
        raise fail(f"read_only: expected true or false, got {read_only!r}")
    states = spec.get("states")
    lo, hi = spec.get("min"), spec.get("max")
    if states is not None:
        if not isinstance(states, Mapping) or not states:
            raise fail(f"states: expected a mapping such as {{OPEN: 0, CLOSED: 1}}, got {states!r}")
        for state, code in states.items():
            if not isinstance(state, str) or not _NAME.match(state):
                raise fail(f"states: state names are words such as OPEN, got {state!r}")
            if isinstance(code, bool) or not isinstance(code, int):
                raise fail(f"states.{state}: expected a whole number, got {code!r}")
        if unit_text or lo is not None or hi is not None:
            raise fail("a channel with 'states' takes no 'unit', 'min' or 'max'")
        codes = [int(c) for c in states.values()]
        if len(set(codes)) != len(codes):
            raise fail("states: two states share one value")
        return ChannelSpec(name, scpi, unit, doc, min(codes), max(codes), dict(states), read_only)
    bounds: list[float | None] = []
    for key, value in (("min", lo), ("max", hi)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise fail(f"{key}: expected a number in the channel's unit, got {value!r}")
        bounds.append(None if value is None else float(value))
    if bounds[0] is not None and bounds[1] is not None and bounds[0] > bounds[1]:
        raise fail(f"min ({bounds[0]:g}) is above max ({bounds[1]:g})")
    return ChannelSpec(name, scpi, unit, doc, bounds[0], bounds[1], None, read_only)
