"""The simulated cell-level BMS (plant ``bms_cells``) on its cell emulator, in virtual time.

Most tests drive the station's own two devices with their real drivers (``cell_emulator`` on the
emulator bus the plant registers, ``can_dbc`` on the BMS's CAN), as the configs of
stations/sim-cells.yaml have them, and read what the BMS reports as the bench reads it: samples
with their frame timestamps. The end of the file runs sequences through ``bench run`` on the
station files themselves.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import can
import pytest

from bench.device import fault_catalogue, load_plant_builder
from drivers.can_dbc import CanDbcDriver
from drivers.cell_emulator import CellEmulatorDriver
from drivers.ntc import ntc_model
from simulators.cell_bms import (
    CATALOGUE,
    DEAD_TEMP_C,
    GAIN_ERROR,
    GAIN_ERROR_CELL,
    LONG_DEBOUNCE_S,
    OV_THRESHOLD_ERROR_V,
    CellBmsPlant,
    build_plant,
)
from simulators.cell_bms_firmware import KIND_OPEN, KIND_SHORT, TEMP_HIGH_C, TEMP_LOW_C, ntc_celsius
from tests.can_link import fresh_channel
from tests.conftest import ROOT, SIM_STATION, bench
from tests.expected_protocol import Harness, run_virtual
from tests.served import dump_yaml, load_yaml

STATION = ROOT / "stations" / "sim-cells.yaml"
STATIONS = ROOT / "stations"
DBC = str(ROOT / "dbc" / "cell_bms.dbc")
CONFIG: dict[str, Any] = next(s for s in load_yaml(STATION)["simulators"] if s["kind"] == "bms_cells")["config"]
BMS = CONFIG["bms"]
DEBOUNCE = BMS["debounce_s"]
TICK = CONFIG["tick_s"]
STATUS_CYCLE = 0.1
NOMINAL_V = 3.7
# A nominal channel reads within 2 mV of the emulator's output (docs/simulators/cbms.md): offset,
# gain at 4.2 V, half a step and more than three standard deviations of the noise.
READING_TOLERANCE_V = 0.002 + 3 * BMS["noise_v"]


@dataclass
class Rig:
    """The sim-cells station in process: the plant and the two real drivers on one virtual clock."""

    plant: CellBmsPlant
    cells: CellEmulatorDriver
    cbms: CanDbcDriver
    harness: Harness
    frames: list[can.Message] = field(default_factory=list)

    def last(self, name: str) -> float:
        return self.harness.last(name)

    def first(self, name: str, value: float, after: float) -> float | None:
        """The frame time of the first sample of ``name`` equal to ``value`` at or after ``after``."""
        return next((t for n, v, t in self.harness.samples if n == name and v == value and t >= after), None)

    async def clear(self) -> None:
        """A rising edge of cmd_clear_faults, then back to NO."""
        await self.cbms.set({"cmd_clear_faults": 1})
        await asyncio.sleep(0.25)
        await self.cbms.set({"cmd_clear_faults": 0})
        await asyncio.sleep(0.25)

    async def power_up(self, volts: float = NOMINAL_V) -> None:
        """Every cell on at ``volts`` with 1 A limits, then the open lines of the start cleared."""
        await self.cells.set({"all_current_limit": 1.0, "all_voltage_set": volts, "all_output": 1})
        await asyncio.sleep(0.3)
        await self.clear()


def rig_run(
    body: Callable[[Rig], Awaitable[None]],
    faults: Sequence[str] = (),
    bms: dict[str, Any] | None = None,
    seed: int = 1,
) -> None:
    """``body`` on a fresh rig built from stations/sim-cells.yaml (on a CAN channel of its own)."""
    station = load_yaml(STATION)
    channel = fresh_channel("cbms")
    config = {**CONFIG, "dbc": DBC, "can_channel": channel, "bms": {**BMS, **(bms or {})}}
    cbms_config = station["devices"]["cbms"]["config"]
    cbms_config["can"]["channel"] = channel
    cells = CellEmulatorDriver("cells", station["devices"]["cells"]["config"], STATIONS)
    cbms = CanDbcDriver("cbms", cbms_config, STATIONS)

    async def main() -> None:
        inproc: dict[str, Any] = {}
        plant = build_plant(config, faults=faults, seed=seed, register=inproc.__setitem__)
        harness = Harness()
        rig = Rig(plant, cells, cbms, harness)
        listener: Any = can.Bus(interface="inproc", channel=channel)
        listener.add_listener(rig.frames.append)
        await plant.start()
        ctx = harness.context(asyncio.get_running_loop(), inproc)
        await cells.connect(ctx)
        await cbms.connect(ctx)
        try:
            await body(rig)
        finally:
            await cbms.close()
            await cells.close()
            await plant.stop()
            listener.shutdown()
        assert harness.faults == []

    run_virtual(main)


def now() -> float:
    return asyncio.get_running_loop().time()


# -- measurement -----------------------------------------------------------------------------------


def test_each_channel_reads_its_emulator_output_within_the_channel_errors() -> None:
    setpoints = {k: round(3.0 + 0.07 * k, 4) for k in range(1, 17)}

    async def body(rig: Rig) -> None:
        await rig.power_up()
        await rig.cells.set({rig.cells.cell_signal(k, "voltage_set"): v for k, v in setpoints.items()})
        await asyncio.sleep(0.5)
        for k, v in setpoints.items():
            reading = rig.last(f"cbms.cell_v_{k:03d}")
            assert reading == pytest.approx(v, abs=READING_TOLERANCE_V), k
            assert round(reading * 1000) == pytest.approx(reading * 1000, abs=1e-6)  # whole millivolts
        # Each channel has its own gain and offset: not every channel reads alike.
        assert len({round(rig.last(f"cbms.cell_v_{k:03d}") - v, 4) for k, v in setpoints.items()}) > 1

    rig_run(body)


def test_the_bms_converts_the_ntc_with_its_own_model_within_its_channel_error() -> None:
    station_ntc = ntc_model(load_yaml(STATION)["devices"]["cells"]["config"]["ntc"])

    async def body(rig: Rig) -> None:
        for i, celsius in enumerate((-20.0, 25.0, 60.0, 100.0), 1):
            await rig.cells.set({f"r01c{i}_temperature": celsius})
        await asyncio.sleep(0.5)
        for i, celsius in enumerate((-20.0, 25.0, 60.0, 100.0), 1):
            assert rig.last(f"cbms.temp_{i:02d}") == pytest.approx(celsius, abs=0.2 + 0.05 + 1e-6), i
        # Its conversion and the bench's model are two codes for the same curve.
        for celsius in (-40.0, 0.0, 85.0, 125.0):
            ohms = station_ntc.resistance(celsius)
            assert ntc_celsius(ohms, BMS["ntc"]["r25_ohm"], BMS["ntc"]["beta"]) == pytest.approx(celsius, abs=1e-9)

    rig_run(body)


def test_every_group_of_every_frame_each_cycle() -> None:
    async def body(rig: Rig) -> None:
        await asyncio.sleep(1.0)
        start = now()
        rig.frames.clear()
        await asyncio.sleep(1.0)
        by_id: dict[int, list[int]] = {}
        for f in rig.frames:
            by_id.setdefault(f.arbitration_id, []).append(f.data[0])
        # 16 cells: 4 groups every 100 ms; 4 inputs: 2 groups every 200 ms; one balancing group.
        assert sorted(set(by_id[0x310])) == [0, 1, 2, 3] and len(by_id[0x310]) == 40
        assert sorted(set(by_id[0x320])) == [0, 1] and len(by_id[0x320]) == 10
        assert by_id[0x330] == [0] * 5
        assert len(by_id[0x300]) == 10
        alive = [f.data[6] & 0x0F for f in rig.frames if f.arbitration_id == 0x300]
        assert all(b == (a + 1) % 16 for a, b in itertools.pairwise(alive))
        assert all(f.timestamp >= start for f in rig.frames)

    rig_run(body)


# -- over- and under-voltage ----------------------------------------------------------------------


def test_ov_latches_only_after_the_debounce_and_stays_until_a_clear_finds_it_gone() -> None:
    async def body(rig: Rig) -> None:
        await rig.power_up()
        assert rig.last("cbms.fault_cell_ov") == 0
        # A pulse shorter than the debounce does not latch.
        await rig.cells.set({"m01c3_voltage_set": 4.25})
        await asyncio.sleep(DEBOUNCE - 2 * TICK)
        await rig.cells.set({"m01c3_voltage_set": NOMINAL_V})
        await asyncio.sleep(0.5)
        assert not rig.plant.bms.fault_ov and rig.last("cbms.fault_cell_ov") == 0

        await rig.cells.set({"m01c3_voltage_set": 4.25})
        t0 = now()
        await asyncio.sleep(DEBOUNCE - 2 * TICK)
        assert not rig.plant.bms.fault_ov  # still debouncing
        await asyncio.sleep(4 * TICK)
        assert rig.plant.bms.fault_ov
        await asyncio.sleep(0.3)
        seen = rig.first("cbms.fault_cell_ov", 1, t0)
        assert seen is not None
        # Debounce, then at most one tick and one CBMS_Status cycle until the bench sees it.
        assert DEBOUNCE <= seen - t0 <= DEBOUNCE + TICK + STATUS_CYCLE + 1e-6

        # A clear while the cell is still high leaves it latched.
        await rig.clear()
        assert rig.last("cbms.fault_cell_ov") == 1
        # The cause gone, it stays latched until the next clear.
        await rig.cells.set({"m01c3_voltage_set": NOMINAL_V})
        await asyncio.sleep(1.0)
        assert rig.last("cbms.fault_cell_ov") == 1
        await rig.clear()
        assert rig.last("cbms.fault_cell_ov") == 0

    rig_run(body)


def test_the_ov_threshold_is_on_the_reading() -> None:
    """Just under the threshold nothing trips; a few millivolts over it, the fault latches."""

    async def body(rig: Rig) -> None:
        await rig.power_up()
        await rig.cells.set({"m02c2_voltage_set": BMS["ov_threshold_v"] - 0.004})
        await asyncio.sleep(1.0)
        assert rig.last("cbms.fault_cell_ov") == 0
        await rig.cells.set({"m02c2_voltage_set": BMS["ov_threshold_v"] + 0.004})
        await asyncio.sleep(0.5)
        assert rig.last("cbms.fault_cell_ov") == 1
        assert rig.last("cbms.cell_v_010") > BMS["ov_threshold_v"]

    rig_run(body)


def test_uv_trips_on_a_low_cell_but_not_on_an_open_line() -> None:
    async def body(rig: Rig) -> None:
        await rig.power_up()
        await rig.cells.set({"m01c2_fault": 1})  # the fault relay opens cell 2's sense line
        await asyncio.sleep(0.5)
        assert rig.last("cbms.cell_v_002") == 0.0
        assert rig.last("cbms.fault_open_wire") == 1 and rig.last("cbms.open_wire_cell") == 2
        assert rig.last("cbms.fault_cell_uv") == 0  # an open line is no under-voltage
        await rig.cells.set({"m02c4_voltage_set": BMS["uv_threshold_v"] - 0.05})
        t0 = now()
        await asyncio.sleep(0.5)
        seen = rig.first("cbms.fault_cell_uv", 1, t0)
        assert seen is not None and DEBOUNCE <= seen - t0 <= DEBOUNCE + TICK + STATUS_CYCLE + 1e-6

    rig_run(body)


# -- open sense line ------------------------------------------------------------------------------


def test_open_wire_names_the_cell_and_clears_when_the_line_is_back() -> None:
    async def body(rig: Rig) -> None:
        await rig.power_up()
        assert rig.last("cbms.fault_open_wire") == 0 and rig.last("cbms.open_wire_cell") == 0
        await rig.cells.set({"m02c5_fault": 1})  # cell 13
        t0 = now()
        await asyncio.sleep(0.5)
        seen = rig.first("cbms.fault_open_wire", 1, t0)
        assert seen is not None and DEBOUNCE <= seen - t0 <= DEBOUNCE + TICK + STATUS_CYCLE + 1e-6
        assert rig.last("cbms.open_wire_cell") == 13
        # A second open line does not move the cell named until a clear.
        await rig.cells.set({"m01c1_fault": 1})
        await asyncio.sleep(0.5)
        assert rig.last("cbms.open_wire_cell") == 13
        await rig.cells.set({"all_fault": 0})
        await asyncio.sleep(0.3)
        assert rig.last("cbms.fault_open_wire") == 1  # latched
        await rig.clear()
        assert rig.last("cbms.fault_open_wire") == 0 and rig.last("cbms.open_wire_cell") == 0

    rig_run(body)


def test_with_the_outputs_off_every_line_is_open_from_the_start() -> None:
    async def body(rig: Rig) -> None:
        await asyncio.sleep(0.5)
        assert rig.last("cbms.fault_open_wire") == 1 and rig.last("cbms.open_wire_cell") == 1
        await rig.power_up()
        assert rig.last("cbms.fault_open_wire") == 0

    rig_run(body)


# -- NTC inputs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("fault", "kind", "reads"), [(1, KIND_OPEN, TEMP_LOW_C), (2, KIND_SHORT, TEMP_HIGH_C)])
def test_an_open_or_shorted_ntc_is_a_sensor_fault_of_its_kind(fault: int, kind: int, reads: float) -> None:
    async def body(rig: Rig) -> None:
        await rig.power_up()
        assert rig.last("cbms.fault_temp_sensor") == 0
        await rig.cells.set({"r01c3_fault": fault})
        t0 = now()
        await asyncio.sleep(0.5)
        seen = rig.first("cbms.fault_temp_sensor", 1, t0)
        assert seen is not None and DEBOUNCE <= seen - t0 <= DEBOUNCE + TICK + STATUS_CYCLE + 1e-6
        assert (rig.last("cbms.temp_fault_sensor"), rig.last("cbms.temp_fault_kind")) == (3, kind)
        assert rig.last("cbms.temp_03") == reads
        await rig.cells.set({"r01c3_fault": 0})
        await rig.clear()
        assert rig.last("cbms.fault_temp_sensor") == 0
        assert (rig.last("cbms.temp_fault_sensor"), rig.last("cbms.temp_fault_kind")) == (0, 0)

    rig_run(body)


# -- balancing ------------------------------------------------------------------------------------


def test_balancing_starts_and_stops_by_the_rule_and_the_emulator_measures_the_bleed() -> None:
    async def body(rig: Rig) -> None:
        await rig.power_up()
        high = NOMINAL_V + 0.050
        # Cell 5 50 mV above the rest, cell 6 only 10 mV: only cell 5 is past the start difference.
        await rig.cells.set({"m01c5_voltage_set": high, "m01c6_voltage_set": NOMINAL_V + 0.010})
        await asyncio.sleep(0.5)
        assert rig.last("cbms.balancing_count") == 0  # not allowed yet
        assert rig.last("cells.m01c5_current") == pytest.approx(0.0, abs=0.001)
        await rig.cbms.set({"cmd_balancing": 1})
        await asyncio.sleep(0.5)
        assert rig.last("cbms.balancing_enabled") == 1
        assert (rig.last("cbms.bal_005"), rig.last("cbms.bal_006"), rig.last("cbms.balancing_count")) == (1, 0, 1)
        bleed = high / BMS["bleed_resistance_ohm"]
        assert rig.last("cells.m01c5_current") == pytest.approx(bleed, abs=0.001)
        assert rig.last("cells.m01c6_current") == pytest.approx(0.0, abs=0.001)
        # Between the stop and the start difference it keeps bleeding (hysteresis).
        await rig.cells.set({"m01c5_voltage_set": NOMINAL_V + 0.012})
        await asyncio.sleep(0.5)
        assert rig.last("cbms.bal_005") == 1
        # Within the stop difference of the lowest cell it stops, and no current flows.
        await rig.cells.set({"m01c5_voltage_set": NOMINAL_V})
        await asyncio.sleep(0.5)
        assert (rig.last("cbms.bal_005"), rig.last("cbms.balancing_count")) == (0, 0)
        assert rig.last("cells.m01c5_current") == pytest.approx(0.0, abs=0.001)
        # cmd_balancing OFF stops a bleed at once.
        await rig.cells.set({"m02c8_voltage_set": high})
        await asyncio.sleep(0.5)
        assert rig.last("cbms.bal_016") == 1
        await rig.cbms.set({"cmd_balancing": 0})
        await asyncio.sleep(0.5)
        assert (rig.last("cbms.bal_016"), rig.last("cbms.balancing_enabled")) == (0, 0)
        assert rig.last("cells.m02c8_current") == pytest.approx(0.0, abs=0.001)

    rig_run(body)


def test_no_cell_below_the_minimum_is_bled() -> None:
    low = BMS["balance_min_v"] - 0.1

    async def body(rig: Rig) -> None:
        await rig.power_up(low)
        await rig.cbms.set({"cmd_balancing": 1})
        await rig.cells.set({"m01c1_voltage_set": low + 0.05})
        await asyncio.sleep(0.5)
        assert rig.last("cbms.balancing_count") == 0

    rig_run(body)


# -- fault modes ----------------------------------------------------------------------------------


def _ov_at(volts: float, faults: Sequence[str] = (), hold: float = 0.5) -> float:
    """fault_cell_ov after cell 1 held ``volts`` for ``hold`` s."""
    out: list[float] = []

    async def body(rig: Rig) -> None:
        await rig.power_up()
        await rig.cells.set({"m01c1_voltage_set": volts})
        await asyncio.sleep(hold)
        out.append(rig.last("cbms.fault_cell_ov"))

    rig_run(body, faults)
    return out[0]


def test_fault_ov_threshold_30mv_high() -> None:
    threshold = BMS["ov_threshold_v"]
    between = threshold + OV_THRESHOLD_ERROR_V / 2
    assert _ov_at(between) == 1
    assert _ov_at(between, ["cell_ov_threshold_30mv_high"]) == 0
    assert _ov_at(threshold + OV_THRESHOLD_ERROR_V + 0.005, ["cell_ov_threshold_30mv_high"]) == 1


def test_fault_debounce_long() -> None:
    hold = (DEBOUNCE + LONG_DEBOUNCE_S) / 2
    assert _ov_at(4.3, hold=hold) == 1
    assert _ov_at(4.3, ["cell_debounce_long"], hold=hold) == 0
    assert _ov_at(4.3, ["cell_debounce_long"], hold=LONG_DEBOUNCE_S + TICK + STATUS_CYCLE + 0.05) == 1

    async def open_line(rig: Rig) -> None:
        await rig.cells.set({"all_current_limit": 1.0, "all_voltage_set": NOMINAL_V, "all_output": 1})
        await asyncio.sleep(LONG_DEBOUNCE_S + 0.5)
        await rig.clear()
        await rig.cells.set({"m01c4_fault": 1, "r01c2_fault": 1})
        await asyncio.sleep(hold)
        assert rig.last("cbms.fault_open_wire") == 0 and rig.last("cbms.fault_temp_sensor") == 0
        await asyncio.sleep(LONG_DEBOUNCE_S)
        assert rig.last("cbms.fault_open_wire") == 1 and rig.last("cbms.fault_temp_sensor") == 1

    rig_run(open_line, ["cell_debounce_long"])


@pytest.mark.parametrize("faults", [(), ("cell_gain_error",)])
def test_fault_gain_error_on_its_channel_only(faults: tuple[str, ...]) -> None:
    volts = 4.0

    async def body(rig: Rig) -> None:
        await rig.power_up(volts)
        await asyncio.sleep(0.5)
        for k in range(1, 17):
            error = GAIN_ERROR * volts if faults and k == GAIN_ERROR_CELL else 0.0
            assert rig.last(f"cbms.cell_v_{k:03d}") == pytest.approx(volts + error, abs=READING_TOLERANCE_V), k

    rig_run(body, faults)


def test_fault_mux_group_stuck() -> None:
    async def body(rig: Rig) -> None:
        first = [rig.last(f"cbms.cell_v_{k:03d}") for k in range(5, 9)]
        await rig.power_up()
        await rig.cells.set({"all_voltage_set": 3.9})
        await asyncio.sleep(0.5)
        # Cells 5..8 keep what the group carried first: the outputs were still off then.
        assert [rig.last(f"cbms.cell_v_{k:03d}") for k in range(5, 9)] == first
        assert all(v < BMS["open_wire_v"] for v in first)
        for k in (*range(1, 5), *range(9, 17)):
            assert rig.last(f"cbms.cell_v_{k:03d}") == pytest.approx(3.9, abs=READING_TOLERANCE_V), k
        assert rig.plant.bms.readings[5] == pytest.approx(3.9, abs=READING_TOLERANCE_V)  # it does measure

    rig_run(body, ["cell_mux_group_stuck"])


def test_fault_temp_input_dead() -> None:
    async def body(rig: Rig) -> None:
        await rig.power_up()
        await rig.cells.set({"r01c2_temperature": 60.0, "r01c1_temperature": 60.0})
        await asyncio.sleep(0.5)
        assert rig.last("cbms.temp_02") == DEAD_TEMP_C
        assert rig.last("cbms.temp_01") == pytest.approx(60.0, abs=0.3)
        await rig.cells.set({"r01c2_fault": 1})
        await asyncio.sleep(0.5)
        assert rig.last("cbms.fault_temp_sensor") == 0 and rig.last("cbms.temp_02") == DEAD_TEMP_C
        await rig.cells.set({"r01c1_fault": 2})  # the other inputs still diagnose
        await asyncio.sleep(0.5)
        assert (rig.last("cbms.temp_fault_sensor"), rig.last("cbms.temp_fault_kind")) == (1, KIND_SHORT)

    rig_run(body, ["temp_input_dead"])


@pytest.mark.parametrize("faults", [(), ("balancing_never_stops",)])
def test_fault_balancing_never_stops(faults: tuple[str, ...]) -> None:
    async def body(rig: Rig) -> None:
        await rig.power_up()
        await rig.cbms.set({"cmd_balancing": 1})
        await rig.cells.set({"m01c7_voltage_set": NOMINAL_V + 0.05})
        await asyncio.sleep(0.5)
        assert rig.last("cbms.bal_007") == 1
        await rig.cells.set({"m01c7_voltage_set": NOMINAL_V})
        await asyncio.sleep(1.0)
        assert rig.last("cbms.bal_007") == (1 if faults else 0)
        current = NOMINAL_V / BMS["bleed_resistance_ohm"] if faults else 0.0
        assert rig.last("cells.m01c7_current") == pytest.approx(current, abs=0.001)
        await rig.cbms.set({"cmd_balancing": 0})
        await asyncio.sleep(0.5)
        assert rig.last("cbms.bal_007") == 0 and rig.last("cells.m01c7_current") == pytest.approx(0.0, abs=0.001)

    rig_run(body, faults)


def test_the_catalogue_is_the_plants_and_a_fault_of_another_plant_is_refused() -> None:
    assert fault_catalogue("bms_cells") == CATALOGUE
    assert set(CATALOGUE) == {
        "cell_ov_threshold_30mv_high",
        "cell_debounce_long",
        "cell_gain_error",
        "cell_mux_group_stuck",
        "temp_input_dead",
        "balancing_never_stops",
    }
    with pytest.raises(ValueError, match="unknown fault 'slow_reaction'"):
        build_plant({**CONFIG, "dbc": DBC}, faults=["slow_reaction"], seed=1, register=lambda n, o: None)


# -- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cells": 8}, "bms_cells config: cells must be >= 16 and <= 192, got 8"),
        ({"cells": 24}, "bms_cells config: cells is 24, but 2 emulator units have only 16 cell channels (8 each)"),
        ({"temp_sensors": 9}, "bms_cells config: temp_sensors is 9, but 1 resistor modules have only 8 channels"),
        ({"emulator": {"units": 0}}, "bms_cells config: emulator.units must be >= 1 and <= 24, got 0"),
        (
            {"emulator": {"endpoint": "x"}},
            "bms_cells config: emulator.endpoint: the bus is registered at cells_endpoint",
        ),
        ({"bms": {"ov_threshold_v": "4.2 V"}}, "bms_cells config: bms.ov_threshold_v must be a number, got '4.2 V'"),
        ({"bms": {"ov_treshold_v": 4.2}}, "bms_cells config: unknown key 'bms.ov_treshold_v'"),
        ({"bms": {"uv_threshold_v": 4.3}}, "bms_cells config: bms.uv_threshold_v must be below bms.ov_threshold_v"),
        ({"bms": {"balance_stop_v": 0.03}}, "bms_cells config: bms.balance_stop_v must be below bms.balance_start_v"),
        ({"bms": {"ntc": {"beta": 0}}}, "bms_cells config: bms.ntc.beta must be > 0, got 0"),
        ({"dbc": str(ROOT / "dbc" / "fccu.dbc")}, "has no message CBMS_Status"),
        ({"can_channel": None}, "bms_cells config: can_channel is required"),
    ],
)
def test_a_bad_config_is_one_line(change: dict[str, Any], message: str) -> None:
    config = {**CONFIG, "dbc": DBC, **change}
    with pytest.raises(ValueError) as info:
        load_plant_builder("bms_cells")(config, faults=[], seed=1, register=lambda n, o: None)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_the_bus_is_registered_at_the_endpoint_and_the_per_channel_errors_come_from_the_seed() -> None:
    registered: dict[str, Any] = {}
    plant = build_plant(
        {**CONFIG, "dbc": DBC, "cells_endpoint": "cellbus"}, faults=[], seed=7, register=registered.__setitem__
    )
    assert registered == {"cellbus": plant.emulator}
    assert (plant.emulator.cell_count, plant.emulator.ntc_count) == (16, 8)
    again = build_plant({**CONFIG, "dbc": DBC}, faults=[], seed=7, register=lambda n, o: None)
    other = build_plant({**CONFIG, "dbc": DBC}, faults=[], seed=8, register=lambda n, o: None)
    assert plant.bms.gain == again.bms.gain and plant.bms.gain != other.bms.gain
    assert all(abs(g - 1.0) <= 100e-6 for g in plant.bms.gain)
    assert all(abs(o) <= 0.5e-3 for o in plant.bms.offset)
    assert all(abs(e) <= 0.2 for e in plant.bms.temp_error)


# -- the station files and the CLI ------------------------------------------------------------------


def _cell_parts(path: Path) -> dict[str, Any]:
    station = load_yaml(path)
    return {
        "devices": {k: station["devices"][k] for k in ("cells", "cbms")},
        "equipment": [e for e in station["equipment"] if e["device"] in ("cells", "cbms")],
        "simulator": [s for s in station["simulators"] if s["kind"] == "bms_cells"],
        "signal_sources": {k: v for k, v in station["signal_sources"].items() if k.split(".")[0] in ("cells", "cbms")},
    }


def test_sim_and_sim_cells_have_the_same_cell_bench() -> None:
    cells = _cell_parts(STATION)
    assert cells == _cell_parts(SIM_STATION)
    assert len(cells["equipment"]) == 3 and len(cells["simulator"]) == 1
    # sim-cells.yaml is that bench alone: a run there starts nothing else.
    station = load_yaml(STATION)
    assert set(station["devices"]) == {"cells", "cbms"} and len(station["simulators"]) == 1
    assert station["id"] == "sim-cells" and station["virtual_time"] is True


def test_the_register_matches_what_the_emulator_answers() -> None:
    bus = build_plant({**CONFIG, "dbc": DBC}, faults=[], seed=1, register=lambda n, o: None).emulator
    entries = _cell_parts(STATION)["equipment"]
    for entry, unit in zip(entries, [1, 2, 3], strict=True):
        maker, model, serial, firmware = (bus.scpi(f"@{unit} *IDN?") or "").split(",")
        assert (entry["maker"], entry["model"], entry["serial"], str(entry["firmware"])) == (
            maker,
            model,
            serial,
            firmware,
        )


def test_bench_faults_lists_the_six() -> None:
    for station, tag in ((STATION, ""), (SIM_STATION, " [bms_cells]")):
        r = bench("faults", "--station", station)
        assert r.rc == 0, r.err
        lines = {line.split()[0]: line for line in r.out.splitlines() if line.strip()}
        for name, doc in CATALOGUE.items():
            assert lines[name].split(None, 1)[1] == doc + tag, name
    own = bench("faults", "--station", STATION)
    assert len(own.out.strip().splitlines()) == len(CATALOGUE)


SEQUENCE = """\
id: TEST-CELL-BMS
title: cell BMS reads, trips and bleeds
version: 1.0.0
basis: {standard: test, clause: cell-level BMS}
requires: [cells, cbms]
steps:
  - set: {cells.all_current_limit: 1 A, cells.all_voltage_set: 3.7 V, cells.all_output: ON}
  - wait: 0.3 s
  - set: {cbms.cmd_clear_faults: YES}
  - wait: 0.2 s
  - set: {cbms.cmd_clear_faults: NO}
  - check: cbms.fault_open_wire == OK and cbms.fault_cell_ov == OK
  - measure: {name: cell_3, signal: cbms.cell_v_003, min: 3.69 V, max: 3.71 V}
  - measure: {name: emulator_3, signal: cells.m01c3_voltage, min: 3.69 V, max: 3.71 V}
  - set: {cells.m01c3_voltage_set: 4.22 V}
    as: t_high
  - wait_until: cbms.fault_cell_ov == ACTIVE
    timeout: 1 s
    as: t_trip
  - measure: {name: ov_reaction, expr: "@t_trip - @t_high", max: 300 ms}
