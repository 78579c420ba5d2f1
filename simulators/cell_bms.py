"""The simulated cell-level BMS bench: a cell emulator (Bloomy ABS units and NTC resistor modules
on one bus) wired to the sense lines and NTC inputs of a BMS's cell monitoring front end.

Entry point ``bms_cells`` (``simulators.cell_bms:build_plant``). The plant owns the emulator bus
(simulators/cell_emulator.py ``build_bus``) and registers it at ``cells_endpoint``, where the
``cell_emulator`` driver reaches it; the BMS (simulators/cell_bms_firmware.py) measures what the
emulator's channels present and answers on its own CAN channel per dbc/cell_bms.dbc.

Everything runs on the event loop's clock; docs/simulators/cbms.md gives the model's numbers and
what each fault mode does.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import can

from simulators.bms_firmware import FrameCodec
from simulators.can_plant import CanPlant, Cyclic
from simulators.cell_bms_firmware import (
    COMMAND_FRAME,
    MAX_CELLS,
    MAX_TEMPS,
    TX_FRAMES,
    CellBms,
    CellBmsDefects,
    CellBmsParams,
)
from simulators.cell_emulator import CELLS_PER_UNIT, RESISTORS_PER_MODULE, CellEmulatorBus, build_bus
from simulators.config_spec import NUM, Spec, check_section
from simulators.dbc import load_ecu_dbc
from simulators.faults import checked_names

PLANT = "bms_cells"
# The over-voltage threshold of cell_ov_threshold_30mv_high lies this much above ov_threshold_v.
OV_THRESHOLD_ERROR_V = 0.030
# Debounce of every cell-level diagnostic with cell_debounce_long.
LONG_DEBOUNCE_S = 1.0
# Channel and relative gain error of cell_gain_error (+0.5 %: about +20 mV at 4 V).
GAIN_ERROR_CELL = 7
GAIN_ERROR = 0.005
# CBMS_CellVoltages group of cell_mux_group_stuck (cell_group 1: cells 5..8).
STUCK_GROUP = 1
# Input and reading of temp_input_dead.
DEAD_TEMP_INPUT = 2
DEAD_TEMP_C = 25.0

CATALOGUE: dict[str, str] = {
    "cell_ov_threshold_30mv_high": f"cell BMS trips on over-voltage {OV_THRESHOLD_ERROR_V * 1000:.0f} mV above ov_threshold_v",
    "cell_debounce_long": f"every cell-level diagnostic of the cell BMS debounces {LONG_DEBOUNCE_S:.1f} s instead of debounce_s",
    "cell_gain_error": f"cell BMS channel {GAIN_ERROR_CELL} measures with a gain error of +{GAIN_ERROR * 100:.1f} % (about +20 mV at 4 V)",
    "cell_mux_group_stuck": (
        f"CBMS_CellVoltages group {STUCK_GROUP} (cells {STUCK_GROUP * 4 + 1}..{STUCK_GROUP * 4 + 4}) keeps sending its first values"
    ),
    "temp_input_dead": (
        f"cell BMS temperature input {DEAD_TEMP_INPUT} reads {DEAD_TEMP_C:.1f} degC whatever its sensor does, never a sensor fault"
    ),
    "balancing_never_stops": "cell BMS keeps bleeding a cell that started until cmd_balancing is OFF",
}


def fault_catalogue() -> dict[str, str]:
    return dict(CATALOGUE)


@dataclass(frozen=True)
class CellBmsFaults:
    cell_ov_threshold_30mv_high: bool = False
    cell_debounce_long: bool = False
    cell_gain_error: bool = False
    cell_mux_group_stuck: bool = False
    temp_input_dead: bool = False
    balancing_never_stops: bool = False

    @classmethod
    def from_names(cls, names: Iterable[str]) -> CellBmsFaults:
        return cls(**checked_names(names, CATALOGUE))

    def firmware(self) -> CellBmsDefects:
        return CellBmsDefects(
            ov_offset_v=OV_THRESHOLD_ERROR_V if self.cell_ov_threshold_30mv_high else 0.0,
            debounce_s=LONG_DEBOUNCE_S if self.cell_debounce_long else None,
            gain_errors=((GAIN_ERROR_CELL, GAIN_ERROR),) if self.cell_gain_error else (),
            stuck_group=STUCK_GROUP if self.cell_mux_group_stuck else None,
            dead_temp_input=(DEAD_TEMP_INPUT, DEAD_TEMP_C) if self.temp_input_dead else None,
            balancing_never_stops=self.balancing_never_stops,
        )


_TOP: dict[str, Spec] = {
    "dbc": ((str,), None, None, None, False),
    "can_channel": ((str,), None, None, None, False),
    "cells_endpoint": ((str,), "cells", None, None, False),
    "emulator": ((dict,), None, None, None, False),
    "cells": ((int,), 16, 16, MAX_CELLS, False),
    "temp_sensors": ((int,), 4, 0, MAX_TEMPS, False),
    "tick_s": (NUM, 0.01, 0, 0.1, True),
    "bms": ((dict,), None, None, None, False),
}
_BMS: dict[str, Spec] = {
    "ov_threshold_v": (NUM, 4.2, 0, 5, True),
    "uv_threshold_v": (NUM, 2.8, 0, 5, True),
    "debounce_s": (NUM, 0.1, 0, 60, False),
    "noise_v": (NUM, 0.0003, 0, 0.01, False),
    "open_wire_v": (NUM, 0.5, 0, 5, True),
    "ntc": ((dict,), None, None, None, False),
    "temp_open_ohm": (NUM, 1.0e6, 0, None, True),
    "temp_short_ohm": (NUM, 100.0, 0, None, True),
    "balance_start_v": (NUM, 0.020, 0, 1, True),
    "balance_stop_v": (NUM, 0.005, 0, 1, False),
    "balance_min_v": (NUM, 3.0, 0, 5, False),
    "bleed_resistance_ohm": (NUM, 33.0, 0, None, True),
}
_NTC: dict[str, Spec] = {
    "r25_ohm": (NUM, 10000.0, 0, None, True),
    "beta": (NUM, 3435.0, 0, None, True),
}


def _check(section: Any, spec: Mapping[str, Spec], where: str) -> dict[str, Any]:
    return check_section(PLANT, section, spec, where)


def _params(config: Mapping[str, Any]) -> tuple[dict[str, Any], CellBmsParams]:
    """The top level of the config with defaults, and the BMS's parameters; ValueError for a bad key."""
    cfg = _check(config, _TOP, "")
    for required in ("dbc", "can_channel"):
        if cfg[required] is None:
            raise ValueError(f"{PLANT} config: {required} is required")
    bms = _check(cfg["bms"] or {}, _BMS, "bms.")
    ntc = _check(bms.pop("ntc") or {}, _NTC, "bms.ntc.")
    if bms["uv_threshold_v"] >= bms["ov_threshold_v"]:
        raise ValueError(f"{PLANT} config: bms.uv_threshold_v must be below bms.ov_threshold_v")
    if bms["open_wire_v"] >= bms["uv_threshold_v"]:
        raise ValueError(f"{PLANT} config: bms.open_wire_v must be below bms.uv_threshold_v")
    if bms["balance_stop_v"] >= bms["balance_start_v"]:
        raise ValueError(f"{PLANT} config: bms.balance_stop_v must be below bms.balance_start_v")
    if bms["temp_short_ohm"] >= bms["temp_open_ohm"]:
        raise ValueError(f"{PLANT} config: bms.temp_short_ohm must be below bms.temp_open_ohm")
    params = CellBmsParams(cells=cfg["cells"], temp_sensors=cfg["temp_sensors"], **bms, **ntc)
    return cfg, params


