"""Yokogawa WT5000 / WT1800 precision power analyzer, over its SCPI-style command set.

The subset used (Yokogawa syntax; see docs/instruments.md):

* set-up at connect: ``*IDN?`` (must name a WT model), ``*CLS``, ``:COMMunicate:REMote ON``, ``:COMMunicate:HEADer OFF``,
  ``:COMMunicate:VERBose OFF``, ``:NUMeric:FORMat ASCii``, ``:NUMeric:NORMal:NUMber <n>`` and
  ``:NUMeric:NORMal:ITEM<k> <function>,<element>`` for U, I, P and WP of every element;
* polling: ``:NUMeric:NORMal:VALue?;:INTEGrate:STATe?`` every ``poll_interval`` (one line:
  the values in item order, then the integrator state);
* integration: ``:INTEGrate:STARt`` / ``:STOP`` / ``:RESet``, read back with ``:INTEGrate:STATe?``;
* errors: ``:STATus:ERRor?`` (Yokogawa's error queue; ``0,"No error"`` when empty);
* identity: the ``*IDN?`` reply read first at connect.

Signals, for every configured element ``e``: ``voltage_e`` (V), ``current_e`` (A), ``power_e``
(W) and ``energy_e`` (Wh, the integrated ``WP``); plus ``integrate`` (RESET / START / STOP as
commands; READY / ERROR / TIMEUP may also be read). Setting ``integrate`` reads the values again
at once, so a ``measure`` right after ``STOP`` gets the final energy, not a sample from up to one
poll interval earlier. "Data not available" replies (``NAN``, ``INF``, ``9.91E+37``) publish
nothing.

Station config::

    transport: {inproc: pa}        # or any transport drivers/scpi.py offers
    elements: [1]                  # input elements to read (1..7)
    poll_interval: 200 ms
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.device import ConfigError, DeviceContext, Driver
from bench.errors import DeviceError
from bench.expr import SignalInfo
from bench.units import parse_unit
from drivers.scpi import ScpiInstrument, check_transport, open_transport

_KEYS = {"transport", "elements", "poll_interval"}
# (function on the instrument, signal prefix, unit)
_FUNCTIONS = (("U", "voltage", "V"), ("I", "current", "A"), ("P", "power", "W"), ("WP", "energy", "Wh"))
INTEGRATE_STATES = {"RESET": 0, "START": 1, "STOP": 2, "READY": 3, "ERROR": 4, "TIMEUP": 5}
# Replies of :INTEGrate:STATe? (short form with VERBose OFF, long form otherwise).
_STATE_REPLY = {
    "RES": "RESET", "RESET": "RESET", "STAR": "START", "START": "START", "STOP": "STOP",
    "READ": "READY", "READY": "READY", "ERR": "ERROR", "ERROR": "ERROR", "TIM": "TIMEUP", "TIMEUP": "TIMEUP",
}  # fmt: skip
_COMMAND = {"RESET": ":INTEG:RES", "START": ":INTEG:STAR", "STOP": ":INTEG:STOP"}
_NO_DATA = 9.9e37  # Yokogawa sends 9.91E+37 for "no data" and larger codes for errors


class WtAnalyzerDriver(Driver):
    def __init__(self, name: str, config: Mapping[str, Any], base_dir: Path) -> None:
        super().__init__(name, config, base_dir)
        self.check_keys(_KEYS)
        if not isinstance(self.config.get("transport"), dict):
            raise ConfigError("a power analyzer needs 'transport'", "transport")
        check_transport(self.config["transport"])
        elements = self.config.get("elements", [1])
        if (
            not isinstance(elements, list)
            or not elements
            or any(isinstance(e, bool) or not isinstance(e, int) or not 1 <= e <= 7 for e in elements)
            or len(set(elements)) != len(elements)
        ):
            raise ConfigError(
                f"elements: expected a list of distinct element numbers 1..7, got {elements!r}", "elements"
            )
        self.elements: list[int] = list(elements)
        self.items = [(fn, sig, unit, e) for e in self.elements for fn, sig, unit in _FUNCTIONS]
        self.poll_interval = self.config_quantity("poll_interval", "200 ms", "s")
        self._instr: ScpiInstrument | None = None
        self._identity: dict[str, str] = {}
        self._ctx: DeviceContext | None = None
        self._poll: asyncio.Task[None] | None = None

    def signals(self) -> list[SignalInfo]:
        n = self.name
        out = [
            SignalInfo(f"{n}.{sig}_{e}", parse_unit(unit), doc=f"element {e}: {fn} (:NUMeric item {fn},{e})")
            for fn, sig, unit, e in self.items
        ]
        out.append(
            SignalInfo(
                f"{n}.integrate",
                parse_unit(""),
                INTEGRATE_STATES,
                True,
                doc="integrator: set RESET / START / STOP (:INTEGrate), read back :INTEGrate:STATe?",
            )
        )
        return out

    async def connect(self, ctx: DeviceContext) -> None:
        self._ctx = ctx
        transport = open_transport(self.name, self.config["transport"], ctx.inproc)
        self._instr = instr = ScpiInstrument(self.name, transport, error_query=":STAT:ERR?")
        try:
            # *IDN? first: the instrument answers, and it is a WT before anything is written to it.
            self._identity = await instr.identify()
            if not self._identity["model"].upper().startswith("WT"):
                idn = ",".join(v for v in self._identity.values() if v)
                raise DeviceError(self.name, f"*IDN? answered '{idn}': not a Yokogawa WT power analyzer")
            await instr.write("*CLS")
            await instr.write(":COMM:REM ON")
            # Bare values without headers, short-form words: what the parsers below expect.
            await instr.write(":COMM:HEAD OFF")
            await instr.write(":COMM:VERB OFF")
            await instr.write(":NUM:FORM ASC")
            await instr.write(f":NUM:NORM:NUMB {len(self.items)}")
            for k, (fn, _, _, e) in enumerate(self.items, start=1):
                await instr.write(f":NUM:NORM:ITEM{k} {fn},{e}")
            await instr.check_errors("setting up the numeric items")
            try:
                await self._read()
            except (ValueError, KeyError) as exc:
                raise DeviceError(self.name, f"first reading: {exc}") from None
        except BaseException:
            # Not connected, so the engine will not close it: release the socket or port here.
            with contextlib.suppress(Exception):
                await transport.close()
            self._instr = None
            raise
        self._poll = ctx.start_task(self.name, self._poll_loop(), f"{self.name}-poll")

    async def identify(self) -> dict[str, str]:
        return dict(self._identity)

    async def _read(self) -> None:
        """One query for every value and the integrator state; publish them with one timestamp."""
        assert self._instr is not None and self._ctx is not None
        reply = await self._instr.query(":NUM:NORM:VAL?;:INTEG:STAT?")
        values_text, sep, state_text = reply.rpartition(";")
        values = values_text.split(",") if sep else []
        if len(values) != len(self.items):
            raise ValueError(f"expected {len(self.items)} values and the integrator state, got '{reply}'")
        t = self._ctx.loop.time()
        publish = self._ctx.publish
        for (_, sig, _, e), text in zip(self.items, values, strict=True):
            value = _number(text)
            if value is not None:
                publish(f"{self.name}.{sig}_{e}", value, t)
        publish(f"{self.name}.integrate", float(INTEGRATE_STATES[_state(state_text)]), t)

    async def _poll_loop(self) -> None:
        assert self._ctx is not None
        loop = self._ctx.loop
        deadline = loop.time()
        while True:
            deadline += self.poll_interval
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            try:
                await self._read()
            except (DeviceError, ValueError, KeyError) as exc:
                self._ctx.fault(self.name, f"measurement failed: {exc}")
                return

    async def set(self, values: Mapping[str, float]) -> dict[str, float]:
        assert self._instr is not None and self._ctx is not None
        readback: dict[str, float] = {}
        for short, value in values.items():
            if short != "integrate":
                raise DeviceError(self.name, f"'{short}' cannot be set")
            want = next((k for k, v in INTEGRATE_STATES.items() if v == value), None)
            if want not in _COMMAND:
                raise DeviceError(self.name, f"integrate can be set to RESET, START or STOP, not {want or value}")
            await self._instr.write(_COMMAND[want])
            await self._instr.check_errors(f"integrate {want}")
            try:
                got = _state(await self._instr.query(":INTEG:STAT?"))
            except KeyError as exc:
                raise DeviceError(self.name, f"unexpected integrator state {exc}") from None
            if got != want:
                raise DeviceError(self.name, f"integrate read back {got}, expected {want}")
            readback[short] = float(INTEGRATE_STATES[got])
            try:
                await self._read()
            except ValueError as exc:
                raise DeviceError(self.name, f"reading values after integrate {want}: {exc}") from None
        return readback

    async def close(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._poll
            self._poll = None
        if self._instr is not None:
            await self._instr.release(":COMM:REM OFF")
            self._instr = None


def _number(text: str) -> float | None:
    """An NR3 value, or None for the instrument's "no data" codes."""
    word = text.strip().upper()
    if word in ("NAN", "INF", "-INF", ""):
        return None
    try:
        value = float(word)
    except ValueError:
        raise ValueError(f"not a number: '{text}'") from None
    if math.isnan(value) or abs(value) >= _NO_DATA:
        return None
    return value


def _state(reply: str) -> str:
    return _STATE_REPLY[reply.strip().upper()]