cleanup:
  - set: {cells.all_output: OFF, cbms.cmd_balancing: OFF}
"""


def test_a_sequence_on_the_sim_cells_station(tmp_path: Path, reports: Path) -> None:
    sequence = tmp_path / "cells.yaml"
    sequence.write_text(SEQUENCE)
    run = bench("run", sequence, "--station", STATION, "--reports", reports)
    assert run.rc == 0, run.out + run.err
    result = run.result()
    assert result["verdict"] == "PASS"
    m = {x["name"]: x for x in result["measurements"]}
    # The BMS's reading: U from its signal_sources entry (5 mV accuracy, 1 mV resolution).
    u = 2 * math.sqrt((0.005 / math.sqrt(3)) ** 2 + (0.001 / math.sqrt(12)) ** 2)
    assert m["cell_3"]["uncertainty"] == pytest.approx(u, rel=0.05)
    # The emulator's read-back: U from the register's pattern entry of SIM-ABS-01.
    assert any("SIM-ABS-01 accuracy" in line for line in m["emulator_3"]["uncertainty_budget"])
    assert DEBOUNCE <= m["ov_reaction"]["value"] <= DEBOUNCE + TICK + STATUS_CYCLE + 1e-6

    faulty = bench(
        "run", sequence, "--station", STATION, "--reports", reports, "--fault", "cell_ov_threshold_30mv_high"
    )
    assert faulty.rc == 1, faulty.out + faulty.err
    assert faulty.result()["verdict"] == "FAIL"


def test_a_bad_plant_config_in_a_station_is_one_line(tmp_path: Path, reports: Path) -> None:
    station = load_yaml(STATION)
    station["simulators"][0]["config"]["bms"]["debounce_s"] = -1
    for entry in [station["devices"]["cbms"], station["simulators"][0]]:
        entry["config"]["dbc"] = DBC
    path = dump_yaml(station, tmp_path / "sim-cells.yaml")
    sequence = tmp_path / "cells.yaml"
    sequence.write_text(SEQUENCE)
    run = bench("run", sequence, "--station", path, "--reports", reports)
    assert run.rc == 3, run.out + run.err  # ERROR: the bench could not start its plant
    reason = "ERROR simulator bms_cells: bms_cells config: bms.debounce_s must be >= 0 and <= 60, got -1"
    assert reason in run.out.splitlines(), run.out
    assert "Traceback" not in run.out + run.err
