"""FCCU firmware model: fuel-cell state machine and the hydrogen management of the fuel system.

The bench is the rest of the vehicle. It sends BENCH_FcCommand and emulates the FCCU's two
enclosure hydrogen sensors and its tank pressure transducer as E2E-protected frames; the
FCCU answers with the cyclic FCCU_* frames (see dbc/fccu.dbc and docs/fccu.md). The plant
(simulators/fccu.py) owns the physics - valve travel, anode pressure, stack, exhaust - and
calls :meth:`Fccu.monitor` on every tick, like the 10 ms task of a real control unit. Each
check also reports to the FCCU's DTC memory (``dtcs``, simulators/dtc.py: the monitors and
codes of ``FCCU_DTCS``), which the plant serves over UDS.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

import can

from simulators import e2e
from simulators.bms_firmware import FrameCodec
from simulators.dtc import FCCU_DTCS, DtcMemory

log = logging.getLogger(__name__)

COMMAND_FRAME = "BENCH_FcCommand"
SENSOR_FRAMES = ("BENCH_H2Sensor1", "BENCH_H2Sensor2")
TANK_FRAME = "BENCH_TankSensor"
STATUS_FRAME = "FCCU_Status"
TX_FRAMES = (STATUS_FRAME, "FCCU_Stack", "FCCU_Hydrogen")
# Concentrations outside 0..100 %vol cannot come from a working sensor (raw 0xFFFF is its error code).
SENSOR_RANGE_PCT = (0.0, 100.0)
# Fraction of the regulated anode pressure at which startup is complete.
_RUN_PRESSURE_FRACTION = 0.8
_EPS = 1e-9


class FcState(IntEnum):
    OFF = 0
    STARTUP = 1
    RUN = 2
    SHUTDOWN = 3
    FAULT = 4


# Latched faults; all but overpressure put the FCCU in its safe state (valve closed, stack off).
LATCHED = ("h2_leak", "h2_sensor", "comm", "overpressure")
SAFE_STATE_FAULTS = ("h2_leak", "h2_sensor", "comm")


class Valve(Protocol):
    def command(self, open_: bool) -> None: ...


@dataclass(frozen=True)
class FccuParams:
    nwp_bar: float = 700.0
    warn_pct: float = 3.0
    shutoff_pct: float = 4.0
    discrepancy_pct: float = 1.0
    detection_time_s: float = 0.2
    reaction_time_s: float = 0.1
    command_timeout_s: float = 0.3
    sensor_timeout_s: float = 0.3
    fill_limit_pct: float = 125.0
    startup_time_s: float = 1.0
    shutdown_time_s: float = 1.0
    anode_pressure_bar: float = 1.5
    purge_interval_s: float = 10.0
    purge_duration_s: float = 0.5
    max_power_kw: float = 150.0
    software_version: str = "FCCU-SIM 1.0.0"


@dataclass(frozen=True)
class FccuDefects:
    """The firmware side of the plant's fault modes (simulators/fccu.py has the catalogue)."""

    warn_pct: float | None = None
    shutoff_disabled: bool = False
    plausibility_disabled: bool = False
    fill_limit_disabled: bool = False
    command_timeout_ignored: bool = False
    reaction_time_s: float | None = None


class _Input:
    """One E2E-protected input frame from the bench (a sensor)."""

    def __init__(self, codec: FrameCodec, signal: str) -> None:
        self.codec = codec
        self.signal = signal
        self.value: float | None = None
        self.last_ok: float | None = None
        self.last_alive: int | None = None
        self.valid_frames = 0
        self.bad_frames = 0


def e2e_ok(data: bytes | bytearray, last_alive: int | None) -> int | None:
    """The frame's alive counter when its CRC is right and the counter moved, else None.

    A repeated counter is as bad as a wrong CRC: a sender stuck on one frame looks alive otherwise.
    """
    if len(data) != 8 or not e2e.crc_ok(data):
        return None
    alive = data[6] & 0x0F
    return None if alive == last_alive else alive


