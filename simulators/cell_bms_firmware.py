"""Firmware model of a cell-level BMS (its cell monitoring front end) on a cell emulator.

The BMS measures every sense channel and NTC input of the emulator bus it is wired to
(simulators/cell_emulator.py: ``bus.cell(n).sense_voltage``, ``bus.ntc(i).resistance``), keeps
the latched cell-level faults, bleeds cells through ``bus.set_load_current`` and answers on CAN
per dbc/cell_bms.dbc. The plant (simulators/cell_bms.py) calls :meth:`CellBms.step` on every
tick, like the measurement cycle of a real front end; every time comes from the event loop.
docs/simulators/cbms.md describes the behaviour and its numbers.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import can

from simulators import e2e
from simulators.bms_firmware import FrameCodec

STATUS_FRAME = "CBMS_Status"
VOLTAGES_FRAME = "CBMS_CellVoltages"
TEMPERATURES_FRAME = "CBMS_Temperatures"
BALANCING_FRAME = "CBMS_Balancing"
COMMAND_FRAME = "BENCH_CellCommand"
TX_FRAMES = (STATUS_FRAME, VOLTAGES_FRAME, TEMPERATURES_FRAME, BALANCING_FRAME)
# Channels per multiplexed group of each frame (dbc/cell_bms.dbc).
CELLS_PER_GROUP = 4
TEMPS_PER_GROUP = 3
BALANCING_PER_GROUP = 48
MAX_CELLS = 192
MAX_TEMPS = 16
# The front end's conversion range: an open NTC reads the lowest, a shorted one the highest.
TEMP_LOW_C = -40.0
TEMP_HIGH_C = 150.0
# Per-channel errors, drawn once from the seeded rng: a gain within 100 ppm of 1, an offset
# within 0.5 mV, a temperature channel within 0.2 K.
GAIN_ERROR_MAX = 100e-6
OFFSET_ERROR_MAX_V = 0.5e-3
TEMP_ERROR_MAX_K = 0.2
# The ADC's step: readings are whole millivolts.
LSB_V = 0.001
KELVIN_AT_0C = 273.15
T25_K = 25.0 + KELVIN_AT_0C
# temp_fault_kind values (VAL_ of dbc/cell_bms.dbc).
KIND_NONE, KIND_OPEN, KIND_SHORT = 0, 1, 2
_EPS = 1e-9


class CellInput(Protocol):
    @property
    def sense_voltage(self) -> float | None:
        """Volts across the sense input; None when the line is open."""


class NtcInput(Protocol):
    @property
    def resistance(self) -> float:
        """Ohms across the NTC input (``inf`` open, 0 shorted)."""


class SenseBus(Protocol):
    """What the BMS is wired to: the emulator's cells and resistor channels (1-based)."""

    def cell(self, number: int) -> CellInput: ...

    def ntc(self, number: int) -> NtcInput: ...

    def set_load_current(self, number: int, amps: float) -> None: ...


@dataclass(frozen=True)
class CellBmsParams:
    cells: int = 16
    temp_sensors: int = 4
    ov_threshold_v: float = 4.2
    uv_threshold_v: float = 2.8
    debounce_s: float = 0.1
    noise_v: float = 0.0003
    open_wire_v: float = 0.5
    r25_ohm: float = 10000.0
    beta: float = 3435.0
    temp_open_ohm: float = 1.0e6
    temp_short_ohm: float = 100.0
    balance_start_v: float = 0.020
    balance_stop_v: float = 0.005
    balance_min_v: float = 3.0
    bleed_resistance_ohm: float = 33.0


@dataclass(frozen=True)
class CellBmsDefects:
    """The firmware side of the plant's fault modes (simulators/cell_bms.py has the catalogue)."""

    ov_offset_v: float = 0.0
    debounce_s: float | None = None  # every cell-level diagnostic's debounce, instead of the configured one
    gain_errors: tuple[tuple[int, float], ...] = ()  # (cell, relative gain error) on top of the drawn one
    stuck_group: int | None = None  # CBMS_CellVoltages group that keeps sending its first payload
    dead_temp_input: tuple[int, float] | None = None  # (input, degC it reads whatever its sensor does)
    balancing_never_stops: bool = False


