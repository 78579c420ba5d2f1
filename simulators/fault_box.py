"""Generic fault-injection box: relays and programmable resistors behind SCPI keywords.

The command layout is ours; it follows the style of fault-insertion units (one SCPI header
per fault channel, a numeric value per channel, ``*RST`` returns every channel to its safe
value). A plant builds one box from a list of :class:`Channel` objects whose ``get`` / ``set``
callables read and write the plant's own state, so the box knows nothing about batteries or
fuel cells.

Only the SCPI text is the interface: :meth:`FaultBox.scpi` takes one line and returns the reply
line (or None), the same contract as :meth:`simulators.supply.Supply.scpi`. The IEEE 488.2
common commands and the error queue are :class:`simulators.scpi_device.ScpiDevice`'s.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from simulators.scpi_device import ERR_ILLEGAL, ERR_MISSING, ERR_RANGE, ERR_UNDEFINED, ScpiDevice, ScpiError

_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
_RELAY_WORDS = {"ON": 1.0, "OFF": 0.0, "CLOSE": 1.0, "CLOSED": 1.0, "OPEN": 0.0}


@dataclass(frozen=True)
class Channel:
    """One fault channel of the box.

    ``keyword`` is the SCPI header in upper case (``"OPEN:CELL"``); its query is the keyword
    followed by ``?``. ``set`` None makes the channel a read-only sense input (a position
    switch). A value outside ``lo..hi`` is refused with -222; ``safe`` is what ``*RST``
    restores; ``integer`` channels (line numbers, relay states) take and report whole numbers.
    """

    keyword: str
    get: Callable[[], float]
    set: Callable[[float], None] | None = None
    lo: float = 0.0
    hi: float = 1.0
    safe: float | None = 0.0
    integer: bool = False


class FaultBox(ScpiDevice):
    def __init__(self, idn: str, channels: Sequence[Channel]) -> None:
        super().__init__()
        self.idn = idn
        self.channels: dict[str, Channel] = {}
        for ch in channels:
            key = ch.keyword.upper()
            if key in self.channels:
                raise ValueError(f"fault box: channel {key!r} defined twice")
            self.channels[key] = ch

    def reset(self) -> None:
        for ch in self.channels.values():
            if ch.set is not None and ch.safe is not None:
                ch.set(ch.safe)

    def identity(self) -> str:
        return self.idn

    def device_command(self, header: str, query: bool, arg: str) -> str | None:
        ch = self.channels.get(header)
        if ch is None:
            raise ScpiError(ERR_UNDEFINED)
        if query:
            if arg:
                raise ScpiError(ERR_ILLEGAL)
            return _format(ch.get(), ch.integer)
        if ch.set is None:
            raise ScpiError(ERR_UNDEFINED)  # a sense input has no command form
        ch.set(_parse(arg, ch))
        return None


def _parse(arg: str, ch: Channel) -> float:
    if not arg:
        raise ScpiError(ERR_MISSING)
    word = arg.upper()
    # Relay words only where a channel is a relay (0..1 whole numbers): "ON" into a
    # resistance would silently become 1 Ohm.
    is_relay = ch.integer and ch.lo == 0.0 and ch.hi == 1.0
    if word in _RELAY_WORDS:
        if not is_relay:
            raise ScpiError(ERR_ILLEGAL)
        return _RELAY_WORDS[word]
    if word in ("MIN", "MINIMUM"):
        return ch.lo
    if word in ("MAX", "MAXIMUM"):
        return ch.hi
    if _NUMBER.match(arg) is None:
        raise ScpiError(ERR_ILLEGAL)
    value = float(arg)
    if not math.isfinite(value):
        raise ScpiError(ERR_ILLEGAL)
    if ch.integer:
        if value != round(value):
            raise ScpiError(ERR_ILLEGAL)
        value = float(round(value))
    if not ch.lo <= value <= ch.hi:
        raise ScpiError(ERR_RANGE)
    return value


def _format(value: float, integer: bool) -> str:
    if integer:
        return str(round(value))
    return repr(float(value))
