"""The IEEE 488.2 / SCPI core that every simulated SCPI instrument shares.

A line holds commands separated by ``;``; the replies of its queries are joined with ``;``.
:class:`ScpiDevice` answers the IEEE 488.2 mandatory common commands and keeps the status
registers and the error queue; a device supplies its identity, its ``*RST`` and its own
headers (:meth:`ScpiDevice.identity`, :meth:`ScpiDevice.reset`,
:meth:`ScpiDevice.device_command`).

Common commands: ``*CLS``, ``*ESE``, ``*ESE?``, ``*ESR?``, ``*IDN?``, ``*OPC``, ``*OPC?``,
``*RST``, ``*SRE``, ``*SRE?``, ``*STB?``, ``*TST?``, ``*WAI``.

Status model (IEEE 488.2 section 11, SCPI 1999 status reporting):

* Standard Event Status Register (``*ESR?`` reads and clears it): bit 0 OPC (set by ``*OPC``),
  bit 2 QYE, bit 3 DDE, bit 4 EXE, bit 5 CME (set by every queued error of that class, by its
  SCPI code range: -1xx command, -2xx execution, -3xx device-dependent, -4xx query), bit 7 PON
  (set at power-on, i.e. when the simulator is built). ``*ESE`` masks it into the status byte.
* Status Byte (``*STB?``, not cleared by reading): bit 2 error/event queue not empty, bit 4 MAV
  (a reply of this line is waiting in the output queue), bit 5 ESB (ESR AND ESE is non-zero),
  bit 6 MSS (status byte AND ``*SRE`` mask is non-zero). Bits 3 (QUEStionable) and 7
  (OPERation) stay 0: no simulator has those SCPI registers.
* Every command finishes before the next one is parsed (no overlapped commands): ``*OPC`` sets
  OPC at once, ``*OPC?`` answers ``1``, ``*WAI`` has nothing to wait for.
* ``*RST`` resets the device settings only (:meth:`ScpiDevice.reset`); status registers, masks
  and the error queue stay. ``*CLS`` clears the ESR and the error queue; the masks stay.
* ``*TST?`` answers ``0`` (passed) and changes nothing.

A simulated query error (QYE) never happens: a line's replies go out with the line, so no
query can be interrupted or left unread by the instrument's own doing.
"""

from __future__ import annotations

import abc
import math
from collections import deque
from collections.abc import Callable

_ERROR_QUEUE_LEN = 20
# Distinct lines kept split per instrument (a poll repeats one line; setpoints vary).
_LINE_CACHE_SIZE = 64

ERR_NONE = (0, "No error")
ERR_SYNTAX = (-102, "Syntax error")
ERR_DATA_TYPE = (-104, "Data type error")
ERR_PARAMETER_NOT_ALLOWED = (-108, "Parameter not allowed")
ERR_MISSING = (-109, "Missing parameter")
ERR_UNDEFINED = (-113, "Undefined header")
ERR_PROTECTED = (-203, "Command protected")
ERR_CONFLICT = (-221, "Settings conflict")
ERR_RANGE = (-222, "Data out of range")
ERR_ILLEGAL = (-224, "Illegal parameter value")
ERR_OVERFLOW = (-350, "Queue overflow")

ERROR_QUERY_HEADERS = frozenset({"SYST:ERR", "SYSTEM:ERROR", "SYST:ERR:NEXT", "SYSTEM:ERROR:NEXT"})

# Standard Event Status Register bits (IEEE 488.2 section 11).
ESR_OPC = 1 << 0
ESR_QYE = 1 << 2
ESR_DDE = 1 << 3
ESR_EXE = 1 << 4
ESR_CME = 1 << 5
ESR_PON = 1 << 7

# Status Byte bits (IEEE 488.2 section 11; bit 2 as SCPI 1999 assigns it).
STB_EAV = 1 << 2
STB_MAV = 1 << 4
STB_ESB = 1 << 5
STB_MSS = 1 << 6