def ntc_celsius(ohms: float, r25_ohm: float, beta: float, error_k: float = 0.0) -> float:
    """The BMS's own beta conversion of an NTC input plus its channel's error, clamped to its
    conversion range (an open input reads the lowest, a shorted one the highest).

    Written here and not taken from the bench's NTC model (drivers/ntc.py): the item's firmware
    and the bench's stimulus are two independent conversions, so an error in one shows in a test.
    """
    if ohms <= 0.0:
        return TEMP_HIGH_C
    if math.isinf(ohms):
        return TEMP_LOW_C
    inv_t = 1.0 / T25_K + math.log(ohms / r25_ohm) / beta
    if inv_t <= 0.0:
        return TEMP_HIGH_C
    return min(TEMP_HIGH_C, max(TEMP_LOW_C, 1.0 / inv_t - KELVIN_AT_0C + error_k))


class _Debounce:
    """Channels whose condition holds, each with the time it started; a channel is due once it has
    held for the debounce time."""

    def __init__(self, debounce_s: float) -> None:
        self.debounce_s = debounce_s
        self.since: dict[int, float] = {}

    def update(self, active: Sequence[int], now: float) -> int | None:
        """The lowest channel whose condition has held for the debounce time, else None."""
        since = self.since
        if len(since) != len(active) or any(ch not in since for ch in active):
            self.since = since = {ch: since.get(ch, now) for ch in active}
        due = [ch for ch, t in since.items() if now - t >= self.debounce_s - _EPS]
        return min(due) if due else None

    def clear(self) -> None:
        self.since = {}


