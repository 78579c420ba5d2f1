"""The simulated station: battery pack + BMS + bidirectional supply, wired and ticking, with a
power analyzer on the supply's output, an H2 sensor in the enclosure, a climate chamber around
the pack and a fault-injection box on its sense lines, isolation and HV terminals.

Entry point ``bms_pack`` (``simulators.plant:build_plant``). Everything runs on the event
loop's clock, so on a virtual-time loop hours of bench time pass in seconds.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from typing import Any

import can

from simulators.analyzer import AnalyzerSpec, PowerAnalyzer
from simulators.bms_firmware import COMMAND_FRAME, Bms, BmsParams, Contactors
from simulators.can_plant import CanPlant, Cyclic
from simulators.chamber import Chamber, ChamberSpec
from simulators.config_spec import NUM, Spec, check_section
from simulators.daq import Daq970a, DaqSpec, Tap, pack_wiring
from simulators.dbc import load_ecu_dbc
from simulators.fault_box import Channel, FaultBox
from simulators.faults import CATALOGUE, Faults
from simulators.h2_sensor import H2Sensor, H2SensorSpec
from simulators.pack import CHEMISTRIES, Pack, PackParams
from simulators.supply import Supply, SupplyRatings

# Link capacitance discharge (supply output off, contactors open) and precharge time
# constants are a fraction of the configured precharge time: after it the link is at ~99 %.
_PRECHARGE_TAUS = 5.0
_LINK_BLEED_TAU_S = 0.5

_TOP: dict[str, Spec] = {
    "dbc": ((str,), None, None, None, False),
    "can_channel": ((str,), None, None, None, False),
    "psu_endpoint": ((str,), "psu", None, None, False),
    "analyzer_endpoint": ((str,), "pa", None, None, False),
    "h2_endpoint": ((str,), "h2", None, None, False),
    "fib_endpoint": ((str,), "fib", None, None, False),
    "chamber_endpoint": ((str,), "chamber", None, None, False),
    "emu_endpoint": ((str,), "emu", None, None, False),
    # The first DAQ mainframe; the further ones get 2, 3 ... appended (daq2, daq3 ...).
    "daq_endpoint": ((str,), "daq", None, None, False),
    "enclosure_h2_pct": (NUM, 0.0, 0, 100, False),
    "cells": ((int,), 192, 1, None, False),
    "chemistry": ((str,), "NMC", None, None, False),
    "capacity_ah": (NUM, 120.0, 0, None, True),
    "initial_soc_pct": (NUM, 50.0, 0, 100, False),
    "ambient_c": (NUM, 25.0, -40, 60, False),
    "initial_temp_c": (NUM, None, -40, 80, False),
    "internal_resistance_mohm_per_cell": (NUM, 0.8, 0, 100, True),
    "thermal_mass_j_per_k": (NUM, 420_000.0, 0, None, True),
    "thermal_resistance_k_per_w": (NUM, 0.05, 0, None, True),
    "temp_sensors": ((int,), 16, 1, 255, False),
    "cooling_k_per_w": (NUM, None, 0, None, True),
    "coolant_c": (NUM, None, -40, 60, False),
    "heater_sensor": ((int,), 1, 1, 255, False),
    "heater_thermal_mass_j_per_k": (NUM, 1500.0, 0, None, True),
    "heater_thermal_resistance_k_per_w": (NUM, 0.05, 0, None, True),
    "tick_s": (NUM, 0.1, 0, 1.0, True),
    "bms": ((dict,), None, None, None, False),
    "supply": ((dict,), None, None, None, False),
    "analyzer": ((dict,), None, None, None, False),
    "h2_sensor": ((dict,), None, None, None, False),
    "chamber": ((dict,), None, None, None, False),
    "fault_box": ((dict,), None, None, None, False),
    "daq": ((dict,), None, None, None, False),
}
_BMS: dict[str, Spec] = {
    "ov_threshold_v": (NUM, None, 0, 10, True),
    "uv_threshold_v": (NUM, None, 0, 10, True),
    "ot_threshold_c": (NUM, 60.0, 0, 200, True),
    "oc_threshold_a": (NUM, 350.0, 0, None, True),
    "oc_charge_threshold_a": (NUM, None, 0, None, True),
    "detection_time_s": (NUM, 0.2, 0, 60, False),
    "reaction_time_s": (NUM, 0.1, 0, 60, False),
    "precharge_time_s": (NUM, 0.3, 0, 60, True),
    "command_timeout_s": (NUM, 0.5, 0, 60, True),
    "software_version": ((str,), "BMS-SIM 1.0.0", None, None, False),
    "vin": ((str,), "WDB9634031L000001", None, None, False),
    "ecu_serial": ((str,), "BMS-SN-0000012345", None, None, False),
    "uds_request_id": ((int,), 0x7E0, 0, 0x7FF, False),
    "uds_response_id": ((int,), 0x7E8, 0, 0x7FF, False),
    "max_charge_current_a": (NUM, 180.0, 0, None, False),
    "max_discharge_current_a": (NUM, 300.0, 0, None, False),
    "iso_resistance_kohm": (NUM, 5000.0, 0, 65535, False),
    "iso_warning_kohm": (NUM, 500.0, 0, 65535, False),
    "iso_error_kohm": (NUM, 100.0, 0, 65535, False),
    "thermal_event_margin_c": (NUM, 10.0, 0, 100, False),
    "thermal_event_rate_c_per_s": (NUM, 1.0, 0, None, True),
    # UN R100 states isolation in Ohm per volt of the maximum working voltage; when set these
    # override the kOhm thresholds (maximum working voltage = cells x charge voltage per cell).
    "iso_warning_ohm_per_v": (NUM, None, 0, None, True),
    "iso_error_ohm_per_v": (NUM, None, 0, None, True),
    "short_circuit_factor": (NUM, 5.0, 0, None, False),
    "cell_groups_per_cycle": ((int,), 1, 1, None, False),
}
_SUPPLY: dict[str, Spec] = {
    "voltage_max_v": (NUM, 1000.0, 0, None, True),
    "current_max_a": (NUM, 80.0, 0, None, True),
    "power_max_w": (NUM, 30000.0, 0, None, True),
    "serial": ((str,), "SIM0000001", None, None, False),
    "noise_v": (NUM, 0.05, 0, None, False),
    "noise_a": (NUM, 0.02, 0, None, False),
}
_ANALYZER: dict[str, Spec] = {
    "elements": ((int,), 1, 1, 7, False),
    "serial": ((str,), "SIM0000PA1", None, None, False),
    "noise_v": (NUM, 0.01, 0, None, False),
    "noise_a": (NUM, 0.005, 0, None, False),
}
_H2: dict[str, Spec] = {
    "serial": ((str,), "SIM00H2001", None, None, False),
    "period_s": (NUM, 1.0, 0, 60, True),
    "noise_pct": (NUM, 0.002, 0, None, False),
    "temperature_c": (NUM, 30.0, -40, 85, False),
}
_CHAMBER: dict[str, Spec] = {
    "serial": ((str,), "SIM00CH001", None, None, False),
    "min_temp_c": (NUM, -40.0, -100, None, False),
    "max_temp_c": (NUM, 150.0, None, 300, False),
    "max_ramp_k_per_min": (NUM, 5.0, 0, None, True),
}
_FIB: dict[str, Spec] = {
    "serial": ((str,), "SIM0FIB001", None, None, False),
    "iso_ro_max_kohm": (NUM, 10000.0, 0, None, True),
    "heater_max_w": (NUM, 5000.0, 0, None, True),
}
_DAQ: dict[str, Spec] = {
    # Mainframe m (1-based) reports serial <serial_prefix><m>.
    "serial_prefix": ((str,), "SIM00DAQ0", None, None, False),
    "noise_v": (NUM, 20e-6, 0, None, False),
    "noise_c": (NUM, 0.05, 0, None, False),
}
FIB_MODEL = "FAULT INSERTION BOX FIB-16"
FIB_FIRMWARE = "1.0 (simulated)"
# UDS data identifiers the BMS answers (ISO 14229-1 Annex C).
DID_VIN = 0xF190
DID_ECU_SERIAL = 0xF18C
DID_SOFTWARE_VERSION = 0xF195


def fault_catalogue() -> dict[str, str]:
    return dict(CATALOGUE)


def _check(section: Any, spec: Mapping[str, Spec], where: str) -> dict[str, Any]:
    return check_section("bms_pack", section, spec, where)


def build_plant(
    config: Mapping[str, Any], *, faults: Sequence[str], seed: int, register: Callable[[str, Any], None]
) -> Plant:
    fault_set = Faults.from_names(faults)
    top = _check(config, _TOP, "")
    for required in ("dbc", "can_channel"):
        if top[required] is None:
            raise ValueError(f"bms_pack config: {required} is required")
    bms_cfg = _check(top["bms"] or {}, _BMS, "bms.")
    sup_cfg = _check(top["supply"] or {}, _SUPPLY, "supply.")
    pa_cfg = _check(top["analyzer"] or {}, _ANALYZER, "analyzer.")
    h2_cfg = _check(top["h2_sensor"] or {}, _H2, "h2_sensor.")
    ch_cfg = _check(top["chamber"] or {}, _CHAMBER, "chamber.")
    fib_cfg = _check(top["fault_box"] or {}, _FIB, "fault_box.")
    daq_cfg = _check(top["daq"] or {}, _DAQ, "daq.")
    if not ch_cfg["min_temp_c"] <= top["ambient_c"] <= ch_cfg["max_temp_c"]:
        raise ValueError("bms_pack config: ambient_c must lie within chamber.min_temp_c .. chamber.max_temp_c")
    if top["heater_sensor"] > top["temp_sensors"]:
        raise ValueError(
            f"bms_pack config: heater_sensor must be <= temp_sensors ({top['temp_sensors']}), got {top['heater_sensor']}"
        )
    uds_cfg = {k: bms_cfg.pop(k) for k in ("vin", "ecu_serial", "uds_request_id", "uds_response_id")}
    for key in ("vin", "ecu_serial", "software_version"):
        text = uds_cfg.get(key, bms_cfg.get(key))
        if not str(text).isascii() or not str(text).isprintable():
            raise ValueError(f"bms_pack config: bms.{key} must be printable ASCII, got {text!r}")
    if len(uds_cfg["vin"]) != 17:
        raise ValueError(f"bms_pack config: bms.vin must have 17 characters (ISO 3779), got {uds_cfg['vin']!r}")
    chem_name = top["chemistry"].upper()
    if chem_name not in CHEMISTRIES:
        raise ValueError(
            f"bms_pack config: chemistry must be one of {', '.join(CHEMISTRIES)}, got {top['chemistry']!r}"
        )
    chem = CHEMISTRIES[chem_name]
    bms_cfg["ov_threshold_v"] = bms_cfg["ov_threshold_v"] or chem.ov_threshold_v
    bms_cfg["uv_threshold_v"] = bms_cfg["uv_threshold_v"] or chem.uv_threshold_v
    max_working_v = top["cells"] * chem.charge_voltage_per_cell_v
    for level in ("warning", "error"):
        per_volt = bms_cfg.pop(f"iso_{level}_ohm_per_v")
        if per_volt is not None:
            bms_cfg[f"iso_{level}_kohm"] = per_volt * max_working_v / 1000.0
    if bms_cfg["uv_threshold_v"] >= bms_cfg["ov_threshold_v"]:
        raise ValueError("bms_pack config: bms.uv_threshold_v must be below bms.ov_threshold_v")
    if bms_cfg["iso_error_kohm"] > bms_cfg["iso_warning_kohm"]:
        raise ValueError(
            f"bms_pack config: the isolation error threshold ({bms_cfg['iso_error_kohm']:g} kOhm) must not exceed"
            f" the warning threshold ({bms_cfg['iso_warning_kohm']:g} kOhm); Ohm/V thresholds are per volt of"
            f" {max_working_v:g} V (bms.iso_warning_ohm_per_v, bms.iso_error_ohm_per_v)"
        )

    db = load_ecu_dbc(top["dbc"], "bms_pack", ("BMS_Status", "BMS_CellVoltages", COMMAND_FRAME))
    cell_signals = sum(1 for s in db.get_message_by_name("BMS_CellVoltages").signals if not s.is_multiplexer)
    if top["cells"] > cell_signals:
        raise ValueError(
            f"bms_pack config: cells must be <= {cell_signals} (cell voltages in the dbc), got {top['cells']}"
        )

    rng = random.Random(seed)
    pack_params = PackParams(
        **{f.name: top[f.name] for f in fields(PackParams) if f.name != "chemistry"}, chemistry=chem_name
    )
    pack = Pack(pack_params, random.Random(rng.getrandbits(64)))
    supply = Supply(SupplyRatings(**sup_cfg), random.Random(rng.getrandbits(64)))
    bms = Bms(BmsParams(**bms_cfg), pack, fault_set, db)
    analyzer = PowerAnalyzer(AnalyzerSpec(**pa_cfg), random.Random(rng.getrandbits(64)))
    plant = Plant(pack, bms, supply, channel=top["can_channel"], tick_s=top["tick_s"], analyzer=analyzer)
    plant.enclosure_h2_pct = top["enclosure_h2_pct"]
    plant.h2_sensor = H2Sensor(
        H2SensorSpec(**h2_cfg), lambda: plant.enclosure_h2_pct, fault_set, random.Random(rng.getrandbits(64))
    )
    plant.dtcs = bms.dtcs
    plant.dids = {
        DID_VIN: uds_cfg["vin"].encode("ascii"),
        DID_ECU_SERIAL: uds_cfg["ecu_serial"].encode("ascii"),
        DID_SOFTWARE_VERSION: bms_cfg["software_version"].encode("ascii"),
    }
    plant.uds_ids = (uds_cfg["uds_request_id"], uds_cfg["uds_response_id"])
    register(top["psu_endpoint"], supply)
    register(top["analyzer_endpoint"], analyzer)
    plant.chamber = Chamber(ChamberSpec(**ch_cfg, initial_temp_c=top["ambient_c"]))
    plant.fault_box = _fault_box(plant, fib_cfg)
    register(top["h2_endpoint"], plant.h2_sensor)
    register(top["fib_endpoint"], plant.fault_box)
    register(top["chamber_endpoint"], plant.chamber)
    # The battery model's own controls: a HIL rig sets the emulated pack's state before a test,
    # where a lab with a real pack would charge or discharge it there first.
    plant.emulation = FaultBox(
        f"BENCH-SIM,PACK-EMU,{fib_cfg['serial']},{FIB_FIRMWARE}",
        [Channel("SOC", lambda: pack.soc_pct, pack.set_soc, 0.0, 100.0, None)],
    )
    register(top["emu_endpoint"], plant.emulation)
    _daq(pack, daq_cfg, top["daq_endpoint"], random.Random(rng.getrandbits(64)), register)
    return plant


def _daq(
    pack: Pack, cfg: Mapping[str, Any], endpoint: str, rng: random.Random, register: Callable[[str, Any], None]
) -> None:
    """The lab's DAQ mainframes on the pack: true cell voltages and sensor-location temperatures.

    They read the pack model, never the BMS: a BMS measurement fault does not reach them.
    """

    def source(kind: str, index: int) -> Callable[[], float]:
        if kind == "cell":
            return Tap(pack.cell_voltages, index)  # a scan reads its cells in one pass
        return lambda: pack.sensor_temp(index)

    for m, wiring in enumerate(pack_wiring(pack.n, pack.p.temp_sensors), start=1):
        spec = DaqSpec(f"{cfg['serial_prefix']}{m}", cfg["noise_v"], cfg["noise_c"])
        sources = {ch: source(kind, i) for ch, (kind, i) in wiring.items()}
        register(endpoint if m == 1 else f"{endpoint}{m}", Daq970a(spec, sources, random.Random(rng.getrandbits(64))))


def _fault_box(plant: Plant, cfg: Mapping[str, Any]) -> FaultBox:
    bms, pack = plant.bms, plant.pack

    def setter(obj: object, attr: str, cast: Callable[[float], Any]) -> Callable[[float], None]:
        return lambda value: setattr(obj, attr, cast(value))

    cells = float(pack.n)
    channels = [
        Channel("OPEN:CELL", lambda: bms.open_wire, setter(bms, "open_wire", round), 0.0, cells, 0.0, True),
        Channel("SHOR:CELL", lambda: bms.short_gnd, setter(bms, "short_gnd", round), 0.0, cells, 0.0, True),
        Channel("ISO:RES", lambda: bms.iso_ro_kohm, setter(bms, "iso_ro_kohm", float), 0.0, cfg["iso_ro_max_kohm"]),
        Channel("SHOR:EXT", lambda: float(plant.ext_short), setter(plant, "ext_short", bool), integer=True),
        # *RST leaves the largest resistor selected: the smallest current should the relay close.
        Channel("SHOR:RES", lambda: plant.short_res_mohm, setter(plant, "short_res_mohm", float), 0.1, 100.0, 100.0),
        Channel("HEAT", lambda: pack.heater_w, setter(pack, "heater_w", float), 0.0, cfg["heater_max_w"]),
    ]
    return FaultBox(f"BENCH-SIM,{FIB_MODEL},{cfg['serial']},{FIB_FIRMWARE}", channels)


class Plant(CanPlant):
    """Supply -> HV link -> BMS main contactors -> pack. Current positive = charging the pack."""

    def __init__(
        self,
        pack: Pack,
        bms: Bms,
        supply: Supply,
        *,
        channel: str,
        tick_s: float = 0.1,
        analyzer: PowerAnalyzer | None = None,
    ) -> None:
        super().__init__(channel=channel, tick_s=tick_s)
        self.pack = pack
        self.bms = bms
        self.supply = supply
        self.analyzer = analyzer
        self.h2_sensor: H2Sensor | None = None
        self.chamber: Chamber | None = None
        self.fault_box: FaultBox | None = None
        self.emulation: FaultBox | None = None
        # External short circuit across the HV terminals (fault box relay and resistor).
        self.ext_short = False
        self.short_res_mohm = 100.0
        # Hydrogen in the test enclosure, %vol: 0 on a BEV bench; raised by fuel-cell sequences.
        self.enclosure_h2_pct = 0.0
        self.link_voltage = 0.0

    def on_frame(self) -> Callable[[can.Message], None]:
        return self.bms.on_frame

    def transmitters(self, bus: can.BusABC) -> list[Cyclic]:
        # Stagger cycle groups so frames of different periods do not share one instant.
        return [
            Cyclic(period, 0.001 * (k + 1), self.bms.sender(bus, names), f"bms-tx-{period:g}s")
            for k, (period, names) in enumerate(sorted(self.bms.schedule.items()))
        ]

    def shutdown_parts(self) -> None:
        self.bms.shutdown()
        if self.h2_sensor is not None:
            self.h2_sensor.close()

    def step(self, dt: float, now: float) -> None:
        """One physics tick: electrical coupling, pack, link voltage, supply readback, BMS."""
        pack = self.pack
        bms = self.bms
        sup = self.supply
        chamber = self.chamber
        if chamber is not None:
            chamber.step(dt)
            pack.ambient_c = chamber.air_c
            pack.cooling = chamber.cooling
        conducting = bms.conducting
        short = self.ext_short
        if short:
            # The supply runs into its current limit on the short; it barely feeds the pack.
            supplied = sup.source_current_set if sup.output else 0.0
            current = -pack.ocv_pack() / (pack.r_pack + self.short_res_mohm * 1e-3) if conducting else 0.0
        else:
            current = self._supply_current(pack.ocv_pack(), pack.r_pack) if conducting and sup.output else 0.0
            supplied = current
        pack.step(current, dt)
        if conducting:
            link = pack.terminal_voltage()
        elif short:
            link = supplied * self.short_res_mohm * 1e-3
        elif sup.output:
            link = sup.voltage_set
        else:
            link = self.link_voltage
            if bms.physical is Contactors.PRECHARGE:
                target, tau = pack.terminal_voltage(), bms.p.precharge_time_s / _PRECHARGE_TAUS
            else:
                target, tau = 0.0, _LINK_BLEED_TAU_S
            link += (target - link) * min(1.0, dt / tau)
        self.link_voltage = link
        bms.link_voltage = link
        sup.measure(link, supplied)
        sup.check_watchdog(now)
        if self.analyzer is not None:
            # Element 1 sits on the supply's DC output: the link voltage and the supply current.
            self.analyzer.measure(dt, [(link, supplied)])
        bms.monitor(now)

    def _supply_current(self, ocv: float, r: float) -> float:
        """CC/CV/CP operating point of the supply against the pack's OCV and resistance."""
        sup = self.supply
        v_set = sup.voltage_set
        if v_set >= ocv:
            i = min(sup.source_current_set, (v_set - ocv) / r)
            p_max = sup.source_power_set
            if i * (ocv + i * r) > p_max:
                # Power-limited: solve I * (OCV + I R) = P for I.
                i = (math.sqrt(ocv * ocv + 4.0 * r * p_max) - ocv) / (2.0 * r)
            return i
        i = min(sup.sink_current_set, (ocv - v_set) / r)
        p_max = sup.sink_power_set
        if i * (ocv - i * r) > p_max:
            disc = ocv * ocv - 4.0 * r * p_max
            i = (ocv - math.sqrt(disc)) / (2.0 * r) if disc > 0.0 else ocv / (2.0 * r)
        return -i
