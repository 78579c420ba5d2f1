"""The simulated fuel-cell station: FCCU firmware, main shut-off valve, anode loop, stack and
exhaust, with the valve's power relay in a fault box and an exhaust hydrogen analyser.

Entry point ``fccu`` (``simulators.fccu:build_plant``). The bench plays the rest of the
vehicle on CAN (dbc/fccu.dbc); endpoints registered for the in-process transports:

* ``fcio`` (``fcio_endpoint``): fault box with ``VALV:POW`` (valve power relay, 1 = powered)
  and ``VALV:POS?`` (the valve's position switch, 1 = open);
* ``h2x`` (``exhaust_endpoint``): streaming hydrogen analyser at the exhaust outlet.

Everything runs on the event loop's clock; see docs/fccu.md for the model and its limits.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import can

from simulators.bms_firmware import FrameCodec
from simulators.can_plant import CanPlant, Cyclic
from simulators.config_spec import NUM, Spec, check_section
from simulators.dbc import load_ecu_dbc
from simulators.fault_box import Channel, FaultBox
from simulators.faults import CATALOGUE as SENSOR_CATALOGUE
from simulators.faults import H2_SENSOR_FAULTS, Faults, checked_names
from simulators.fccu_firmware import (
    COMMAND_FRAME,
    SENSOR_FRAMES,
    TANK_FRAME,
    TX_FRAMES,
    Fccu,
    FccuDefects,
    FccuParams,
    FcState,
)
from simulators.h2_sensor import H2Sensor, H2SensorSpec

# Valve-close command delay of fc_slow_reaction.
FC_SLOW_REACTION_TIME_S = 2.0
# Warning threshold of h2_warning_threshold_high.
WARNING_THRESHOLD_HIGH_PCT = 5.0
# Exhaust concentration factor of dilution_fan_failed (less dilution air for the same purge).
DILUTION_FAN_FAILED_FACTOR = 2.5
# Full scale of the exhaust analyser: exhaust peaks are well above an enclosure sensor's 5 %vol.
EXHAUST_RANGE_PCT = 100.0

CATALOGUE: dict[str, str] = {
    "h2_warning_threshold_high": f"FCCU warns (red tell-tale) at {WARNING_THRESHOLD_HIGH_PCT:.1f} %vol instead of warn_pct",
    "h2_shutoff_disabled": "FCCU never closes the main shut-off valve on the shut-off threshold (no fault_h2_leak)",
    "shutoff_valve_normally_open": "main shut-off valve stays open when de-energised (follows the FCCU's command only)",
    "h2_plausibility_disabled": "FCCU does no range, discrepancy or timeout check of the enclosure H2 sensor frames",
    "purge_valve_stuck_open": "anode purge valve stuck open: the exhaust carries about purge_peak_pct continuously",
    "dilution_fan_failed": f"dilution fan failed: exhaust H2 {DILUTION_FAN_FAILED_FACTOR:g} x higher (purge peaks above 8 %vol)",
    "fill_limit_disabled": "FCCU never requests a fuelling stop (no fill_stop, no fault_overpressure)",
    "fc_command_timeout_ignored": "FCCU keeps running when BENCH_FcCommand stops or is corrupt",
    "fc_slow_reaction": f"FCCU commands the valve closed {FC_SLOW_REACTION_TIME_S:.1f} s after a detection instead of reaction_time_s",
}


def fault_catalogue() -> dict[str, str]:
    # The exhaust analyser is the same sensor model as the enclosure sensor of bms_pack: the
    # sensor's own fault modes act on every simulated sensor of a station.
    return {**CATALOGUE, **{k: v for k, v in SENSOR_CATALOGUE.items() if k in H2_SENSOR_FAULTS}}


@dataclass(frozen=True)
class FccuFaults:
    h2_warning_threshold_high: bool = False
    h2_shutoff_disabled: bool = False
    shutoff_valve_normally_open: bool = False
    h2_plausibility_disabled: bool = False
    purge_valve_stuck_open: bool = False
    dilution_fan_failed: bool = False
    fill_limit_disabled: bool = False
    fc_command_timeout_ignored: bool = False
    fc_slow_reaction: bool = False

    @classmethod
    def from_names(cls, names: Iterable[str]) -> FccuFaults:
        return cls(**checked_names(names, CATALOGUE))

    def firmware(self) -> FccuDefects:
        return FccuDefects(
            warn_pct=WARNING_THRESHOLD_HIGH_PCT if self.h2_warning_threshold_high else None,
            shutoff_disabled=self.h2_shutoff_disabled,
            plausibility_disabled=self.h2_plausibility_disabled,
            fill_limit_disabled=self.fill_limit_disabled,
            command_timeout_ignored=self.fc_command_timeout_ignored,
            reaction_time_s=FC_SLOW_REACTION_TIME_S if self.fc_slow_reaction else None,
        )


_TOP: dict[str, Spec] = {
    "dbc": ((str,), None, None, None, False),
    "can_channel": ((str,), None, None, None, False),
    "fcio_endpoint": ((str,), "fcio", None, None, False),
    "exhaust_endpoint": ((str,), "h2x", None, None, False),
    "tick_s": (NUM, 0.01, 0, 0.1, True),
    # hydrogen management
    "nwp_bar": (NUM, 700.0, 0, 1000, True),
    "warn_pct": (NUM, 3.0, 0, 100, True),
    "shutoff_pct": (NUM, 4.0, 0, 100, True),
    "discrepancy_pct": (NUM, 1.0, 0, 100, True),
    "detection_time_s": (NUM, 0.2, 0, 60, False),
    "reaction_time_s": (NUM, 0.1, 0, 60, False),
    "valve_close_time_s": (NUM, 0.05, 0, 10, False),
    "command_timeout_s": (NUM, 0.3, 0, 60, True),
    "sensor_timeout_s": (NUM, 0.3, 0, 60, True),
    "fill_limit_pct": (NUM, 125.0, 0, 200, True),
    "anode_pressure_bar": (NUM, 1.5, 0, 10, True),
    "startup_time_s": (NUM, 1.0, 0, 60, False),
    "shutdown_time_s": (NUM, 1.0, 0, 60, False),
    # stack
    "cells": ((int,), 300, 1, 2000, False),
    "ocv_v_per_cell": (NUM, 1.0, 0, 1.3, True),
    "tafel_slope_v": (NUM, 0.06, 0, 1, False),
    "tafel_current_a": (NUM, 5.0, 0, None, True),
    "cell_resistance_ohm": (NUM, 0.00015, 0, 1, False),
    "max_power_kw": (NUM, 150.0, 0, 1000, True),
    "max_current_a": (NUM, 1000.0, 0, 6500, True),
    "power_ramp_kw_per_s": (NUM, 50.0, 0, None, True),
    "ambient_c": (NUM, 25.0, -40, 60, False),
    # anode purge and exhaust
    "purge_interval_s": (NUM, 10.0, 0, 3600, True),
    "purge_duration_s": (NUM, 0.5, 0, 60, True),
    "purge_peak_pct": (NUM, 5.0, 0, 100, False),
    "exhaust_base_pct": (NUM, 0.1, 0, 100, False),
    "exhaust_tau_s": (NUM, 0.4, 0, 60, True),
    # identity
    "software_version": ((str,), "FCCU-SIM 1.0.0", None, None, False),
    "vin": ((str,), "WDB9634031L000001", None, None, False),
    "ecu_serial": ((str,), "FCCU-SN-000004711", None, None, False),
    "uds_request_id": ((int,), 0x7E0, 0, 0x7FF, False),
    "uds_response_id": ((int,), 0x7E8, 0, 0x7FF, False),
    "fcio_serial": ((str,), "SIM00FCIO1", None, None, False),
    "exhaust_analyser": ((dict,), None, None, None, False),
}
_EXHAUST: dict[str, Spec] = {
    "serial": ((str,), "SIM00H2X01", None, None, False),
    "period_s": (NUM, 0.1, 0, 60, True),
    "noise_pct": (NUM, 0.002, 0, None, False),
    "temperature_c": (NUM, 40.0, -40, 85, False),
}
DID_VIN = 0xF190
DID_ECU_SERIAL = 0xF18C
DID_SOFTWARE_VERSION = 0xF195


def _check(section: Any, spec: Mapping[str, Spec], where: str) -> dict[str, Any]:
    return check_section("fccu", section, spec, where)


def build_plant(
    config: Mapping[str, Any], *, faults: Sequence[str], seed: int, register: Callable[[str, Any], None]
) -> FccuPlant:
    sensor_faults = [f for f in faults if f in H2_SENSOR_FAULTS]
    fault_set = FccuFaults.from_names([f for f in faults if f not in H2_SENSOR_FAULTS])
    cfg = _check(config, _TOP, "")
    for required in ("dbc", "can_channel"):
        if cfg[required] is None:
            raise ValueError(f"fccu config: {required} is required")
    x_cfg = _check(cfg.pop("exhaust_analyser") or {}, _EXHAUST, "exhaust_analyser.")
    if cfg["warn_pct"] >= cfg["shutoff_pct"]:
        raise ValueError("fccu config: warn_pct must be below shutoff_pct")
    if cfg["purge_duration_s"] >= cfg["purge_interval_s"]:
        raise ValueError("fccu config: purge_duration_s must be shorter than purge_interval_s")
    for key in ("software_version", "vin", "ecu_serial", "fcio_serial"):
        text = cfg[key]
        if not text.isascii() or not text.isprintable():
            raise ValueError(f"fccu config: {key} must be printable ASCII, got {text!r}")
    if len(cfg["vin"]) != 17:
        raise ValueError(f"fccu config: vin must have 17 characters (ISO 3779), got {cfg['vin']!r}")

    db = load_ecu_dbc(cfg["dbc"], "fccu", (*TX_FRAMES, COMMAND_FRAME, *SENSOR_FRAMES, TANK_FRAME))
    try:
        for m in db.messages:
            FrameCodec(m)
    except ValueError as exc:
        raise ValueError(f"fccu config: dbc {cfg['dbc']!r}: {exc}") from None

    rng = random.Random(seed)
    valve = ShutOffValve(cfg["valve_close_time_s"], stays_open_unpowered=fault_set.shutoff_valve_normally_open)
    params = FccuParams(**{f.name: cfg[f.name] for f in fields(FccuParams)})
    fccu = Fccu(params, fault_set.firmware(), db, valve)
    stack = Stack(**{f.name: cfg[f.name] for f in fields(Stack) if f.init})
    plant = FccuPlant(fccu, valve, stack, cfg, fault_set, channel=cfg["can_channel"], tick_s=cfg["tick_s"])
    plant.dtcs = fccu.dtcs
    plant.dids = {
        DID_VIN: cfg["vin"].encode("ascii"),
        DID_ECU_SERIAL: cfg["ecu_serial"].encode("ascii"),
        DID_SOFTWARE_VERSION: cfg["software_version"].encode("ascii"),
    }
    plant.uds_ids = (cfg["uds_request_id"], cfg["uds_response_id"])
    plant.fcio = FaultBox(
        f"HIL-BENCH,FCIO-SIM,{cfg['fcio_serial']},1.0",
        [
            Channel("VALV:POW", lambda: 1.0 if valve.powered else 0.0, valve.set_power, safe=1.0, integer=True),
            Channel("VALV:POS", lambda: 1.0 if valve.is_open else 0.0, None, safe=None, integer=True),
        ],
    )
    plant.exhaust_analyser = H2Sensor(
        H2SensorSpec(**x_cfg, range_pct=EXHAUST_RANGE_PCT),
        lambda: plant.exhaust_pct,
        Faults.from_names(sensor_faults),
        random.Random(rng.getrandbits(64)),
    )
    register(cfg["fcio_endpoint"], plant.fcio)
    register(cfg["exhaust_endpoint"], plant.exhaust_analyser)
    return plant


class ShutOffValve:
    """Normally-closed main shut-off valve: open only while powered and commanded open."""

    def __init__(self, travel_s: float, *, stays_open_unpowered: bool = False) -> None:
        self.travel_s = travel_s
        self.stays_open_unpowered = stays_open_unpowered
        self.commanded = False
        self.powered = True
        self.is_open = False
        self._target = False
        self._move: asyncio.TimerHandle | None = None
        # (time, open) of every completed movement, for reaction-time checks.
        self.moves: list[tuple[float, bool]] = []

    def command(self, open_: bool) -> None:
        self.commanded = open_
        self._retarget()

    def set_power(self, value: float) -> None:
        self.powered = value >= 0.5
        self._retarget()

    def _retarget(self) -> None:
        target = self.commanded and (self.powered or self.stays_open_unpowered)
        if target == self._target:
            return
        self._target = target
        if self._move is not None:
            self._move.cancel()
            self._move = None
        if target != self.is_open:
            self._move = asyncio.get_running_loop().call_later(self.travel_s, self._arrive)

    def _arrive(self) -> None:
        self._move = None
        self.is_open = self._target
        self.moves.append((asyncio.get_running_loop().time(), self.is_open))

    def shutdown(self) -> None:
        if self._move is not None:
            self._move.cancel()
            self._move = None


@dataclass
class Stack:
    """PEM stack: cell voltage = h * OCV - Tafel - ohmic, h the anode supply fraction (0..1)."""

    cells: int = 300
    ocv_v_per_cell: float = 1.0
    tafel_slope_v: float = 0.06
    tafel_current_a: float = 5.0
    cell_resistance_ohm: float = 0.00015
    max_power_kw: float = 150.0
    max_current_a: float = 1000.0
    power_ramp_kw_per_s: float = 50.0
    ambient_c: float = 25.0

    def __post_init__(self) -> None:
        self.power_kw = 0.0
        self.current_a = 0.0
        self.voltage_v = 0.0
        self.temp_c = self.ambient_c

    def cell_voltage(self, current: float, h: float) -> float:
        return (
            h * self.ocv_v_per_cell
            - self.tafel_slope_v * math.log1p(current / self.tafel_current_a)
            - self.cell_resistance_ohm * current
        )

    def step(self, target_kw: float, h: float, dt: float) -> None:
        # Fuel starvation: no power below half the regulated anode pressure.
        available = self.max_power_kw * min(1.0, max(0.0, (h - 0.5) / 0.5))
        ramp = self.power_ramp_kw_per_s * dt
        want = min(target_kw, available)
        power = self.power_kw
        power = min(want, power + ramp) if want > power else max(want, power - ramp)
        power = min(power, available)  # starvation cuts power at once, not on the ramp
        current = self._current_for(power * 1000.0, h) if power > 0.0 else 0.0
        self.current_a = current
        self.voltage_v = max(0.0, self.cells * self.cell_voltage(current, h))
        self.power_kw = self.voltage_v * current / 1000.0
        heat_target = self.ambient_c + 45.0 * self.power_kw / self.max_power_kw
        self.temp_c += (heat_target - self.temp_c) * min(1.0, dt / 120.0)

    def _current_for(self, watts: float, h: float) -> float:
        """Stack current delivering ``watts`` (Newton from the last operating point)."""
        n = self.cells
        i = min(max(self.current_a, 1.0), self.max_current_a)
        for _ in range(6):
            v = self.cell_voltage(i, h)
            dv = -self.tafel_slope_v / (self.tafel_current_a + i) - self.cell_resistance_ohm
            f = n * i * v - watts
            df = n * (v + i * dv)
            if df <= 0.0:
                break
            i = min(max(i - f / df, 0.0), self.max_current_a)
        return i


class FccuPlant(CanPlant):
    def __init__(
        self,
        fccu: Fccu,
        valve: ShutOffValve,
        stack: Stack,
        cfg: Mapping[str, Any],
        faults: FccuFaults,
        *,
        channel: str,
        tick_s: float = 0.01,
    ) -> None:
        super().__init__(channel=channel, tick_s=tick_s)
        self.fccu = fccu
        self.valve = valve
        self.stack = stack
        self.faults = faults
        self.anode_setpoint_bar = float(cfg["anode_pressure_bar"])
        self.purge_peak_pct = float(cfg["purge_peak_pct"])
        self.exhaust_base_pct = float(cfg["exhaust_base_pct"])
        self.exhaust_tau_s = float(cfg["exhaust_tau_s"])
        self.anode_pressure_bar = 0.0
        self.exhaust_pct = 0.0
        self.fcio: FaultBox | None = None
        self.exhaust_analyser: H2Sensor | None = None

    def on_frame(self) -> Callable[[can.Message], None]:
        return self.fccu.on_frame

    def transmitters(self, bus: can.BusABC) -> list[Cyclic]:
        # One timer per frame, each on its own phase, so the frames of one cycle never share an instant.
        return [
            Cyclic(period, 0.001 * (k + 1), self.fccu.sender(bus, name), f"fccu-tx-{name}")
            for k, (period, name) in enumerate(self.fccu.schedule)
        ]

    def shutdown_parts(self) -> None:
        self.fccu.shutdown()
        self.valve.shutdown()
        if self.exhaust_analyser is not None:
            self.exhaust_analyser.close()

    def step(self, dt: float, now: float) -> None:
        """One tick: the FCCU's task, then anode loop, stack and exhaust physics."""
        fccu = self.fccu
        fccu.monitor(now)
        sp = self.anode_setpoint_bar
        p = self.anode_pressure_bar
        if self.valve.is_open:
            p += (sp - p) * (1.0 - math.exp(-dt / 0.1))
        else:
            # Closed valve: the stack uses up the anode loop; at rest it only leaks down slowly.
            tau = 0.5 if self.stack.current_a > 0.0 else 30.0
            p -= p * (1.0 - math.exp(-dt / tau))
        self.anode_pressure_bar = p
        h = min(1.0, p / sp)
        self.stack.step(fccu.power_target_kw, h, dt)
        fccu.anode_pressure_bar = p
        fccu.stack_voltage_v = self.stack.voltage_v
        fccu.stack_current_a = self.stack.current_a
        fccu.stack_power_kw = self.stack.power_kw
        fccu.stack_temp_c = self.stack.temp_c
        self.exhaust_pct += (self._exhaust_target(now, h) - self.exhaust_pct) * (
            1.0 - math.exp(-dt / self.exhaust_tau_s)
        )

    def _exhaust_target(self, now: float, h: float) -> float:
        f = self.faults
        pressurised = h > 0.1
        if pressurised and (f.purge_valve_stuck_open or self.fccu.purging(now)):
            target = self.purge_peak_pct * h
        elif self.fccu.mode is FcState.RUN:
            target = self.exhaust_base_pct
        else:
            target = 0.0
        return target * DILUTION_FAN_FAILED_FACTOR if f.dilution_fan_failed else target