class CellBms:
    def __init__(
        self, params: CellBmsParams, defects: CellBmsDefects, db: Any, bus: SenseBus, rng: random.Random
    ) -> None:
        self.p = params
        self.d = defects
        self.bus = bus
        self._rng = rng
        self.ov_threshold_v = params.ov_threshold_v + defects.ov_offset_v
        debounce = params.debounce_s if defects.debounce_s is None else defects.debounce_s
        n = params.cells
        self.gain = [1.0 + rng.uniform(-GAIN_ERROR_MAX, GAIN_ERROR_MAX) for _ in range(n)]
        self.offset = [rng.uniform(-OFFSET_ERROR_MAX_V, OFFSET_ERROR_MAX_V) for _ in range(n)]
        self.temp_error = [rng.uniform(-TEMP_ERROR_MAX_K, TEMP_ERROR_MAX_K) for _ in range(params.temp_sensors)]
        for cell, error in defects.gain_errors:
            if 1 <= cell <= n:
                self.gain[cell - 1] *= 1.0 + error

        self.readings = [0.0] * n  # volts, whole millivolts
        self.temperatures = [0.0] * params.temp_sensors  # degC
        self.bleeding = [False] * n
        self.balancing_allowed = False
        self._last_clear = False
        self._clear_requested = False
        # Latched faults and the channel that latched them (0 = none).
        self.fault_ov = self.fault_uv = self.fault_open_wire = self.fault_temp_sensor = False
        self.open_wire_cell = 0
        self.temp_fault_sensor = 0
        self.temp_fault_kind = KIND_NONE
        self._ov, self._uv, self._open = _Debounce(debounce), _Debounce(debounce), _Debounce(debounce)
        self._temp_open, self._temp_short = _Debounce(debounce), _Debounce(debounce)
        # Now-state of each condition, for a clear request: which channels are in it.
        self._active: dict[str, list[int]] = {k: [] for k in ("ov", "uv", "open", "temp_open", "temp_short")}
        self._status_alive = 0
        self._stuck_payload: bytearray | None = None

        self._codecs = {m.name: FrameCodec(m) for m in db.messages}
        self._command = self._codecs[COMMAND_FRAME]
        self._groups = {
            VOLTAGES_FRAME: math.ceil(n / CELLS_PER_GROUP),
            TEMPERATURES_FRAME: math.ceil(params.temp_sensors / TEMPS_PER_GROUP),
            BALANCING_FRAME: math.ceil(n / BALANCING_PER_GROUP),
        }
        self._cell_names = [f"cell_v_{k:03d}" for k in range(1, n + 1)]
        self._temp_names = [f"temp_{i:02d}" for i in range(1, params.temp_sensors + 1)]
        self._bal_names = [f"bal_{k:03d}" for k in range(1, n + 1)]
        self.schedule: list[tuple[float, str]] = []
        for m in db.messages:
            if "CBMS" in (m.senders or []) and m.cycle_time:
                self.schedule.append((m.cycle_time / 1000.0, m.name))
        # The status frame first in each cycle: a fault is on the bus as early as possible.
        self.schedule.sort(key=lambda entry: (entry[0], entry[1] != STATUS_FRAME, entry[1]))
        self._builders: dict[str, Callable[[], list[bytearray]]] = {
            STATUS_FRAME: lambda: [self._status()],
            VOLTAGES_FRAME: self._voltages,
            TEMPERATURES_FRAME: self._temperatures,
            BALANCING_FRAME: self._balancing,
        }

    # -- inputs ---------------------------------------------------------------------------------

    def on_frame(self, frame: can.Message) -> None:
        if frame.is_extended_id or frame.is_error_frame or frame.arbitration_id != self._command.frame_id:
            return
        if len(frame.data) != self._command.length:
            return
        cmd = self._command.decode(frame.data)
        clear = cmd["cmd_clear_faults"] == 1
        if clear and not self._last_clear:
            # Taken by the next measurement cycle, on the inputs of that cycle.
            self._clear_requested = True
        self._last_clear = clear
        allowed = cmd["cmd_balancing"] == 1
        if self.balancing_allowed and not allowed:
            self._stop_bleeding()
        self.balancing_allowed = allowed

    def clear_faults(self) -> None:
        """A clear request: each latched fault whose condition has gone is released."""
        a = self._active
        if not a["ov"]:
            self.fault_ov = False
        if not a["uv"]:
            self.fault_uv = False
        if not a["open"]:
            self.fault_open_wire = False
            self.open_wire_cell = 0
        if not a["temp_open"] and not a["temp_short"]:
            self.fault_temp_sensor = False
            self.temp_fault_sensor = 0
            self.temp_fault_kind = KIND_NONE

    # -- the measurement cycle ------------------------------------------------------------------

    def step(self, now: float) -> None:
        self._measure()
        self._diagnose(now)
        if self._clear_requested:
            self._clear_requested = False
            self.clear_faults()
        self._balance()

    def _measure(self) -> None:
        bus, rng, noise = self.bus, self._rng, self.p.noise_v
        gain, offset, readings = self.gain, self.offset, self.readings
        for k in range(self.p.cells):
            v = bus.cell(k + 1).sense_voltage
            x = gain[k] * (v if v is not None else 0.0) + offset[k]
            if noise > 0.0:
                x += rng.gauss(0.0, noise)
            readings[k] = max(0.0, round(x / LSB_V) * LSB_V)
        p, dead = self.p, self.d.dead_temp_input
        for i in range(p.temp_sensors):
            if dead is not None and dead[0] == i + 1:
                self.temperatures[i] = dead[1]
                continue
            self.temperatures[i] = ntc_celsius(bus.ntc(i + 1).resistance, p.r25_ohm, p.beta, self.temp_error[i])

    def _diagnose(self, now: float) -> None:
        p, readings = self.p, self.readings
        ov_v, uv_v, open_v = self.ov_threshold_v, p.uv_threshold_v, p.open_wire_v
        a = self._active
        a["ov"] = [k + 1 for k, r in enumerate(readings) if r > ov_v]
        a["uv"] = [k + 1 for k, r in enumerate(readings) if open_v <= r < uv_v]
        a["open"] = [k + 1 for k, r in enumerate(readings) if r < open_v]
        dead = self.d.dead_temp_input
        ohms = [
            self.bus.ntc(i).resistance if dead is None or dead[0] != i else p.r25_ohm
            for i in range(1, p.temp_sensors + 1)
        ]
        a["temp_open"] = [i + 1 for i, r in enumerate(ohms) if r > p.temp_open_ohm]
        a["temp_short"] = [i + 1 for i, r in enumerate(ohms) if r < p.temp_short_ohm]

        if self._ov.update(a["ov"], now) is not None:
            self.fault_ov = True
        if self._uv.update(a["uv"], now) is not None:
            self.fault_uv = True
        cell = self._open.update(a["open"], now)
        if cell is not None and not self.fault_open_wire:
            self.fault_open_wire = True
            self.open_wire_cell = cell
        opened = self._temp_open.update(a["temp_open"], now)
        shorted = self._temp_short.update(a["temp_short"], now)
        if (opened is not None or shorted is not None) and not self.fault_temp_sensor:
            self.fault_temp_sensor = True
            sensor, kind = min((s, k) for s, k in ((opened, KIND_OPEN), (shorted, KIND_SHORT)) if s is not None)
            self.temp_fault_sensor = sensor
            self.temp_fault_kind = kind

    def _balance(self) -> None:
        if not self.balancing_allowed:
            return
        p, readings, bleeding = self.p, self.readings, self.bleeding
        # An open line reads about 0 V: it is no cell, and no lowest cell to balance down to.
        valid = [r for r in readings if r >= p.open_wire_v]
        lowest = min(valid) if valid else None
        keep = self.d.balancing_never_stops
        for k, r in enumerate(readings):
            if bleeding[k]:
                if not keep and (
                    lowest is None or r < p.open_wire_v or r < lowest + p.balance_stop_v or r < p.balance_min_v
                ):
                    bleeding[k] = False
                    self.bus.set_load_current(k + 1, 0.0)
                    continue
            elif lowest is not None and r > lowest + p.balance_start_v and r > p.balance_min_v:
                bleeding[k] = True
            else:
                continue
            self.bus.set_load_current(k + 1, r / p.bleed_resistance_ohm)

    def _stop_bleeding(self) -> None:
        for k, on in enumerate(self.bleeding):
            if on:
                self.bleeding[k] = False
                self.bus.set_load_current(k + 1, 0.0)

    def shutdown(self) -> None:
        self._stop_bleeding()

    # -- cyclic transmission --------------------------------------------------------------------

    def sender(self, bus: can.BusABC, name: str) -> Callable[[], None]:
        """What one cycle of ``name`` sends: every group of it, built from the latest readings."""
        frame_id = self._codecs[name].frame_id
        build = self._builders[name]

        def send() -> None:
            for data in build():
                bus.send(can.Message(arbitration_id=frame_id, is_extended_id=False, data=data))

        return send

    def _status(self) -> bytearray:
        alive = self._status_alive
        self._status_alive = e2e.next_alive(alive)
        values = {
            "fault_cell_ov": self.fault_ov,
            "fault_cell_uv": self.fault_uv,
            "fault_open_wire": self.fault_open_wire,
            "fault_temp_sensor": self.fault_temp_sensor,
            "balancing_enabled": self.balancing_allowed,
            "balancing_count": sum(self.bleeding),
            "open_wire_cell": self.open_wire_cell,
            "temp_fault_sensor": self.temp_fault_sensor,
            "temp_fault_kind": self.temp_fault_kind,
            "status_alive": alive,
        }
        return self._codecs[STATUS_FRAME].encode({k: float(v) for k, v in values.items()})

    def _voltages(self) -> list[bytearray]:
        frames = self._grouped(VOLTAGES_FRAME, "cell_group", self._cell_names, self.readings, CELLS_PER_GROUP)
        g = self.d.stuck_group
        if g is not None and g < len(frames):
            if self._stuck_payload is None:
                self._stuck_payload = bytearray(frames[g])
            frames[g] = bytearray(self._stuck_payload)
        return frames

    def _temperatures(self) -> list[bytearray]:
        return self._grouped(TEMPERATURES_FRAME, "temp_group", self._temp_names, self.temperatures, TEMPS_PER_GROUP)

    def _balancing(self) -> list[bytearray]:
        switches = [1.0 if on else 0.0 for on in self.bleeding]
        return self._grouped(BALANCING_FRAME, "bal_group", self._bal_names, switches, BALANCING_PER_GROUP)

    def _grouped(
        self, frame: str, mux: str, signals: Sequence[str], values: Sequence[float], per_group: int
    ) -> list[bytearray]:
        """Every group of a multiplexed frame: group g carries channels g * per_group + 1 .. on."""
        codec = self._codecs[frame]
        frames = []
        for g in range(self._groups[frame]):
            lo, hi = g * per_group, (g + 1) * per_group
            frames.append(codec.encode({mux: float(g), **dict(zip(signals[lo:hi], values[lo:hi], strict=False))}))
        return frames
