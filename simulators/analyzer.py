"""Precision power analyzer in the style of a Yokogawa WT5000 (WT1800 / WT500 share the subset).

Only the SCPI text is the interface: :meth:`PowerAnalyzer.scpi` takes one line and returns the
reply line (or None), as the instrument would over its Ethernet socket. The plant wires element
1 to the supply's DC output and calls :meth:`PowerAnalyzer.measure` every physics tick, so U, I
and P follow the plant and the integrator (``WP``, watt-hours) counts in loop time.

The subset (Yokogawa command syntax: upper-case letters are the short form)::

    *IDN?  *RST  *CLS  *OPC?  and the other IEEE 488.2 common commands (simulators/scpi_device.py)
    :COMMunicate:REMote ON|OFF      :COMMunicate:HEADer OFF|ON   :COMMunicate:VERBose OFF|ON
    :NUMeric:FORMat ASCii           :NUMeric:NORMal:NUMber <n>   :NUMeric:NORMal:ITEM<x> <fn>,<el>
    :NUMeric:NORMal:VALue?          -> "<NR3>,<NR3>,..." one value per item, in item order
    :INTEGrate:STARt | :STOP | :RESet   :INTEGrate:STATe? -> RES | STAR | STOP (short form)
    :STATus:ERRor?                  -> 0,"No error" | <code>,"<message>"

Functions: U, I, P (element values), WP (integrated energy, Wh), TIME (integration time, s).
Errors follow Yokogawa's numbering (positive codes, e.g. ``113,"Undefined header"``). Replies
never carry headers: a ``:COMM:HEAD ON`` is refused with an error (documented simplification).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
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
)

MAKER = "YOKOGAWA"
MODEL = "WT5000"
FIRMWARE = "F1.02 (simulated)"

# Every header node we understand, by its long form; the short form is its upper-case prefix.
_NODES = {
    "COMMUNICATE": "COMM", "REMOTE": "REM", "HEADER": "HEAD", "VERBOSE": "VERB",
    "NUMERIC": "NUM", "FORMAT": "FORM", "NORMAL": "NORM", "NUMBER": "NUMB", "ITEM": "ITEM",
    "VALUE": "VAL", "INTEGRATE": "INTEG", "START": "STAR", "STOP": "STOP", "RESET": "RES",
    "STATE": "STAT", "STATUS": "STAT", "ERROR": "ERR",
}  # fmt: skip
_NODE = {form: short for long, short in _NODES.items() for form in (long, short)}
_ITEM_NODE = re.compile(r"^(ITEM)(\d{1,3})$")
_FUNCTIONS = {"U": "U", "I": "I", "P": "P", "WP": "WP", "TIME": "TIME"}
_ON_OFF = {"ON": True, "1": True, "OFF": False, "0": False}
_MAX_ITEMS = 255

RESET, START, STOP = "RES", "STAR", "STOP"
_DEFAULT_ITEMS = (("U", 1), ("I", 1), ("P", 1))


@dataclass(frozen=True)
class AnalyzerSpec:
    elements: int = 1
    serial: str = "SIM0000PA1"
    noise_v: float = 0.01
    noise_a: float = 0.005


def _nr3(value: float) -> str:
    return f"{value:.5E}"


class PowerAnalyzer(ScpiDevice):
    """Element inputs, integrator and SCPI parser."""

    error_query = ":STAT:ERR?"
    error_headers = frozenset()  # :STATus:ERRor? is in the :STATus tree below, in any long/short mix
    positive_error_codes = True

    def __init__(self, spec: AnalyzerSpec, rng: random.Random) -> None:
        super().__init__()
        self.spec = spec
        self._rng = rng
        self.u = [0.0] * spec.elements
        self.i = [0.0] * spec.elements
        self.energy_wh = [0.0] * spec.elements
        self.integ_time_s = 0.0
        self.integ_state = RESET
        self.remote = False
        self.items: list[tuple[str, int]] = list(_DEFAULT_ITEMS)

    # -- plant side -------------------------------------------------------------------------

    def measure(self, dt: float, inputs: list[tuple[float, float]]) -> None:
        """What each element's terminals see this tick (volts, amperes); integrates while started."""
        rnd = self._rng.random
        for k, (u, i) in enumerate(inputs[: self.spec.elements]):
            self.u[k] = u + (rnd() - 0.5) * 2.0 * self.spec.noise_v
            self.i[k] = i + (rnd() - 0.5) * 2.0 * self.spec.noise_a
        if self.integ_state == START:
            self.integ_time_s += dt
            for k in range(self.spec.elements):
                self.energy_wh[k] += self.u[k] * self.i[k] * dt / 3600.0

    # -- SCPI -------------------------------------------------------------------------------

    def identity(self) -> str:
        return f"{MAKER},{MODEL},{self.spec.serial},{FIRMWARE}"

    def reset(self) -> None:
        # *RST: the integrator stopped and cleared, the numeric items back to U, I, P of element
        # 1. Communication settings (remote, header, verbose) are not device settings: they stay.
        self.integ_state = RESET
        self.energy_wh = [0.0] * self.spec.elements
        self.integ_time_s = 0.0
        self.items = list(_DEFAULT_ITEMS)

    def device_command(self, header: str, query: bool, arg: str) -> str | None:
        nodes: list[str] = []
        item: int | None = None
        for node in header.split(":"):
            m = _ITEM_NODE.match(node)
            if m:
                nodes.append("ITEM")
                item = int(m.group(2))
                continue
            short = _NODE.get(node)
            if short is None:
                raise ScpiError(ERR_UNDEFINED)
            nodes.append(short)
        key = tuple(nodes)
        handler = self._handlers().get(key)
        if handler is None:
            raise ScpiError(ERR_UNDEFINED)
        return handler(query, arg, item)

    def _handlers(self) -> dict[tuple[str, ...], Callable[[bool, str, int | None], str | None]]:
        return {
            ("COMM", "REM"): self._remote,
            ("COMM", "HEAD"): self._header,
            ("COMM", "VERB"): self._verbose,
            ("NUM", "FORM"): self._format,
            ("NUM", "NORM", "NUMB"): self._number,
            ("NUM", "NORM", "ITEM"): self._item,
            ("NUM", "NORM", "VAL"): self._values,
            ("INTEG", "STAR"): self._integ(START),
            ("INTEG", "STOP"): self._integ(STOP),
            ("INTEG", "RES"): self._integ(RESET),
            ("INTEG", "STAT"): self._integ_state,
            ("STAT", "ERR"): self._error_query,
        }

    def _remote(self, query: bool, arg: str, _: int | None) -> str | None:
        if query:
            return "1" if self.remote else "0"
        self.remote = _on_off(arg)
        return None

    def _header(self, query: bool, arg: str, _: int | None) -> str | None:
        if query:
            return "0"
        if _on_off(arg):
            raise ScpiError(ERR_ILLEGAL)  # the simulator only speaks header-less replies
        return None

    def _verbose(self, query: bool, arg: str, _: int | None) -> str | None:
        if query:
            return "0"
        if _on_off(arg):
            raise ScpiError(ERR_ILLEGAL)  # short-form replies only
        return None

    def _format(self, query: bool, arg: str, _: int | None) -> str | None:
        if query:
            return "ASC"
        if arg.upper() not in ("ASC", "ASCII"):
            raise ScpiError(ERR_ILLEGAL)  # binary FLOat is not simulated
        return None

    def _number(self, query: bool, arg: str, _: int | None) -> str | None:
        if query:
            return str(len(self.items))
        n = _int(arg)
        if not 1 <= n <= _MAX_ITEMS:
            raise ScpiError(ERR_RANGE)
        self.items = (self.items + [("U", 1)] * n)[:n]
        return None

    def _item(self, query: bool, arg: str, item: int | None) -> str | None:
        if item is None or not 1 <= item <= len(self.items):
            raise ScpiError(ERR_RANGE)
        if query:
            fn, el = self.items[item - 1]
            return f"{fn},{el}"
        fn_text, _, el_text = arg.partition(",")
        function = _FUNCTIONS.get(fn_text.strip().upper())
        if function is None or not el_text.strip():
            raise ScpiError(ERR_ILLEGAL)
        element = _int(el_text)
        if not 1 <= element <= self.spec.elements:
            raise ScpiError(ERR_RANGE)
        self.items[item - 1] = (function, element)
        return None

    def _values(self, query: bool, arg: str, _: int | None) -> str | None:
        if not query:
            raise ScpiError(ERR_UNDEFINED)
        return ",".join(_nr3(self._value(fn, el - 1)) for fn, el in self.items)

    def _value(self, fn: str, k: int) -> float:
        if fn == "U":
            return self.u[k]
        if fn == "I":
            return self.i[k]
        if fn == "P":
            return self.u[k] * self.i[k]
        if fn == "WP":
            return self.energy_wh[k]
        return self.integ_time_s

    def _integ(self, target: str) -> Callable[[bool, str, int | None], str | None]:
        def run(query: bool, arg: str, _: int | None) -> str | None:
            if query or arg:
                raise ScpiError(ERR_SYNTAX)
            # The instrument refuses to reset a running integration and to stop one that never ran.
            if (target == RESET and self.integ_state == START) or (target == STOP and self.integ_state == RESET):
                raise ScpiError(ERR_CONFLICT)
            if target == RESET:
                self.energy_wh = [0.0] * self.spec.elements
                self.integ_time_s = 0.0
            self.integ_state = target
            return None

        return run

    def _integ_state(self, query: bool, arg: str, _: int | None) -> str | None:
        if not query:
            raise ScpiError(ERR_UNDEFINED)
        return self.integ_state

    def _error_query(self, query: bool, arg: str, _: int | None) -> str | None:
        if not query:
            raise ScpiError(ERR_UNDEFINED)
        return self.pop_error()


def _on_off(arg: str) -> bool:
    if not arg:
        raise ScpiError(ERR_MISSING)
    value = _ON_OFF.get(arg.upper())
    if value is None:
        raise ScpiError(ERR_ILLEGAL)
    return value


def _int(arg: str) -> int:
    if not arg.strip():
        raise ScpiError(ERR_MISSING)
    try:
        return int(arg.strip())
    except ValueError:
        raise ScpiError(ERR_ILLEGAL) from None
