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

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.device import ConfigError, DeviceContext, SignalInfo
from bench.errors import DeviceError
from bench.units import parse_unit
from drivers.scpi import ScpiInstrument
from drivers.scpi_driver import ScpiDriver

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


class WtAnalyzerDriver(ScpiDriver):
    error_query = ":STAT:ERR?"
    setup_what = "setting up the numeric items"
    release_command = ":COMM:REM OFF"
    # The first reading at connect is a whole poll: the next one is due a poll interval later.
    polled_at_connect = True

    def __init__(self, name: str, config: Mapping[str, Any], base_dir: Path) -> None:
        super().__init__(name, config, base_dir, keys=_KEYS, kind="a power analyzer", poll_interval="200 ms")
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

    def identity_problem(self, identity: Mapping[str, str]) -> str | None:
        if not identity["model"].upper().startswith("WT"):
            return "not a Yokogawa WT power analyzer"
        return None

    async def setup(self, instr: ScpiInstrument) -> None:
        await instr.write(":COMM:REM ON")
        # Bare values without headers, short-form words: what the parsers below expect.
        await instr.write(":COMM:HEAD OFF")
        await instr.write(":COMM:VERB OFF")
        await instr.write(":NUM:FORM ASC")
        await instr.write(f":NUM:NORM:NUMB {len(self.items)}")
        for k, (fn, _, _, e) in enumerate(self.items, start=1):
            await instr.write(f":NUM:NORM:ITEM{k} {fn},{e}")

    async def read_state(self, instr: ScpiInstrument, ctx: DeviceContext) -> None:
        try:
            self.publish(await self.poll_once(instr))
        except ValueError as exc:
            raise DeviceError(self.name, f"first reading: {exc}") from None

    async def poll_once(self, instr: ScpiInstrument) -> dict[str, float]:
        """One query for every value and the integrator state; "no data" values are left out."""
        reply = await instr.query(":NUM:NORM:VAL?;:INTEG:STAT?")
        values_text, sep, state_text = reply.rpartition(";")
        values = values_text.split(",") if sep else []
        if len(values) != len(self.items):
            raise ValueError(f"expected {len(self.items)} values and the integrator state, got '{reply}'")
        out: dict[str, float] = {}
        for (_, sig, _, e), text in zip(self.items, values, strict=True):
            value = _number(text)
            if value is not None:
                out[f"{sig}_{e}"] = value
        out["integrate"] = float(INTEGRATE_STATES[_state(state_text)])
        return out

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
            except ValueError as exc:
                raise DeviceError(self.name, str(exc)) from None
            if got != want:
                raise DeviceError(self.name, f"integrate read back {got}, expected {want}")
            readback[short] = float(INTEGRATE_STATES[got])
            try:
                self.publish(await self.poll_once(self._instr))
            except ValueError as exc:
                raise DeviceError(self.name, f"reading values after integrate {want}: {exc}") from None
        return readback


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
    state = _STATE_REPLY.get(reply.strip().upper())
    if state is None:
        raise ValueError(f"unexpected integrator state '{reply}'")
    return state
