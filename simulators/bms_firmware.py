"""BMS firmware model: cyclic BMS_* frames per the DBC, BENCH_Command intake, protections and
the main contactor pair.

The BMS sees the pack only through what a BMS measures (cell voltages, temperatures,
current); the plant calls :meth:`Bms.monitor` after every physics tick. Each detection also
reports to the BMS's DTC memory (``dtcs``, simulators/dtc.py: the monitors and codes of
``BMS_DTCS``), which the plant serves over UDS.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import can

from simulators import e2e
from simulators.dtc import BMS_DTCS, DtcMemory
from simulators.faults import (
    CELL_VOLTAGE_OFFSET_SMALL_V,
    CELL_VOLTAGE_OFFSET_V,
    FUSE_MELTING_I2T_A2S,
    FUSE_RATING_A,
    ISOLATION_FAULT_KOHM,
    SLOW_REACTION_TIME_S,
    Faults,
)
from simulators.pack import Pack

log = logging.getLogger(__name__)

COMMAND_FRAME = "BENCH_Command"
_EPS = 1e-9


class Contactors(IntEnum):
    OPEN = 0
    PRECHARGE = 1
    CLOSED = 2
    WELDED = 3


class BmsState(IntEnum):
    INIT = 0
    STANDBY = 1
    PRECHARGE = 2
    CONNECTED = 3
    FAULT = 4


# Latched faults that open the contactors and block closing until cleared.
TRIP_FAULTS = ("cell_ov", "cell_uv", "cell_ot", "overcurrent", "contactor", "comm", "sense_line")
_STATUS_LATCHED = (
    "cell_ov", "cell_uv", "cell_ot", "overcurrent", "isolation", "contactor", "comm", "thermal_event", "sense_line",
)  # fmt: skip
_STATUS_SIGNALS = (
    "bms_state", "contactors", "fault_cell_ov", "fault_cell_uv", "fault_cell_ot", "fault_overcurrent",
    "fault_isolation", "fault_contactor", "fault_comm", "warn_thermal_event", "fault_sense_line",
    "warn_control_failure", "warn_isolation", "status_alive",
)  # fmt: skip
# A cell reading below this is no lithium cell but a broken sense line: it is left out of the
# under-voltage protection, and catching the broken line is the open-wire diagnostic's job.
OPEN_WIRE_V = 0.5
# Isolation the monitor sees through a cell sense line shorted to chassis (balancing and
# filter resistors of the cell monitoring IC in series with the short).
SENSE_SHORT_ISO_KOHM = 1.0


class FrameCodec:
    """Little-endian DBC signals packed with shifts: cheap enough to encode every cycle.

    Physical values saturate at the raw field's limits instead of raising, like a firmware
    that clamps before it transmits.
    """

    def __init__(self, message: Any) -> None:
        self.name: str = message.name
        self.frame_id: int = message.frame_id
        self.length: int = message.length
        self.mux: str | None = None
        self._layouts: dict[int | None, list[tuple[str, int, int, float, float, int, int, bool]]] = {}
        for sig in message.signals:
            if sig.byte_order != "little_endian":
                raise ValueError(f"{message.name}.{sig.name}: only little-endian signals are supported")
            lo, hi = (
                (-(1 << (sig.length - 1)), (1 << (sig.length - 1)) - 1) if sig.is_signed else (0, (1 << sig.length) - 1)
            )
            entry = (
                sig.name,
                sig.start,
                (1 << sig.length) - 1,
                1.0 / float(sig.scale),
                float(sig.offset),
                lo,
                hi,
                sig.is_signed,
            )
            if sig.is_multiplexer:
                self.mux = sig.name
            ids = sig.multiplexer_ids or [None]
            for mux_id in ids:
                self._layouts.setdefault(mux_id, []).append(entry)
        self._mux_start = self._mux_mask = 0
        if self.mux is not None:
            mux_entry = self._layouts.pop(None)
            self._mux_start, self._mux_mask = mux_entry[0][1], mux_entry[0][2]
            for layout in self._layouts.values():
                layout[:0] = mux_entry

    def groups(self) -> dict[int | None, list[str]]:
        """Signal names per multiplexer value (key None for a plain message)."""
        return {k: [e[0] for e in v] for k, v in self._layouts.items()}

    def encode(self, values: Mapping[str, float]) -> bytearray:
        layout = self._layouts[int(values[self.mux]) if self.mux is not None else None]
        acc = 0
        for name, start, mask, inv_scale, offset, lo, hi, _ in layout:
            raw = round((values.get(name, 0.0) - offset) * inv_scale)
            raw = lo if raw < lo else hi if raw > hi else raw
            acc |= (raw & mask) << start
        return bytearray(acc.to_bytes(self.length, "little"))

    def decode(self, data: bytes | bytearray) -> dict[str, float]:
        acc = int.from_bytes(data, "little")
        mux = None if self.mux is None else (acc >> self._mux_start) & self._mux_mask
        layout = self._layouts[mux]
        out: dict[str, float] = {}
        for name, start, mask, inv_scale, offset, _, _, signed in layout:
            raw = (acc >> start) & mask
            if signed and raw > (mask >> 1):
                raw -= mask + 1
            out[name] = raw / inv_scale + offset
        return out


@dataclass(frozen=True)
class BmsParams:
    ov_threshold_v: float
    uv_threshold_v: float
    ot_threshold_c: float = 60.0
    oc_threshold_a: float = 350.0
    # Charging over-current threshold (pack current > 0); None: the same as oc_threshold_a. A pack
    # usually accepts less charge than discharge current.
    oc_charge_threshold_a: float | None = None
    detection_time_s: float = 0.2
    reaction_time_s: float = 0.1
    precharge_time_s: float = 0.3
    command_timeout_s: float = 0.5
    software_version: str = "BMS-SIM 1.0.0"
    max_charge_current_a: float = 180.0
    max_discharge_current_a: float = 300.0
    iso_resistance_kohm: float = 5000.0
    iso_warning_kohm: float = 500.0
    iso_error_kohm: float = 100.0
    thermal_event_margin_c: float = 10.0
    thermal_event_rate_c_per_s: float = 1.0
    # A current this many times oc_threshold_a is a short circuit: trip at once, no debounce.
    short_circuit_factor: float = 5.0
    # BMS_CellVoltages frames (multiplexer groups, round-robin) sent per cycle: 1 as the DBC
    # describes it (a sweep of 192 cells in 64 cycles); the group count sends every cell every cycle.
    cell_groups_per_cycle: int = 1


class Bms:
    def __init__(self, params: BmsParams, pack: Pack, faults: Faults, db: Any) -> None:
        self.p = params
        self.pack = pack
        self.faults = faults
        self.ov_threshold_v = pack.chem.ov_threshold_high_v if faults.ov_threshold_high else params.ov_threshold_v
        self.reaction_time_s = SLOW_REACTION_TIME_S if faults.slow_reaction else params.reaction_time_s
        self.iso_ri_kohm = ISOLATION_FAULT_KOHM if faults.isolation_fault else params.iso_resistance_kohm
        self._v_offset = (
            CELL_VOLTAGE_OFFSET_V
            if faults.cell_voltage_sensor_offset
            else CELL_VOLTAGE_OFFSET_SMALL_V
            if faults.cell_voltage_sensor_offset_15mv
            else 0.0
        )
        # Main fuse in series with the contactors (short_protected_by_fuse only): the melting
        # integral it has taken so far, and whether it has opened the circuit.
        self.fuse_i2t_a2s = 0.0
        self.fuse_blown = False
        self._last_monitor: float | None = None
        # Injected from the fault box: cell sense line opened / shorted to chassis (1-based,
        # 0 = none) and a resistor Ro between HV+ and chassis (kOhm, 0 = not inserted).
        self.open_wire = 0
        self.short_gnd = 0
        self.iso_ro_kohm = 0.0
        # The isolation monitor measures once per BMS_Isolation cycle, and its warning and fault
        # come from that measurement: the bench never sees a warning next to a stale resistance.
        self.iso_measured_kohm = self.iso_resistance_kohm
        self._frozen_temps: tuple[float, int, float] | None = None
        self.dtcs = DtcMemory(BMS_DTCS)

        self.latched: dict[str, bool] = dict.fromkeys((*TRIP_FAULTS, "isolation", "thermal_event"), False)
        self._since: dict[str, float | None] = dict.fromkeys(
            ("cell_ov", "cell_uv", "cell_ot", "overcurrent", "sense_line")
        )
        self.close_requested = False
        self.physical = Contactors.OPEN
        self.link_voltage = 0.0
        self.bad_command_frames = 0
        self.valid_command_frames = 0
        self._last_cmd_time: float | None = None
        self._last_cmd_alive: int | None = None
        self._last_clear = False
        self._precharge: asyncio.TimerHandle | None = None
        self._reaction: asyncio.TimerHandle | None = None
        self._status_alive = 0
        self._cell_group = 0
        self._rate_ref: tuple[float, float] | None = None
        self.temp_rate_c_per_s = 0.0
        self.v_max = self.v_min = self.v_avg = self.t_max = self.t_min = 0.0
        self.v_min_plausible = 0.0
        self.v_max_id = self.v_min_id = self.t_max_id = 0
        self._status_cache: dict[tuple[int, ...], bytes] = {}
        self.measure()

        self._codecs = {m.name: FrameCodec(m) for m in db.messages}
        self._command = self._codecs[COMMAND_FRAME]
        self._builders: dict[str, Callable[[], bytearray]] = {
            "BMS_Status": self._status,
            "BMS_PackValues": self._pack_values,
            "BMS_CellStats": self._cell_stats,
            "BMS_Temperatures": self._temperatures,
            "BMS_Limits": self._limits,
            "BMS_Isolation": self._isolation,
            "BMS_CellVoltages": self._cell_voltages,
        }
        self.schedule: dict[float, list[str]] = {}
        for m in db.messages:
            if "BMS" in (m.senders or []) and m.cycle_time:
                self.schedule.setdefault(m.cycle_time / 1000.0, []).append(m.name)
                if m.name not in self._builders:
                    log.warning("no model for %s: it is sent with all signals 0", m.name)
        self._cell_layout = self._cell_groups()
        self._all_readings: tuple[tuple[float, float, float, int], list[float]] | None = None
        self._cell_payloads: list[tuple[tuple[float, float, float, int], bytes] | None] = [None] * len(
            self._cell_layout
        )
        if params.cell_groups_per_cycle > len(self._cell_layout):
            raise ValueError(
                f"bms_pack config: bms.cell_groups_per_cycle must be <= {len(self._cell_layout)} (the groups of"
                f" {pack.n} cells in BMS_CellVoltages), got {params.cell_groups_per_cycle}"
            )
        self._iso_on_frame = any("BMS_Isolation" in names for names in self.schedule.values())
        self._frames = {
            name: can.Message(arbitration_id=c.frame_id, is_extended_id=False, dlc=c.length, data=bytes(c.length))
            for name, c in self._codecs.items()
        }

    def _cell_groups(self) -> list[list[tuple[str, int]]]:
        codec = self._codecs["BMS_CellVoltages"]
        groups = []
        for mux_id, names in sorted((k, v) for k, v in codec.groups().items() if k is not None):
            cells = [(n, int(n.rsplit("_", 1)[1]) - 1) for n in names if n != codec.mux]
            groups.append([(n, i) for n, i in cells if i < self.pack.n])
            if mux_id is not None and not groups[-1]:
                groups.pop()
                break
        return groups

    def shutdown(self) -> None:
        """Cancel pending contactor timers so nothing moves after the plant has stopped."""
        for handle in (self._precharge, self._reaction):
            if handle is not None:
                handle.cancel()
        self._precharge = self._reaction = None

    # -- contactors -------------------------------------------------------------------------

    @property
    def conducting(self) -> bool:
        return self.physical is Contactors.CLOSED and not self.fuse_blown

    @property
    def reported_contactors(self) -> Contactors:
        if self.physical is Contactors.CLOSED and not self.close_requested:
            return Contactors.WELDED
        return self.physical

    def _close(self) -> None:
        self.close_requested = True
        if self.physical is Contactors.OPEN:
            self.physical = Contactors.PRECHARGE
            self._precharge = asyncio.get_running_loop().call_later(self.p.precharge_time_s, self._precharged)

    def _precharged(self) -> None:
        self._precharge = None
        if self.close_requested and self.physical is Contactors.PRECHARGE:
            self.physical = Contactors.CLOSED

    def _open(self) -> None:
        self.close_requested = False
        if self._precharge is not None:
            self._precharge.cancel()
            self._precharge = None
        if self.physical is Contactors.CLOSED:
            # The weld check runs when a closed contactor is commanded open.
            welded = self.faults.contactor_welded
            self.dtcs.report("contactor", failed=welded)
            if welded:
                self.latched["contactor"] = True
                return
        self.physical = Contactors.OPEN

    def _trip(self, fault: str) -> None:
        self.latched[fault] = True
        if self._reaction is None and self.close_requested:
            self._reaction = asyncio.get_running_loop().call_later(self.reaction_time_s, self._react)

    def _react(self) -> None:
        self._reaction = None
        self._open()

    @property
    def tripped(self) -> bool:
        latched = self.latched
        return any(latched[f] for f in TRIP_FAULTS)

    @property
    def state(self) -> BmsState:
        if self.tripped:
            return BmsState.FAULT
        return {
            Contactors.OPEN: BmsState.STANDBY,
            Contactors.PRECHARGE: BmsState.PRECHARGE,
            Contactors.CLOSED: BmsState.CONNECTED,
        }[self.physical]

    # -- what the BMS measures ----------------------------------------------------------------

    @property
    def iso_resistance_kohm(self) -> float:
        """HV-to-chassis isolation as the monitor measures it: every path to chassis in parallel."""
        g = 1.0 / self.iso_ri_kohm if self.iso_ri_kohm > 0.0 else float("inf")
        if self.iso_ro_kohm > 0.0:
            g += 1.0 / self.iso_ro_kohm
        if self.short_gnd:
            g += 1.0 / SENSE_SHORT_ISO_KOHM
        return 1.0 / g if g > 0.0 else 0.0

    def cell_reading(self, i: int) -> float:
        """Cell ``i`` (0-based) as the cell monitoring IC reports it."""
        if self.open_wire == i + 1:
            return 0.0
        return self.pack.cell_voltage(i) + self._v_offset

    def measure(self) -> None:
        """Sample the pack once per tick; frames and protections all use this snapshot.

        Values are quantised to the DBC resolution (1 mV, 0.1 degC) so that a trip on
        ``cell_v_max > 4.25`` is visible as 4.251 V on the bus, never as 4.250 V.
        """
        pack = self.pack
        off = self._v_offset
        if 0 < self.open_wire <= pack.n:
            self._measure_open_wire()
        else:
            i = pack.max_cell()
            self.v_max, self.v_max_id = round(pack.cell_voltage(i) + off, 3), i + 1
            i = pack.min_cell()
            self.v_min, self.v_min_id = round(pack.cell_voltage(i) + off, 3), i + 1
            self.v_avg = pack.cell_v_avg() + off
            self.v_min_plausible = self.v_min
        if self._frozen_temps is not None:
            self.t_max, self.t_max_id, self.t_min = self._frozen_temps
            return
        j = pack.hottest_sensor()
        self.t_max, self.t_max_id = round(pack.sensor_temp(j), 1), j + 1
        self.t_min = pack.sensor_temp(pack.coldest_sensor())
        if self.faults.temp_sensor_stuck:
            self._frozen_temps = (self.t_max, self.t_max_id, self.t_min)

    def _measure_open_wire(self) -> None:
        # Every cell, once per tick, only while a sense line is open: the envelopes of the
        # pack know the extreme cells, not the extreme readings.
        readings = [round(self.cell_reading(i), 3) for i in range(self.pack.n)]
        hi = max(range(len(readings)), key=readings.__getitem__)
        lo = min(range(len(readings)), key=readings.__getitem__)
        self.v_max, self.v_max_id = readings[hi], hi + 1
        self.v_min, self.v_min_id = readings[lo], lo + 1
        self.v_avg = sum(readings) / len(readings)
        self.v_min_plausible = min((v for v in readings if v >= OPEN_WIRE_V), default=self.v_min)

    # -- inputs -----------------------------------------------------------------------------

    def on_frame(self, frame: can.Message) -> None:
        if frame.arbitration_id != self._command.frame_id or frame.is_extended_id:
            return
        data = frame.data
        if len(data) != 8 or not e2e.crc_ok(data):
            self._reject_command("comm_crc")
            return
        alive = data[6] & 0x0F
        if alive == self._last_cmd_alive:
            self._reject_command("comm_alive")
            return
        self.dtcs.report("comm_crc", failed=False)
        self.dtcs.report("comm_alive", failed=False)
        self.valid_command_frames += 1
        self._last_cmd_alive = alive
        self._last_cmd_time = frame.timestamp
        cmd = self._command.decode(data)
        clear = cmd["cmd_clear_faults"] == 1
        if clear and not self._last_clear:
            self._clear_faults(frame.timestamp)
        self._last_clear = clear
        if cmd["cmd_contactors"] == 1:
            if not self.tripped and not self.close_requested:
                self._close()
        elif self.close_requested:
            self._open()

    def _reject_command(self, monitor: str) -> None:
        self.bad_command_frames += 1
        self.dtcs.report(monitor, failed=True)

    def _clear_faults(self, now: float) -> None:
        v_max, v_min, t_max = self.v_max, self.v_min_plausible, self.t_max
        gone = {
            "cell_ov": v_max <= self.ov_threshold_v,
            "cell_uv": v_min >= self.p.uv_threshold_v,
            "cell_ot": t_max <= self.p.ot_threshold_c,
            "overcurrent": abs(self.pack.current_a) <= min(self.p.oc_threshold_a, self.p.oc_charge_threshold_a or 1e12),
            "contactor": self.reported_contactors is not Contactors.WELDED,
            "comm": True,  # a valid command frame is what carries the clear request
            "isolation": self.iso_measured_kohm >= self.p.iso_error_kohm,
            "thermal_event": t_max <= self.p.ot_threshold_c + self.p.thermal_event_margin_c,
            "sense_line": not self._sense_line_symptom(),
        }
        for fault, ok in gone.items():
            if ok:
                self.latched[fault] = False
        for key in self._since:
            self._since[key] = None

    def monitor(self, now: float) -> None:
        """Protection logic, run once per physics tick."""
        self.measure()
        f = self.faults
        p = self.p
        last, self._last_monitor = self._last_monitor, now
        if f.short_protected_by_fuse and last is not None:
            self._heat_fuse(now - last)
        v_max, v_min, t_max = self.v_max, self.v_min_plausible, self.t_max
        self._debounce("cell_ov", not f.overvoltage_protection_disabled and v_max > self.ov_threshold_v, now)
        self._debounce("cell_uv", not f.undervoltage_protection_disabled and v_min < p.uv_threshold_v, now)
        self._debounce("cell_ot", not f.overtemperature_protection_disabled and t_max > p.ot_threshold_c, now)
        current = abs(self.pack.current_a)
        # A fuse-protected pack leaves overcurrent to its fuse: the BMS has no overcurrent trip.
        oc_armed = not f.overcurrent_protection_disabled and not f.short_protected_by_fuse
        short_circuit = p.short_circuit_factor > 0.0 and current > p.short_circuit_factor * p.oc_threshold_a
        if oc_armed and short_circuit:
            # Not debounced: waiting detection_time on thousands of amperes risks welding the contactors.
            self.dtcs.report("overcurrent", failed=True)
            if not self.latched["overcurrent"]:
                self._trip("overcurrent")
        charging = self.pack.current_a > 0.0
        limit = p.oc_charge_threshold_a if charging and p.oc_charge_threshold_a is not None else p.oc_threshold_a
        self._debounce("overcurrent", oc_armed and current > limit, now)
        self._debounce("sense_line", self._sense_line_symptom(), now)

        ref = self._rate_ref
        if ref is None:
            self._rate_ref = (now, t_max)
        elif now - ref[0] >= 1.0 - _EPS:
            self.temp_rate_c_per_s = (t_max - ref[1]) / (now - ref[0])
            self._rate_ref = (now, t_max)
        thermal_event = not f.thermal_event_warning_disabled and (
            t_max > p.ot_threshold_c + p.thermal_event_margin_c or self.temp_rate_c_per_s > p.thermal_event_rate_c_per_s
        )
        self.dtcs.report("thermal_event", failed=thermal_event)
        if thermal_event:
            self.latched["thermal_event"] = True
        if not self._iso_on_frame:
            self._measure_isolation()
        if self.iso_measured_kohm < p.iso_error_kohm:
            self.latched["isolation"] = True

        last = self._last_cmd_time
        # The command watchdog runs while the contactors are (to be) closed.
        if self.close_requested and not f.command_timeout_ignored and last is not None:
            lost = now - last > p.command_timeout_s
            self.dtcs.report("comm_lost", failed=lost)
            if lost and not self.latched["comm"]:
                self._trip("comm")

    def _heat_fuse(self, dt: float) -> None:
        """The fuse element takes the melting integral of the current above its rating over the
        last tick; below its rating it cools and forgets. Once melted it stays open."""
        if self.fuse_blown:
            return
        current = abs(self.pack.current_a)
        if current <= FUSE_RATING_A:
            self.fuse_i2t_a2s = 0.0
            return
        self.fuse_i2t_a2s += (current * current - FUSE_RATING_A * FUSE_RATING_A) * dt
        if self.fuse_i2t_a2s >= FUSE_MELTING_I2T_A2S:
            self.fuse_blown = True

    def _sense_line_symptom(self) -> bool:
        """What the sense-line diagnostics see: an open line or a leakage path to chassis."""
        # Both are active tests of the cell monitoring IC (pull-down currents on each line, a
        # leakage check against chassis), so a load current that pulls the cells down is no symptom.
        open_wire = not self.faults.open_wire_detection_disabled and 0 < self.open_wire <= self.pack.n
        return open_wire or self.short_gnd != 0

    @property
    def iso_warning(self) -> bool:
        return not self.faults.iso_warning_disabled and self.iso_measured_kohm < self.p.iso_warning_kohm

    def _debounce(self, fault: str, active: bool, now: float) -> None:
        """Trip on ``fault`` once ``active`` has held for the detection time; its DTC follows the same result."""
        if not active:
            self._since[fault] = None
            self.dtcs.report(fault, failed=False)
            return
        since = self._since[fault]
        if since is None:
            self._since[fault] = since = now
        if now - since >= self.p.detection_time_s - _EPS:
            self.dtcs.report(fault, failed=True)
            if not self.latched[fault]:
                self._trip(fault)

    # -- cyclic transmission ----------------------------------------------------------------

    def sender(self, bus: can.BusABC, names: list[str]) -> Callable[[], None]:
        """What one cycle of ``names`` sends: each frame built from the latest snapshot."""
        builders = [(self._frames[n], self._builders.get(n, self._zeros(n))) for n in names]
        # More than one cell group per cycle: the next groups follow in the same instant.
        builders = [
            entry
            for n, entry in zip(names, builders, strict=True)
            for _ in range(self.p.cell_groups_per_cycle if n == "BMS_CellVoltages" else 1)
        ]
        send = bus.send

        def send_cycle() -> None:
            for frame, build in builders:
                frame.data = build()
                send(frame)

        return send_cycle

    def _zeros(self, name: str) -> Callable[[], bytearray]:
        length = self._codecs[name].length
        return lambda: bytearray(length)

    def _status(self) -> bytearray:
        latched = self.latched
        contactors = self.reported_contactors
        control_failure = latched["comm"] or latched["contactor"] or contactors is Contactors.WELDED
        alive = self._status_alive
        if not self.faults.alive_counter_frozen:
            self._status_alive = e2e.next_alive(alive)
        key = (
            self.state,
            contactors,
            *(latched[f] for f in _STATUS_LATCHED),
            control_failure,
            self.iso_warning,
            alive,
        )
        # The status changes rarely; reuse the sealed frame of an identical content.
        cached = self._status_cache.get(key)
        if cached is not None:
            return bytearray(cached)
        values = dict(zip(_STATUS_SIGNALS, key, strict=True))
        data = e2e.seal(self._codecs["BMS_Status"].encode(values))
        if self.faults.crc_corrupted:
            data[e2e.CRC_BYTE] ^= 0x5A
        self._status_cache[key] = bytes(data)
        return data

    def _pack_values(self) -> bytearray:
        pack = self.pack
        return self._codecs["BMS_PackValues"].encode(
            {
                "pack_voltage": pack.terminal_voltage(),
                "pack_current": pack.current_a,
                "link_voltage": self.link_voltage,
                "soc": pack.soc_pct,
            }
        )

    def _cell_stats(self) -> bytearray:
        return self._codecs["BMS_CellStats"].encode(
            {
                "cell_v_max": self.v_max,
                "cell_v_min": self.v_min,
                "cell_v_max_id": self.v_max_id,
                "cell_v_min_id": self.v_min_id,
                "cell_v_avg": self.v_avg,
            }
        )

    def _temperatures(self) -> bytearray:
        return self._codecs["BMS_Temperatures"].encode(
            {
                "cell_temp_max": self.t_max,
                "cell_temp_min": self.t_min,
                "cell_temp_max_id": self.t_max_id,
                "coolant_temp": self.pack.coolant_c,
            }
        )

    def _limits(self) -> bytearray:
        pack = self.pack
        p = self.p
        soc = pack.soc_pct
        t_max, t_min = self.t_max, self.t_min
        # Hot derating from 45 degC to the OT threshold; no charging below 0 degC.
        hot = _clamp((p.ot_threshold_c - t_max) / max(p.ot_threshold_c - 45.0, 1.0))
        charge = p.max_charge_current_a * hot * _clamp((100.0 - soc) / 10.0) * _clamp(t_min / 10.0)
        discharge = p.max_discharge_current_a * hot * _clamp(soc / 10.0) * _clamp((t_min + 30.0) / 20.0)
        if self.tripped:
            charge = discharge = 0.0
        chem = pack.chem
        return self._codecs["BMS_Limits"].encode(
            {
                "charge_current_limit": charge,
                "discharge_current_limit": discharge,
                "charge_voltage_limit": pack.n * chem.charge_voltage_per_cell_v,
                "discharge_voltage_limit": pack.n * chem.discharge_voltage_per_cell_v,
            }
        )

    def _measure_isolation(self) -> None:
        """One measurement of the isolation monitor: the isolation DTC's check."""
        self.iso_measured_kohm = self.iso_resistance_kohm
        self.dtcs.report("isolation", failed=self.iso_measured_kohm < self.p.iso_error_kohm)

    def _isolation(self) -> bytearray:
        self._measure_isolation()
        return self._codecs["BMS_Isolation"].encode({"iso_resistance": self.iso_measured_kohm, "iso_valid": 1})

    def _cell_voltages(self) -> bytearray:
        groups = self._cell_layout
        g = self._cell_group
        self._cell_group = (g + 1) % len(groups)
        # A cell reading depends only on the pack's charge state, its current and resistance and
        # the open sense line: while they stay the same (a pack at rest), so does the payload.
        pack = self.pack
        state = (pack.s, pack.current_a, pack.r_cell, self.open_wire)
        cached = self._cell_payloads[g]
        if cached is not None and cached[0] == state:
            return bytearray(cached[1])
        values: dict[str, float] = {"cell_group": g}
        if self.p.cell_groups_per_cycle > 1:
            # Several groups from one snapshot: every cell's reading in one pass, once per state.
            if self._all_readings is None or self._all_readings[0] != state:
                self._all_readings = (state, self._cell_readings())
            readings = self._all_readings[1]
            for name, i in groups[g]:
                values[name] = readings[i]
        else:
            for name, i in groups[g]:
                values[name] = self.cell_reading(i)
        data = self._codecs["BMS_CellVoltages"].encode(values)
        self._cell_payloads[g] = (state, bytes(data))
        return data

    def _cell_readings(self) -> list[float]:
        """``cell_reading(i)`` of every cell, computed together (the same arithmetic)."""
        off = self._v_offset
        readings = [v + off for v in self.pack.cell_voltages(range(self.pack.n))]
        if 0 < self.open_wire <= self.pack.n:
            readings[self.open_wire - 1] = 0.0
        return readings


def _clamp(x: float) -> float:
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x
