"""The SCPI text handling shared by the simulated chamber and fault box.

A line holds commands separated by ``;``; each reply joins the line's reply with ``;``. The
common commands (``*IDN?``, ``*RST``, ``*CLS``, ``*OPC?``) and the error queue
(``SYST:ERR?`` and its long forms) behave the same on every device; a device supplies its
identity, its reset and its own headers through :class:`ScpiDevice`'s abstract methods.
"""

from __future__ import annotations

import abc
from collections import deque

_ERROR_QUEUE_LEN = 20

ERR_NONE = (0, "No error")
ERR_MISSING = (-109, "Missing parameter")
ERR_UNDEFINED = (-113, "Undefined header")
ERR_RANGE = (-222, "Data out of range")
ERR_ILLEGAL = (-224, "Illegal parameter value")
ERR_OVERFLOW = (-350, "Queue overflow")

ERROR_QUERY_HEADERS = frozenset({"SYST:ERR", "SYSTEM:ERROR", "SYST:ERR:NEXT", "SYSTEM:ERROR:NEXT"})


class ScpiError(Exception):
    def __init__(self, error: tuple[int, str]) -> None:
        super().__init__(error[1])
        self.error = error


class ScpiDevice(abc.ABC):
    def __init__(self) -> None:
        self.errors: deque[tuple[int, str]] = deque()

    @abc.abstractmethod
    def identity(self) -> str:
        """The ``*IDN?`` reply."""

    @abc.abstractmethod
    def reset(self) -> None:
        """What ``*RST`` does."""

    @abc.abstractmethod
    def device_command(self, header: str, query: bool, arg: str) -> str | None:
        """One of the device's own headers (upper case, no leading ':' or trailing '?').

        Raise :class:`ScpiError` to queue an error; return the reply of a query.
        """

    def scpi(self, line: str) -> str | None:
        """Process one line (commands separated by ';'); reply to its queries, or None."""
        replies: list[str] = []
        for raw in line.split(";"):
            command = raw.strip()
            if not command:
                continue
            try:
                reply = self._execute(command)
            except ScpiError as exc:
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
        if query and header in ERROR_QUERY_HEADERS:
            return self._pop_error()
        return self.device_command(header, query, arg)

    def _common(self, header: str, query: bool) -> str | None:
        if header == "*IDN" and query:
            return self.identity()
        if header == "*RST" and not query:
            self.reset()
            return None
        if header == "*CLS" and not query:
            self.errors.clear()
            return None
        if header == "*OPC" and query:
            return "1"
        raise ScpiError(ERR_UNDEFINED)

    def _push_error(self, error: tuple[int, str]) -> None:
        if len(self.errors) >= _ERROR_QUEUE_LEN:
            self.errors[-1] = ERR_OVERFLOW
        else:
            self.errors.append(error)

    def _pop_error(self) -> str:
        code, text = self.errors.popleft() if self.errors else ERR_NONE
        return f'{code},"{text}"'