# The ESR bit an error sets, by its SCPI class (the hundreds of the code, SCPI 1999 SYSTem:ERRor):
# -1xx command, -2xx execution, -3xx device-dependent, -4xx query, -5xx power on, -8xx
# operation complete. A device that numbers its errors positively (Yokogawa) keeps the classes.
_ESR_BIT_OF_CLASS = {1: ESR_CME, 2: ESR_EXE, 3: ESR_DDE, 4: ESR_QYE, 5: ESR_PON, 8: ESR_OPC}


class ScpiError(Exception):
    def __init__(self, error: tuple[int, str]) -> None:
        super().__init__(error[1])
        self.error = error


def event_bit(code: int) -> int:
    """The Standard Event Status Register bit a queued error sets."""
    return _ESR_BIT_OF_CLASS.get(abs(code) // 100, ESR_DDE)


def parse_channel_list(text: str, valid: Callable[[int], bool], empty_ok: bool = False) -> list[int]:
    """``(@101:103,201)`` -> [101, 102, 103, 201]: a SCPI channel list, ranges expanded.

    A ScpiError for anything else: a syntax error for what is no list, a range error for a
    reversed range or a channel that ``valid`` refuses. ``empty_ok``: an empty element is skipped
    (a scan list may be ``(@)``, which empties it), else it is a syntax error.
    """
    body = text.strip()
    if not (body.startswith("(@") and body.endswith(")")):
        raise ScpiError(ERR_SYNTAX)
    out: list[int] = []
    for part in body[2:-1].split(","):
        part = part.strip()
        if not part and empty_ok:
            continue
        first, sep, last = part.partition(":")
        try:
            a, b = int(first), int(last) if sep else int(first)
        except ValueError:
            raise ScpiError(ERR_SYNTAX) from None
        if b < a or not all(valid(ch) for ch in range(a, b + 1)):
            raise ScpiError(ERR_RANGE)
        out.extend(range(a, b + 1))
    return out


class ScpiDevice(abc.ABC):
    # The query that reads this device's error queue (drivers and tests use it).
    error_query = "SYST:ERR?"
    # The headers (upper case, no leading ':') answered from the error queue before the device
    # sees them; a device that routes its own error query sets this empty.
    error_headers: frozenset[str] = ERROR_QUERY_HEADERS
    # Yokogawa numbers its errors 113, 222 ... where SCPI says -113, -222.
    positive_error_codes = False

    def __init__(self) -> None:
        self.errors: deque[tuple[int, str]] = deque()
        self.esr = ESR_PON  # the simulator is built when the instrument is switched on
        self.ese = 0
        self.sre = 0
        # Replies already produced on the line being parsed: the output queue behind MAV.
        self._pending: list[str] = []
        # Lines as split into commands: a poll sends the same line every time.
        self._lines: dict[str, list[tuple[str, bool, str]]] = {}

    @abc.abstractmethod
    def identity(self) -> str:
        """The ``*IDN?`` reply."""

    @abc.abstractmethod
    def reset(self) -> None:
        """What ``*RST`` does to the device settings (its power-on state)."""

    def device_command(self, header: str, query: bool, arg: str) -> str | None:
        """One of the device's own headers (upper case, no leading ':' or trailing '?').

        Raise :class:`ScpiError` to queue an error; return the reply of a query.
        """
        raise ScpiError(ERR_UNDEFINED)

    def program_header(self, header: str, query: bool, arg: str) -> str | None:
        """A header that is not a common command, as sent (upper case, ':' kept, '?' removed).

        Answers the error queue, then hands the rest to :meth:`device_command`. A device with
        its own header tree (a relative path after ';') overrides this.
        """
        header = header.lstrip(":")
        if query and header in self.error_headers:
            return self.pop_error()
        return self.device_command(header, query, arg)

    def scpi(self, line: str) -> str | None:
        """Process one line (commands separated by ';'); reply to its queries, or None."""
        commands = self._lines.get(line)
        if commands is None:
            commands = _split_line(line)
            if len(self._lines) >= _LINE_CACHE_SIZE:
                self._lines.clear()  # setpoints with ever new numbers: keep only the recent lines
            self._lines[line] = commands
        replies = self._pending = []
        for header, query, arg in commands:
            try:
                if header.startswith("*"):
                    reply = self._common(header, query, arg)
                else:
                    reply = self.program_header(header, query, arg)
            except ScpiError as exc:
                self.push_error(exc.error)
                continue
            if reply is not None:
                replies.append(reply)
        self._pending = []  # the line's replies go out with it: the output queue is empty again
        return ";".join(replies) if replies else None

    # -- IEEE 488.2 common commands ---------------------------------------------------------

    def _common(self, header: str, query: bool, arg: str) -> str | None:
        if (header, query) in (("*ESE", False), ("*SRE", False)):
            mask = _register_value(arg)
            if header == "*ESE":
                self.ese = mask
            else:
                self.sre = mask & ~STB_MSS  # IEEE 488.2: bit 6 of the SRE mask is ignored
            return None
        action = self._common_actions().get((header, query))
        if action is None:
            raise ScpiError(ERR_UNDEFINED)
        if arg:
            raise ScpiError(ERR_PARAMETER_NOT_ALLOWED)
        return action()

    def _common_actions(self) -> dict[tuple[str, bool], Callable[[], str | None]]:
        return {
            ("*IDN", True): self.identity,
            ("*RST", False): self.reset,
            ("*CLS", False): self.clear_status,
            ("*ESE", True): lambda: str(self.ese),
            ("*ESR", True): self._read_esr,
            ("*SRE", True): lambda: str(self.sre),
            ("*STB", True): lambda: str(self.status_byte()),
            ("*OPC", False): self._operation_complete,
            ("*OPC", True): lambda: "1",
            ("*WAI", False): lambda: None,
            ("*TST", True): lambda: "0",
        }

    def _operation_complete(self) -> None:
        self.esr |= ESR_OPC  # nothing is still running: every command finished before this one

    def _read_esr(self) -> str:
        value, self.esr = self.esr, 0
        return str(value)

    def clear_status(self) -> None:
        """``*CLS``: the event register and the error queue; the enable masks stay."""
        self.esr = 0
        self.errors.clear()

    def status_byte(self) -> int:
        stb = 0
        if self.errors:
            stb |= STB_EAV
        if self._pending:
            stb |= STB_MAV
        if self.esr & self.ese:
            stb |= STB_ESB
        if stb & self.sre:
            stb |= STB_MSS
        return stb

    # -- error queue ------------------------------------------------------------------------

    def push_error(self, error: tuple[int, str]) -> None:
        code, text = error
        if self.positive_error_codes:
            code = abs(code)
        self.esr |= event_bit(code)
        if len(self.errors) >= _ERROR_QUEUE_LEN:
            # SCPI 1999: the newest entry becomes "Queue overflow"; the overflow is an event too.
            overflow = (abs(ERR_OVERFLOW[0]), ERR_OVERFLOW[1]) if self.positive_error_codes else ERR_OVERFLOW
            self.errors[-1] = overflow
            self.esr |= event_bit(overflow[0])
        else:
            self.errors.append((code, text))

    def pop_error(self) -> str:
        code, text = self.errors.popleft() if self.errors else ERR_NONE
        return f'{code},"{text}"'


def _split_line(line: str) -> list[tuple[str, bool, str]]:
    """A line's commands as (header in upper case without '?', query, argument), empty ones left out."""
    commands = []
    for raw in line.split(";"):
        command = raw.strip()
        if not command:
            continue
        header, _, arg = command.replace("\t", " ").partition(" ")
        header = header.upper()
        query = header.endswith("?")
        commands.append((header[:-1] if query else header, query, arg.strip()))
    return commands


def _register_value(arg: str) -> int:
    """A register mask: decimal numeric data, rounded to an integer (IEEE 488.2), 0..255."""
    if not arg:
        raise ScpiError(ERR_MISSING)
    try:
        value = float(arg)
    except ValueError:
        raise ScpiError(ERR_DATA_TYPE) from None
    if not math.isfinite(value):
        raise ScpiError(ERR_DATA_TYPE)
    rounded = math.floor(value + 0.5)
    if not 0 <= rounded <= 255:
        raise ScpiError(ERR_RANGE)
    return rounded
