"""Generic fault-injection box: relays and programmable resistors behind SCPI keywords.

The command layout is ours; it follows the style of fault-insertion units (one SCPI header
per fault channel, a numeric value per channel, ``*RST`` returns every channel to its safe
value). A plant builds one box from a list of :class:`Channel` objects whose ``get`` / ``set``
callables read and write the plant's own state, so the box knows nothing about batteries or
fuel cells.

Only the SCPI text is the interface: :meth:`FaultBox.scpi` takes one line and returns the reply
line (or None), the same contract as :meth:`simulators.supply.Supply.scpi`.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

_ERROR_QUEUE_LEN = 20
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
_RELAY_WORDS = {"ON": 1.0, "OFF": 0.0, "CLOSE": 1.0, "CLOSED": 1.0, "OPEN": 0.0}

ERR_NONE = (0, "No error")
ERR_MISSING = (-109, "Missing parameter")
ERR_UNDEFINED = (-113, "Undefined header")
ERR_RANGE = (-222, "Data out of range")
ERR_ILLEGAL = (-224, "Illegal parameter value")
ERR_OVERFLOW = (-350, "Queue overflow")


class _ScpiError(Exception):
    def __init__(self, error: tuple[int, str]) -> None:
        super().__init__(error[1])
        self.error = error


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


class FaultBox:
    def __init__(self, idn: str, channels: Sequence[Channel]) -> None:
        self.idn = idn
        self.channels: dict[str, Channel] = {}
        for ch in channels:
            key = ch.keyword.upper()
            if key in self.channels:
                raise ValueError(f"fault box: channel {key!r} defined twice")
            self.channels[key] = ch
        self.errors: deque[tuple[int, str]] = deque()

    def reset(self) -> None:
        for ch in self.channels.values():
            if ch.set is not None and ch.safe is not None:
                ch.set(ch.safe)

    def scpi(self, line: str) -> str | None:
        """Process one line (commands separated by ';'); reply to its queries, or None."""
        replies: list[str] = []
        for raw in line.split(";"):
            command = raw.strip()
            if not command:
                continue
            try:
                reply = self._execute(command)
            except _ScpiError as exc:
                self._push_error(exc.error)
                continue
            if reply is not None:
                replies.append(reply)
        return ";".join(replies) if replies else None

    def _execute(self, command: str) -> str | None:
        header, _, arg = command.replace("\t", " ").partition(" ")
        arg = arg.strip()
        header = header.upper()
        query = header.endswith("?")
        if query:
            header = header[:-1]
        if header.startswith("*"):
            return self._common(header, query)
        header = header.lstrip(":")
        if header in ("SYST:ERR", "SYSTEM:ERROR", "SYST:ERR:NEXT", "SYSTEM:ERROR:NEXT") and query:
            return self._pop_error()
        ch = self.channels.get(header)
        if ch is None:
            raise _ScpiError(ERR_UNDEFINED)
        if query:
            if arg:
                raise _ScpiError(ERR_ILLEGAL)
            return _format(ch.get(), ch.integer)
        if ch.set is None:
            raise _ScpiError(ERR_UNDEFINED)  # a sense input has no command form
        ch.set(_parse(arg, ch))
        return None

    def _common(self, header: str, query: bool) -> str | None:
        if header == "*IDN" and query:
            return self.idn
        if header == "*RST" and not query:
            self.reset()
            return None
        if header == "*CLS" and not query:
            self.errors.clear()
            return None
        if header == "*OPC" and query:
            return "1"
        raise _ScpiError(ERR_UNDEFINED)

    def _push_error(self, error: tuple[int, str]) -> None:
        if len(self.errors) >= _ERROR_QUEUE_LEN:
            self.errors[-1] = ERR_OVERFLOW
        else:
            self.errors.append(error)

    def _pop_error(self) -> str:
        code, text = self.errors.popleft() if self.errors else ERR_NONE
        return f'{code},"{text}"'


def _parse(arg: str, ch: Channel) -> float:
    if not arg:
        raise _ScpiError(ERR_MISSING)
    word = arg.upper()
    # Relay words only where a channel is a relay (0..1 whole numbers): "ON" into a
    # resistance would silently become 1 Ohm.
    is_relay = ch.integer and ch.lo == 0.0 and ch.hi == 1.0
    if word in _RELAY_WORDS:
        if not is_relay:
            raise _ScpiError(ERR_ILLEGAL)
        return _RELAY_WORDS[word]
    if word in ("MIN", "MINIMUM"):
        return ch.lo
    if word in ("MAX", "MAXIMUM"):
        return ch.hi
    if _NUMBER.match(arg) is None:
        raise _ScpiError(ERR_ILLEGAL)
    value = float(arg)
    if not math.isfinite(value):
        raise _ScpiError(ERR_ILLEGAL)
    if ch.integer:
        if value != round(value):
            raise _ScpiError(ERR_ILLEGAL)
        value = float(round(value))
    if not ch.lo <= value <= ch.hi:
        raise _ScpiError(ERR_RANGE)
    return value


def _format(value: float, integer: bool) -> str:
    if integer:
        return str(round(value))
    return repr(float(value))
