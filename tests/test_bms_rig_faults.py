"""The BMS rig with its fault-injection box and climate chamber, in virtual time: every injected
fault must reach the BMS the way the physics says, and every BMS fault mode must defeat the
protection it names (otherwise the tests that should catch it prove nothing)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from simulators.chamber import Chamber, ChamberSpec
from simulators.fault_box import Channel, FaultBox
from simulators.plant import build_plant
from tests.conftest import ROOT, SIM_STATION, bench
from tests.test_sim_bms import DBC, Station, charge, close_contactors, discharge, scenario, status_at

DETECTION_S = 0.2
REACTION_S = 0.1
# The BMS samples once per physics tick and reports once per BMS_Status cycle.
TICK_S = FRAME_S = 0.1
ISO_CYCLE_S = 1.0
# 192 NMC cells at 4.20 V: the maximum working voltage the Ohm/V thresholds refer to.
MAX_WORKING_V = 192 * 4.20
ISO_BMS = {"iso_warning_ohm_per_v": 100, "iso_error_ohm_per_v": 50}
# A pack that reaches over-temperature with its coolant loop off in an 80 degC chamber in
# about 26 simulated minutes, discharged by the station's 60 kW supply (~78 A): the thermal
# mass of a REESS subsystem rather than the whole pack, forced chamber air on it (100 W/K) and
# a liquid coolant loop (200 W/K) that holds it below 50 degC while it runs.
HOT_RIG_THERMAL: dict[str, Any] = {
    "thermal_mass_j_per_k": 150_000,
    "thermal_resistance_k_per_w": 0.01,
    "cooling_k_per_w": 0.005,
}
HOT_RIG: dict[str, Any] = {
    **HOT_RIG_THERMAL,
    "initial_soc_pct": 95,
    "supply": {"power_max_w": 60000, "current_max_a": 160},
}


def fib(st: Station, line: str) -> str | None:
    """Send ``line`` to the fault box; its replies, with the error queue proven empty after it."""
    box = st.plant.fault_box
    assert box is not None
    *replies, error = str(box.scpi(f"{line};SYST:ERR?")).split(";")
    assert error == '0,"No error"', f"{line}: {error}"
    return ";".join(replies) or None


def chamber(st: Station, line: str) -> None:
    ch = st.plant.chamber
    assert ch is not None
    assert ch.scpi(f"{line};SYST:ERR?") == '0,"No error"', line


def now() -> float:
    return asyncio.get_running_loop().time()


def first_open(st: Station, after: float) -> float:
    t = st.bench.first("BMS_Status", lambda v: v["contactors"] == "OPEN", after=after)
    assert t is not None, "contactors never reported OPEN"
    return t


async def inject(st: Station, *lines: str, wait: float = 2.0) -> tuple[float, dict[str, Any]]:
    """Send ``lines`` to the fault box; the injection time and BMS_Status ``wait`` seconds after it."""
    for line in lines:
        fib(st, line)
    t_inj = now()
    await asyncio.sleep(wait)
    return t_inj, st.bench.latest("BMS_Status")


async def inject_and_trip(st: Station, *lines: str) -> tuple[float, dict[str, Any]]:
    """:func:`inject`, and the contactors must have reported OPEN within the detection and reaction budget."""
    t_inj, status = await inject(st, *lines)
    t_open = first_open(st, t_inj)
    assert t_open - t_inj <= TICK_S + DETECTION_S + REACTION_S + FRAME_S + 1e-6
    return t_inj, status


# -- open wire / short to chassis on a cell sense line (ISO 26262 fault injection) ------------------


def test_open_sense_line_latches_fault_and_opens_contactors_in_time() -> None:
    async def body(st: Station) -> None:
        await close_contactors(st)
        charge(st, amps=20)
        await asyncio.sleep(1.0)
        t_inj, status = await inject_and_trip(st, "OPEN:CELL 17")
        assert status["fault_sense_line"] == "ACTIVE" and status["bms_state"] == "FAULT"
        # the broken line reads 0 V, and that is no cell under-voltage
        assert status["fault_cell_uv"] == "OK"
        stats = st.bench.latest("BMS_CellStats")
        assert stats["cell_v_min"] == 0.0 and stats["cell_v_min_id"] == 17
        await asyncio.sleep(6.4)  # one sweep of BMS_CellVoltages
        assert [v["cell_v_017"] for t, v in st.bench.of("BMS_CellVoltages") if t > t_inj and "cell_v_017" in v] == [0.0]
        # latched while the line is open; clears once it is repaired
        st.bench.clear = 1
        await asyncio.sleep(0.5)
        assert st.bench.latest("BMS_Status")["fault_sense_line"] == "ACTIVE"
        st.bench.clear = 0
        fib(st, "OPEN:CELL 0")
        await asyncio.sleep(0.5)
        st.bench.clear = 1
        await asyncio.sleep(1.5)
        assert st.bench.latest("BMS_Status")["fault_sense_line"] == "OK"

    scenario(body)


def test_open_wire_detection_disabled_leaves_the_cell_unmonitored() -> None:
    async def body(st: Station) -> None:
        await close_contactors(st)
        _, status = await inject(st, "OPEN:CELL 17", wait=5.0)
        assert status["contactors"] == "CLOSED" and status["fault_sense_line"] == "OK"
        assert st.bench.latest("BMS_CellStats")["cell_v_min"] == 0.0

    scenario(body, faults=("open_wire_detection_disabled",))


def test_sense_line_short_to_chassis_collapses_isolation_and_trips() -> None:
    async def body(st: Station) -> None:
        await close_contactors(st)
        _, status = await inject_and_trip(st, "SHOR:CELL 100")
        assert status["fault_sense_line"] == "ACTIVE"
        assert status["fault_isolation"] == "ACTIVE" and status["warn_isolation"] == "ACTIVE"
        assert st.bench.latest("BMS_Isolation")["iso_resistance"] <= 1

    scenario(body)


# -- isolation monitoring with a resistor Ro (UN R100 Part II) ----------------------------------------


def _ro_for(ohm_per_v: float, ri_kohm: float = 5000.0) -> float:
    """Ro (kOhm) that brings Ri || Ro down to ``ohm_per_v`` of the maximum working voltage."""
    target = ohm_per_v * MAX_WORKING_V / 1000.0
    return 1.0 / (1.0 / target - 1.0 / ri_kohm)


def test_ohm_per_volt_thresholds_follow_the_maximum_working_voltage() -> None:
    plant = build_plant(
        {"dbc": DBC, "can_channel": "iso", "bms": ISO_BMS},
        faults=(),
        seed=0,
        register=lambda n, h: None,
    )
    assert plant.bms.p.iso_warning_kohm == pytest.approx(80.64)
    assert plant.bms.p.iso_error_kohm == pytest.approx(40.32)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"bms": {"iso_warning_ohm_per_v": 100}},
            r"error threshold \(100 kOhm\) must not exceed the warning threshold",
        ),
        ({"chamber": {"max_ramp": 5}}, "unknown key 'chamber.max_ramp'"),
        ({"fault_box": {"heater_max_w": 0}}, "fault_box.heater_max_w must be > 0"),
        ({"heater_sensor": 17}, r"heater_sensor must be <= temp_sensors \(16\)"),
        ({"cooling_k_per_w": 0}, "cooling_k_per_w must be > 0"),
        ({"ambient_c": 30, "chamber": {"max_temp_c": 20}}, "ambient_c must lie within chamber.min_temp_c"),
    ],
)
def test_bad_rig_config_is_one_clear_line(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        build_plant({"dbc": DBC, "can_channel": "cfg", **config}, faults=(), seed=0, register=lambda n, h: None)
    assert "\n" not in str(info.value)


def test_ro_at_97_ohm_per_volt_raises_the_isolation_warning() -> None:
    async def body(st: Station) -> None:
        await asyncio.sleep(1.0)
        assert st.bench.latest("BMS_Status")["warn_isolation"] == "OK"
        fib(st, f"ISO:RES {_ro_for(103):.2f}")
        await asyncio.sleep(1.5)
        assert st.bench.latest("BMS_Status")["warn_isolation"] == "OK"
        fib(st, f"ISO:RES {_ro_for(97):.2f}")
        t_inj = now()
        await asyncio.sleep(1.5)
        t_warn = st.bench.first("BMS_Status", lambda v: v["warn_isolation"] == "ACTIVE", after=t_inj)
        # the monitor measures once per BMS_Isolation cycle (1 s); the warning follows that measurement
        assert t_warn is not None and t_warn - t_inj <= ISO_CYCLE_S + FRAME_S + 1e-6
        t_iso = st.bench.first("BMS_Isolation", lambda v: v["iso_resistance"] < 100, after=t_inj)
        assert t_iso is not None and t_iso <= t_warn
        iso = st.bench.latest("BMS_Isolation")["iso_resistance"]
        assert iso * 1000.0 / MAX_WORKING_V == pytest.approx(97.0, abs=1.5)
        status = st.bench.latest("BMS_Status")
        assert status["fault_isolation"] == "OK" and status["bms_state"] == "STANDBY"
        fib(st, "ISO:RES 0")  # Ro removed: the warning is live, not latched
        await asyncio.sleep(1.5)
        assert st.bench.latest("BMS_Status")["warn_isolation"] == "OK"

    scenario(body, bms=ISO_BMS)


def test_iso_warning_disabled_stays_silent_at_97_ohm_per_volt() -> None:
    async def body(st: Station) -> None:
        fib(st, f"ISO:RES {_ro_for(97):.2f}")
        await asyncio.sleep(3.0)
        assert st.bench.latest("BMS_Isolation")["iso_resistance"] < 100 * MAX_WORKING_V / 1000.0
        assert st.bench.latest("BMS_Status")["warn_isolation"] == "OK"

    scenario(body, faults=("iso_warning_disabled",), bms=ISO_BMS)


def test_isolation_fault_fails_a_100_ohm_per_volt_check() -> None:
    async def body(st: Station) -> None:
        await asyncio.sleep(1.5)
        iso = st.bench.latest("BMS_Isolation")["iso_resistance"]
        assert iso * 1000.0 / MAX_WORKING_V < 100.0
        status = st.bench.latest("BMS_Status")
        assert status["warn_isolation"] == "ACTIVE"

    scenario(body, faults=("isolation_fault",), bms=ISO_BMS)


# -- external short circuit (UN R100 Part II) -----------------------------------------------------------


def test_external_short_5_mohm_trips_overcurrent_and_opens_contactors() -> None:
    async def body(st: Station) -> None:
        await close_contactors(st)
        t0_pack = st.plant.pack.temp_c
        _, status = await inject_and_trip(st, "SHOR:RES 5", "SHOR:EXT ON")
        assert status["fault_overcurrent"] == "ACTIVE" and status["bms_state"] == "FAULT"
        currents = [v["pack_current"] for _, v in st.bench.of("BMS_PackValues")]
        assert min(currents) == -3276.8  # thousands of amperes: the DBC field saturates
        assert currents[-1] == 0.0
        # ~4.8 kA through ~0.15 Ohm for a few ticks heats 420 kJ/K by about a kelvin
        assert 0.1 < st.plant.pack.temp_c - t0_pack < 5.0

    scenario(body)


def test_overcurrent_protection_disabled_leaves_the_short_to_under_voltage() -> None:
    async def body(st: Station) -> None:
        await close_contactors(st)
        _, status = await inject(st, "SHOR:RES 5;SHOR:EXT ON")
        assert status["fault_overcurrent"] == "OK"
        # the cells collapse under the short: only the under-voltage protection opens, debounced
        assert status["fault_cell_uv"] == "ACTIVE"

    scenario(body, faults=("overcurrent_protection_disabled",))


# -- over-temperature with the coolant loop off and a hot chamber (UN R100 Part II) ------------------


async def _heat_soak(st: Station, cooling: bool) -> float | None:
    """Seconds from the start of the soak to fault_cell_ot, or None within 32 minutes."""
    await close_contactors(st)
    chamber(st, f"RAMP 0;TEMP 80;COOL {'ON' if cooling else 'OFF'}")
    discharge(st, amps=160)  # the station's 60 kW supply limits this to ~78 A
    t0 = now()
    while now() - t0 < 32 * 60:
        await asyncio.sleep(10.0)
        if st.bench.latest("BMS_Status")["fault_cell_ot"] == "ACTIVE":
            return now() - t0
    return None


def test_cooling_off_in_a_hot_chamber_trips_over_temperature() -> None:
    async def body(st: Station) -> None:
        t_ot = await _heat_soak(st, cooling=False)
        assert t_ot is not None and 20 * 60 < t_ot < 32 * 60
        await asyncio.sleep(1.0)
        status = st.bench.latest("BMS_Status")
        assert status["contactors"] == "OPEN" and status["bms_state"] == "FAULT"
        assert st.plant.chamber is not None and st.plant.chamber.air_c == 80.0

    scenario(body, **HOT_RIG)

    async def cooled(st: Station) -> None:
        assert await _heat_soak(st, cooling=True) is None
        assert st.bench.latest("BMS_Temperatures")["cell_temp_max"] < 50.0

    scenario(cooled, **HOT_RIG)


def test_temp_sensor_stuck_blinds_over_temperature_protection() -> None:
    async def body(st: Station) -> None:
        assert await _heat_soak(st, cooling=False) is None
        assert st.bench.latest("BMS_Status")["contactors"] == "CLOSED"
        assert st.plant.pack.temp_c > 60.0
        assert st.bench.latest("BMS_Temperatures")["cell_temp_max"] < 30.0

    scenario(body, faults=("temp_sensor_stuck",), **HOT_RIG)


def test_chamber_air_follows_the_setpoint_at_the_ramp_and_is_the_pack_ambient() -> None:
    async def body(st: Station) -> None:
        chamber(st, "RAMP 2;TEMP 45")
        await asyncio.sleep(300.0)
        assert st.plant.chamber is not None and st.plant.chamber.air_c == pytest.approx(35.0, abs=0.05)
        assert st.plant.pack.ambient_c == st.plant.chamber.air_c
        await asyncio.sleep(600.0)
        assert st.plant.chamber.air_c == 45.0
        assert st.bench.latest("BMS_Temperatures")["coolant_temp"] == 25.0

    scenario(body)


# -- thermal-event warning from a heater pad on one module (UN R100 6.14) ----------------------------


def test_heater_pad_raises_the_thermal_event_warning_in_seconds() -> None:
    async def body(st: Station) -> None:
        await asyncio.sleep(1.0)
        fib(st, "HEAT 2000")
        t_inj = now()
        await asyncio.sleep(5.0)
        t_warn = st.bench.first("BMS_Status", lambda v: v["warn_thermal_event"] == "ACTIVE", after=t_inj)
        assert t_warn is not None and t_warn - t_inj < 3.0
        assert st.plant.bms.temp_rate_c_per_s > 1.0
        temps = st.bench.latest("BMS_Temperatures")
        assert temps["cell_temp_max_id"] == 1 and temps["cell_temp_max"] > 30.0
        assert status_at(st.bench, t_warn)["fault_cell_ot"] == "OK"

    scenario(body)


def test_thermal_event_warning_disabled_never_warns() -> None:
    async def body(st: Station) -> None:
        fib(st, "HEAT 2000")
        await asyncio.sleep(10.0)
        assert st.plant.bms.temp_rate_c_per_s > 1.0
        assert st.bench.latest("BMS_Status")["warn_thermal_event"] == "OK"

    scenario(body, faults=("thermal_event_warning_disabled",))


# -- the box itself -----------------------------------------------------------------------------------------


def test_fault_box_reset_restores_every_safe_value() -> None:
    async def body(st: Station) -> None:
        fib(st, "OPEN:CELL 3;SHOR:CELL 4;ISO:RES 80;SHOR:RES 5;SHOR:EXT 1;HEAT 100")
        fib(st, "*RST")
        assert fib(st, "OPEN:CELL?;SHOR:CELL?;ISO:RES?;SHOR:EXT?;SHOR:RES?;HEAT?") == "0;0;0.0;0;100.0;0.0"
        box = st.plant.fault_box
        assert box is not None
        assert box.scpi("OPEN:CELL 193;SYST:ERR?") == '-222,"Data out of range"'
        assert box.scpi("VALV:POS?;SYST:ERR?") == '-113,"Undefined header"'

    scenario(body)


# -- through the real CLI, drivers and station safe states -------------------------------------------------

FIB_CHAMBER = ROOT / "tests" / "sequences" / "fib_chamber.yaml"
FIB_CHANNELS: dict[str, Any] = {
    "open_wire": {"scpi": "OPEN:CELL", "doc": "cell sense line opened (0 = none)", "min": 0, "max": 192},
    "short_gnd": {"scpi": "SHOR:CELL", "doc": "cell sense line shorted to chassis (0 = none)", "min": 0, "max": 192},
    "iso_ro": {"scpi": "ISO:RES", "unit": "kOhm", "doc": "Ro between HV+ and chassis (0 = not inserted)", "max": 10000},
    "ext_short": {"scpi": "SHOR:EXT", "states": {"OPEN": 0, "CLOSED": 1}},
    "short_res": {"scpi": "SHOR:RES", "unit": "mOhm", "min": 0.1, "max": 100},
    "heater": {"scpi": "HEAT", "unit": "W", "min": 0, "max": 5000, "doc": "heater pad on one cell module"},
}


def _absolute(node: Any) -> Any:
    """The station's relative file paths (``../dbc/...``) made absolute, for a copy elsewhere."""
    if isinstance(node, dict):
        return {k: _absolute(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_absolute(v) for v in node]
    if isinstance(node, str) and node.startswith("../"):
        return str((SIM_STATION.parent / node).resolve())
    return node


def rig_station(tmp_path: Path) -> Path:
    """The default station plus the fault box and the chamber, with Ohm/V isolation thresholds."""
    data: dict[str, Any] = _absolute(YAML(typ="safe").load(SIM_STATION.read_text()))
    sim = next(s["config"] for s in data["simulators"] if s["kind"] == "bms_pack")
    sim.update({"fib_endpoint": "fib", "chamber_endpoint": "chamber", **HOT_RIG_THERMAL})
    sim["bms"].update(ISO_BMS)
    data["devices"]["fib"] = {
        "driver": "fault_box",
        "config": {"transport": {"inproc": "fib"}, "model": "FIB-16", "channels": FIB_CHANNELS},
        "safe_state": {
            "set": {
                "fib.open_wire": 0,
                "fib.short_gnd": 0,
                "fib.iso_ro": "0 kOhm",
                "fib.ext_short": "OPEN",
                "fib.heater": "0 W",
            },
            "verify": "fib.ext_short == OPEN and fib.heater < 1 W and fib.open_wire == 0",
            "within": "2 s",
        },
    }
    data["devices"]["chamber"] = {
        "driver": "chamber",
        "config": {"transport": {"inproc": "chamber"}, "poll_interval": "1 s"},
        "safe_state": {
            "set": {"chamber.temp_set": "25 degC", "chamber.cooling": "ON"},
            "verify": "chamber.cooling == ON",
            "within": "2 s",
        },
    }
    path = tmp_path / "rig.yaml"
    with path.open("w") as f:
        YAML(typ="safe").dump(data, f)
    return path


def test_fault_box_and_chamber_through_the_cli(tmp_path: Path, reports: Path) -> None:
    run = bench("run", FIB_CHAMBER, "--station", rig_station(tmp_path), "--reports", reports)
    assert run.rc == 0, run.out + run.err
    result = run.result()
    values = {m["name"]: m["value"] for m in result["measurements"]}
    assert 95 <= values["isolation_with_ro"] <= 100 and values["safe_state_time"] <= 500
    ids = {d["name"]: d["identity"] for d in result["devices"]}
    assert ids["fib"]["model"] == "FAULT INSERTION BOX FIB-16"
    assert ids["chamber"]["model"] == "CLIMATE CHAMBER TC-600"
    assert "fib safe" in run.out and "chamber safe" in run.out


def test_open_wire_detection_disabled_fails_the_sequence(tmp_path: Path, reports: Path) -> None:
    station = rig_station(tmp_path)
    run = bench(
        "run", FIB_CHAMBER, "--station", station, "--reports", reports, "--fault", "open_wire_detection_disabled"
    )
    assert run.rc != 0
    assert run.result()["verdict"] == "FAIL"
    assert "step 'safe state'" in run.out, run.out


def test_fault_box_parser_words_ranges_and_sense_inputs() -> None:
    state = {"relay": 0.0, "ohm": 5.0, "line": 0.0}
    box = FaultBox(
        "MAKER,BOX,SN1,FW1",
        [
            Channel("REL", lambda: state["relay"], lambda v: state.__setitem__("relay", v), integer=True),
            Channel("RES", lambda: state["ohm"], lambda v: state.__setitem__("ohm", v), 0.1, 100.0, 100.0),
            Channel("LINE", lambda: state["line"], lambda v: state.__setitem__("line", v), 0, 192, 0, True),
            Channel("POS", lambda: 1.0, None, safe=None, integer=True),
        ],
    )
    assert box.scpi("*IDN?;*OPC?") == "MAKER,BOX,SN1,FW1;1"
    assert box.scpi("REL ON;REL?;rel off;REL?;RES MAX;RES?;RES 0.25;RES?;LINE 17;LINE?;POS?") == "1;0;100.0;0.25;17;1"
    errors = []
    for bad in ("RES ON", "LINE 1.5", "LINE 193", "POS 0", "NOPE?", "REL", "RES 1e999"):
        box.scpi(bad)
        errors.append(box.scpi("SYST:ERR?"))
    assert errors == [
        '-224,"Illegal parameter value"',
        '-224,"Illegal parameter value"',
        '-222,"Data out of range"',
        '-113,"Undefined header"',
        '-113,"Undefined header"',
        '-109,"Missing parameter"',
        '-224,"Illegal parameter value"',
    ]
    assert box.scpi("SYST:ERR?") == '0,"No error"'
    box.scpi("*RST")
    assert state == {"relay": 0.0, "ohm": 100.0, "line": 0.0}


def test_chamber_parser_ramp_range_and_reset() -> None:
    ch = Chamber(ChamberSpec(initial_temp_c=25.0))
    assert ch.scpi("TEMP 80;RAMP 5;COOL OFF;TEMP:SET?;RAMP?;COOL?;TEMP?") == "80.00;5.00;OFF;25.00"
    for _ in range(600):  # 60 s at 5 K/min
        ch.step(0.1)
    assert ch.air_c == pytest.approx(30.0)
    assert ch.scpi("RAMP 6;SYST:ERR?;TEMP 151;SYST:ERR?;COOL MAYBE;SYST:ERR?") == (
        '-222,"Data out of range";-222,"Data out of range";-224,"Illegal parameter value"'
    )
    ch.scpi("*RST")
    assert ch.scpi("TEMP:SET?;RAMP?;COOL?") == "25.00;0.00;ON" and ch.air_c == pytest.approx(30.0)