class Fccu:
    def __init__(self, params: FccuParams, defects: FccuDefects, db: Any, valve: Valve) -> None:
        self.p = params
        self.d = defects
        self.valve = valve
        self.warn_pct = params.warn_pct if defects.warn_pct is None else defects.warn_pct
        self.reaction_time_s = params.reaction_time_s if defects.reaction_time_s is None else defects.reaction_time_s
        self.fill_limit_bar = params.nwp_bar * params.fill_limit_pct / 100.0

        self._codecs = {m.name: FrameCodec(m) for m in db.messages}
        self._command = self._codecs[COMMAND_FRAME]
        self.sensors = [_Input(self._codecs[n], f"h2_conc_{i + 1}") for i, n in enumerate(SENSOR_FRAMES)]
        self.tank = _Input(self._codecs[TANK_FRAME], "tank_pressure_sensor")
        self._inputs = {inp.codec.frame_id: inp for inp in (*self.sensors, self.tank)}

        self.latched: dict[str, bool] = dict.fromkeys(LATCHED, False)
        self._since: dict[str, float | None] = dict.fromkeys(("warn", "shutoff", "discrepancy"))
        self.lamp_warning = False
        self.mode = FcState.OFF
        self._mode_since = 0.0
        self._run_since: float | None = None
        self.valve_open_cmd = False
        self.run_request = False
        self.fill_request = False
        self.power_request_kw = 0.0
        self._last_clear = False
        self.awake_at: float | None = None
        self._last_cmd_time: float | None = None
        self._last_cmd_alive: int | None = None
        self.valid_command_frames = 0
        self.bad_command_frames = 0
        self._reaction: asyncio.TimerHandle | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._debounce_timers: dict[str, asyncio.TimerHandle] = {}
        # Reaction log for tests and docs: (fault, detected at, valve-close commanded at).
        self.trips: list[tuple[str, float, float | None]] = []
        self._status_alive = 0
        self.tank_stale = False
        self.dtcs = DtcMemory(FCCU_DTCS)

        # Physical readings the plant writes every tick.
        self.anode_pressure_bar = 0.0
        self.stack_voltage_v = 0.0
        self.stack_current_a = 0.0
        self.stack_power_kw = 0.0
        self.stack_temp_c = 25.0

        self.schedule: list[tuple[float, str]] = []
        for m in db.messages:
            if "FCCU" in (m.senders or []) and m.cycle_time:
                self.schedule.append((m.cycle_time / 1000.0, m.name))
        # The status frame first in each cycle: a reaction is on the bus as early as possible.
        self.schedule.sort(key=lambda entry: (entry[0], entry[1] != STATUS_FRAME, entry[1]))
        self._builders: dict[str, Callable[[], bytearray]] = {
            STATUS_FRAME: self._status,
            "FCCU_Stack": self._stack,
            "FCCU_Hydrogen": self._hydrogen,
        }

    def shutdown(self) -> None:
        for handle in (self._reaction, self._watchdog, *self._debounce_timers.values()):
            if handle is not None:
                handle.cancel()
        self._reaction = self._watchdog = None
        self._debounce_timers.clear()

    # -- derived state --------------------------------------------------------------------------

    @property
    def tripped(self) -> bool:
        return any(self.latched[f] for f in SAFE_STATE_FAULTS)

    @property
    def state(self) -> FcState:
        return FcState.FAULT if self.tripped else self.mode

    def sensor_valid(self, inp: _Input, now: float) -> bool:
        if inp.value is None or inp.last_ok is None:
            return False
        if self.d.plausibility_disabled:
            return True
        lo, hi = SENSOR_RANGE_PCT
        return now - inp.last_ok <= self.p.sensor_timeout_s + _EPS and lo <= inp.value <= hi

    def enclosure_pct(self, now: float) -> float | None:
        """Fused enclosure reading: the highest valid sensor; None when no sensor is valid."""
        values = [s.value for s in self.sensors if s.value is not None and self.sensor_valid(s, now)]
        return max(values) if values else None

    @property
    def tank_pressure_bar(self) -> float:
        return self.tank.value or 0.0

    @property
    def fill_stop(self) -> bool:
        if self.d.fill_limit_disabled or not self.fill_request:
            return False
        # A fuelling the FCCU cannot supervise is stopped as well.
        return self.latched["overpressure"] or self.tank_stale

    def purging(self, now: float) -> bool:
        """Anode purge valve command: a pulse every purge interval while the stack runs."""
        if self.mode is not FcState.RUN or self._run_since is None:
            return False
        elapsed = now - self._run_since
        if elapsed < self.p.purge_interval_s - _EPS:
            return False
        return (elapsed + _EPS) % self.p.purge_interval_s < self.p.purge_duration_s

    @property
    def power_target_kw(self) -> float:
        if self.mode is not FcState.RUN:
            return 0.0
        return min(max(self.power_request_kw, 0.0), self.p.max_power_kw)

    # -- inputs ---------------------------------------------------------------------------------

    def on_frame(self, frame: can.Message) -> None:
        if frame.is_extended_id or frame.is_error_frame:
            return
        fid = frame.arbitration_id
        if fid == self._command.frame_id:
            self._on_command(frame)
            return
        inp = self._inputs.get(fid)
        if inp is None:
            return
        alive = e2e_ok(frame.data, inp.last_alive)
        if alive is None:
            inp.bad_frames += 1
            return
        inp.valid_frames += 1
        inp.last_alive = alive
        inp.last_ok = frame.timestamp
        inp.value = inp.codec.decode(frame.data)[inp.signal]
        if self.awake_at is None:
            return
        if inp is self.tank:
            self._check_fill(frame.timestamp)
            return
        if not self.d.plausibility_disabled:
            out_of_range = not (SENSOR_RANGE_PCT[0] <= inp.value <= SENSOR_RANGE_PCT[1])
            self.dtcs.report(f"h2_sensor_{self.sensors.index(inp) + 1}_error", failed=out_of_range)
            if out_of_range:
                # An error code needs no debounce: the sensor has said it is broken.
                self._trip("h2_sensor", frame.timestamp)
        # Evaluated on arrival as well: the detection time counts from the frame, not the next task.
        self.monitor(frame.timestamp)

    def _on_command(self, frame: can.Message) -> None:
        alive = e2e_ok(frame.data, self._last_cmd_alive)
        awake = self.awake_at is not None
        if alive is None:
            self.bad_command_frames += 1
            if awake:
                crc_wrong = len(frame.data) != 8 or not e2e.crc_ok(frame.data)
                self.dtcs.report("comm_crc" if crc_wrong else "comm_alive", failed=True)
            return
        if awake:
            self.dtcs.report("comm_crc", failed=False)
            self.dtcs.report("comm_alive", failed=False)
        now = frame.timestamp
        self.valid_command_frames += 1
        self._last_cmd_alive = alive
        self._last_cmd_time = now
        # A timer, not the 10 ms task: the timeout is then exact, as a CAN driver's deadline monitor is.
        if self._watchdog is not None:
            self._watchdog.cancel()
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_at(now + self.p.command_timeout_s + _EPS, self._command_lost)
        if self.awake_at is None:
            # The first command frame wakes the FCCU (ignition on): supervision starts here.
            self.awake_at = now
        cmd = self._command.decode(frame.data)
        clear = cmd["clear_faults"] == 1
        if clear and not self._last_clear:
            self._clear_faults(now)
        self._last_clear = clear
        self.run_request = cmd["run_request"] == 1
        self.fill_request = cmd["fill_request"] == 1
        self.power_request_kw = cmd["power_request"]

    def _command_lost(self) -> None:
        self._watchdog = None
        self.monitor_command(asyncio.get_running_loop().time())

    def monitor_command(self, now: float) -> None:
        last = self._last_cmd_time
        if self.state is not FcState.OFF and not self.d.command_timeout_ignored and last is not None:
            lost = now - last > self.p.command_timeout_s
            self.dtcs.report("comm_lost", failed=lost)
            if lost:
                self._trip("comm", now)

    def _check_fill(self, now: float) -> None:
        if self.d.fill_limit_disabled or not self.fill_request:
            return
        over = self.tank_pressure_bar > self.fill_limit_bar
        self.dtcs.report("overpressure", failed=over)
        if over:
            self._trip("overpressure", now)

    def _clear_faults(self, now: float) -> None:
        reading = self.enclosure_pct(now)
        s1, s2 = (s.value for s in self.sensors)
        sensors_ok = all(self.sensor_valid(s, now) for s in self.sensors) and (
            s1 is not None and s2 is not None and abs(s1 - s2) <= self.p.discrepancy_pct
        )
        gone = {
            "h2_leak": reading is not None and reading <= self.p.shutoff_pct,
            "h2_sensor": sensors_ok,
            "comm": True,  # a valid command frame is what carries the clear request
            "overpressure": self.tank_pressure_bar <= self.fill_limit_bar,
        }
        for fault, ok in gone.items():
            if ok:
                self.latched[fault] = False
        for key in self._since:
            self._since[key] = None

    # -- reactions ------------------------------------------------------------------------------

    def _trip(self, fault: str, now: float) -> None:
        if self.latched[fault]:
            return
        self.latched[fault] = True
        log.debug("FCCU fault %s at %.3f s", fault, now)
        self.trips.append((fault, now, None))
        if fault in SAFE_STATE_FAULTS and self._reaction is None:
            loop = asyncio.get_running_loop()
            # The reaction time counts from detection, which may lie a little before this call.
            delay = max(0.0, now + self.reaction_time_s - loop.time())
            self._reaction = loop.call_later(delay, self._react)

    def _react(self) -> None:
        self._reaction = None
        now = asyncio.get_running_loop().time()
        self.trips = [(f, t, now if c is None and f in SAFE_STATE_FAULTS else c) for f, t, c in self.trips]
        self._set_mode(FcState.OFF, now)
        self._command_valve(False)

    def _command_valve(self, open_: bool) -> None:
        self.valve_open_cmd = open_
        self.valve.command(open_)

    def _set_mode(self, mode: FcState, now: float) -> None:
        if mode is not self.mode:
            self.mode = mode
            self._mode_since = now
            self._run_since = now if mode is FcState.RUN else None

    # -- the 10 ms task -------------------------------------------------------------------------

    def monitor(self, now: float) -> None:
        if self.awake_at is None:
            return
        p = self.p
        d = self.d
        reading = self.enclosure_pct(now)
        value = reading if reading is not None else 0.0
        self.lamp_warning = self._debounce("warn", value > self.warn_pct, now)
        leak = not d.shutoff_disabled and value > p.shutoff_pct
        if self._debounce("shutoff", leak, now):
            self.dtcs.report("h2_leak", failed=True)
            self._trip("h2_leak", now)
        elif not leak:
            self.dtcs.report("h2_leak", failed=False)

        if not d.plausibility_disabled:
            s1, s2 = self.sensors
            both = self.sensor_valid(s1, now) and self.sensor_valid(s2, now)
            apart = both and abs((s1.value or 0.0) - (s2.value or 0.0)) > p.discrepancy_pct + _EPS
            if self._debounce("discrepancy", apart, now):
                self.dtcs.report("h2_sensor_discrepancy", failed=True)
                self._trip("h2_sensor", now)
            elif both and not apart:
                self.dtcs.report("h2_sensor_discrepancy", failed=False)
            for n, s in enumerate(self.sensors, 1):
                ref = s.last_ok if s.last_ok is not None else self.awake_at
                missing = now - ref > p.sensor_timeout_s + _EPS
                self.dtcs.report(f"h2_sensor_{n}_missing", failed=missing)
                if missing:
                    self._trip("h2_sensor", ref + p.sensor_timeout_s)
        tank_ref = self.tank.last_ok if self.tank.last_ok is not None else self.awake_at
        self.tank_stale = now - tank_ref > p.sensor_timeout_s + _EPS

        # Also here: the FCCU may leave OFF after the watchdog has fired (a fault cleared).
        self.monitor_command(now)
        self._state_machine(now)

    def _debounce(self, key: str, active: bool, now: float) -> bool:
        """True once ``active`` has held for the detection time."""
        if not active:
            self._since[key] = None
            return False
        since = self._since[key]
        if since is None:
            self._since[key] = since = now
            old = self._debounce_timers.pop(key, None)
            if old is not None:
                old.cancel()
            # Wake exactly when the detection time is up rather than on the next 10 ms task.
            loop = asyncio.get_running_loop()
            self._debounce_timers[key] = loop.call_at(since + self.p.detection_time_s, self._wake)
        return now - since >= self.p.detection_time_s - _EPS

    def _wake(self) -> None:
        self.monitor(asyncio.get_running_loop().time())

    def _state_machine(self, now: float) -> None:
        p = self.p
        mode = self.mode
        if self.tripped:
            return  # the pending reaction (or the one already taken) owns the valve and the stack
        if mode is FcState.OFF:
            if self.run_request:
                self._set_mode(FcState.STARTUP, now)
                self._command_valve(True)
        elif mode is FcState.STARTUP:
            if not self.run_request:
                self._shut_down(now)
            elif (
                now - self._mode_since >= p.startup_time_s - _EPS
                and self.anode_pressure_bar >= _RUN_PRESSURE_FRACTION * p.anode_pressure_bar
            ):
                self._set_mode(FcState.RUN, now)
        elif mode is FcState.RUN:
            if not self.run_request:
                self._shut_down(now)
        elif mode is FcState.SHUTDOWN and now - self._mode_since >= p.shutdown_time_s - _EPS:
            self._set_mode(FcState.OFF, now)

    def _shut_down(self, now: float) -> None:
        # Close first: the stack then consumes what is left in the anode loop.
        self._command_valve(False)
        self._set_mode(FcState.SHUTDOWN, now)

    # -- cyclic transmission --------------------------------------------------------------------

    def sender(self, bus: can.BusABC, name: str) -> Callable[[], None]:
        """What one cycle of ``name`` sends: the frame built from the latest state."""
        codec = self._codecs[name]
        build = self._builders.get(name) or (lambda: bytearray(codec.length))

        def send() -> None:
            bus.send(can.Message(arbitration_id=codec.frame_id, is_extended_id=False, data=build()))

        return send

    def _status(self) -> bytearray:
        latched = self.latched
        alive = self._status_alive
        self._status_alive = e2e.next_alive(alive)
        values = {
            "fc_state": self.state,
            "valve": 1 if self.valve_open_cmd else 0,
            "lamp_h2_warning": self.lamp_warning,
            "lamp_h2_system": latched["h2_sensor"],
            "lamp_fc_fault": latched["comm"],
            "fault_h2_leak": latched["h2_leak"],
            "fault_h2_sensor": latched["h2_sensor"],
            "fault_comm": latched["comm"],
            "fault_overpressure": latched["overpressure"],
            "fill_stop": self.fill_stop,
            "status_alive": alive,
        }
        return e2e.seal(self._codecs[STATUS_FRAME].encode({k: float(v) for k, v in values.items()}))

    def _stack(self) -> bytearray:
        return self._codecs["FCCU_Stack"].encode(
            {
                "stack_voltage": self.stack_voltage_v,
                "stack_current": self.stack_current_a,
                "stack_power": self.stack_power_kw,
                "stack_temp": self.stack_temp_c,
            }
        )

    def _hydrogen(self) -> bytearray:
        now = asyncio.get_running_loop().time()
        reading = self.enclosure_pct(now)
        return self._codecs["FCCU_Hydrogen"].encode(
            {
                "anode_pressure": self.anode_pressure_bar,
                "tank_pressure": self.tank_pressure_bar,
                "h2_encl": reading if reading is not None else 0.0,
            }
        )