def build_plant(
    config: Mapping[str, Any], *, faults: Sequence[str], seed: int, register: Callable[[str, Any], None]
) -> CellBmsPlant:
    fault_set = CellBmsFaults.from_names(faults)
    cfg, params = _params(config)
    emulator_cfg = cfg["emulator"] or {}
    if "endpoint" in emulator_cfg:
        raise ValueError(f"{PLANT} config: emulator.endpoint: the bus is registered at cells_endpoint")
    rng = random.Random(seed)
    bus = build_bus(emulator_cfg, random.Random(rng.getrandbits(64)), plant=PLANT, where="emulator.")
    if params.cells > bus.cell_count:
        raise ValueError(
            f"{PLANT} config: cells is {params.cells}, but {len(bus.abs_units)} emulator units"
            f" have only {bus.cell_count} cell channels ({CELLS_PER_UNIT} each)"
        )
    if params.temp_sensors > bus.ntc_count:
        raise ValueError(
            f"{PLANT} config: temp_sensors is {params.temp_sensors}, but {len(bus.resistor_modules)} resistor"
            f" modules have only {bus.ntc_count} channels ({RESISTORS_PER_MODULE} each)"
        )
    db = load_ecu_dbc(cfg["dbc"], PLANT, (*TX_FRAMES, COMMAND_FRAME))
    try:
        for m in db.messages:
            FrameCodec(m)
    except ValueError as exc:
        raise ValueError(f"{PLANT} config: dbc {cfg['dbc']!r}: {exc}") from None
    bms = CellBms(params, fault_set.firmware(), db, bus, random.Random(rng.getrandbits(64)))
    register(cfg["cells_endpoint"], bus)
    return CellBmsPlant(bms, bus, channel=cfg["can_channel"], tick_s=cfg["tick_s"])


class CellBmsPlant(CanPlant):
    def __init__(self, bms: CellBms, emulator: CellEmulatorBus, *, channel: str, tick_s: float) -> None:
        super().__init__(channel=channel, tick_s=tick_s)
        self.bms = bms
        self.emulator = emulator

    def on_frame(self) -> Callable[[can.Message], None]:
        return self.bms.on_frame

    def transmitters(self, bus: can.BusABC) -> list[Cyclic]:
        # After the first measurement (one tick), each frame on its own phase so that the frames
        # of one cycle never share an instant.
        return [
            Cyclic(period, self.tick_s + 0.001 * (k + 1), self.bms.sender(bus, name), f"cbms-tx-{name}")
            for k, (period, name) in enumerate(self.bms.schedule)
        ]

    def step(self, dt: float, now: float) -> None:
        self.bms.step(now)

    def shutdown_parts(self) -> None:
        self.bms.shutdown()
