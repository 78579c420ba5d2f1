"""The battery cell emulator (Bloomy ABS units on one bus, plus NTC resistor modules): the
simulator's SCPI, the driver in-process and over TCP SCPI served by `bench sim serve`, the NTC
models, and the register's accuracy in the uncertainty of a read-back."""

from __future__ import annotations

import asyncio
import math
import random
from pathlib import Path
from typing import Any

import pytest

from bench.device import ConfigError, load_driver, load_plant_builder
from bench.errors import DeviceError, LoadError
from bench.plan import build_drivers
from bench.report.equipment import Instrument, Range, signal_uncertainty
from bench.station import load_station
from drivers.cell_emulator import CellEmulatorDriver
from drivers.ntc import BetaModel, SteinhartHart, ntc_model
from drivers.scpi import channel_list
from simulators.cell_emulator import AbsUnit, CellEmulatorBus, ResistorModule, build_bus
from tests.expected_protocol import Harness, connected, make, run_virtual, settle
from tests.ports import free_ports
from tests.served import dump_yaml, scpi_query, sim_serve

OK = '0,"No error"'
BETA = {"model": "beta", "r25": "10 kohm", "beta": 3435, "t25": "25 degC"}
# A common 10 kOhm NTC's Steinhart-Hart coefficients (about 10 kOhm at 25 degC).
SH = {"model": "steinhart_hart", "a": 1.009249522e-3, "b": 2.378405444e-4, "c": 2.019202697e-7}


def _bus(units: int = 2, resistors: int = 1) -> CellEmulatorBus:
    return build_bus({"units": units, "resistor_modules": resistors, "noise_v": 0.0, "noise_a": 0.0}, random.Random(1))


class Spy:
    """The bus, with every text the driver hands it kept (one entry per transport call)."""

    def __init__(self, bus: CellEmulatorBus) -> None:
        self.bus = bus
        self.calls: list[str] = []

    def scpi(self, text: str) -> str | None:
        self.calls.append(text)
        return self.bus.scpi(text)


def _config(units: int = 2, resistors: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "transport": {"inproc": "cells"},
        "units": list(range(1, units + 1)),
        "resistor_modules": list(range(units + 1, units + resistors + 1)),
        "ntc": BETA,
        **extra,
    }


# -- simulator ------------------------------------------------------------------------------------


def test_each_line_goes_to_the_unit_it_names() -> None:
    bus = _bus()
    assert bus.scpi("@1 *IDN?") == "Bloomy Controls,ABS,SIMABS01,1.0.0 (simulated)"
    assert bus.scpi("@2 *IDN?") == "Bloomy Controls,ABS,SIMABS02,1.0.0 (simulated)"
    assert (bus.scpi("@3 *IDN?") or "").startswith("HIL-BENCH,NTC-8 resistor module,")
    # No address, or an id nobody has: nobody answers, as on an RS-485 bus.
    assert bus.scpi("*IDN?") is None
    assert bus.scpi("@9 *IDN?") is None
    # Several lines at once: each to its unit, one reply line per answering line.
    assert bus.scpi("@1 SOUR:VOLT 3.7,(@1:8)\n@2 SOUR3:VOLT 3.1\n@1 SOUR2:VOLT?\n@2 SOUR:VOLT? (@2:3)") == (
        "3.7000\n0.0000,3.1000"
    )


def test_channel_lists_and_numeric_suffixes_address_the_same_cells() -> None:
    unit = AbsUnit("X", random.Random(1), noise_v=0.0, noise_a=0.0)
    unit.scpi("SOUR:VOLT 3.5,(@1:3,7);:SOURce5:VOLTage 4.2;:OUTP 1,(@1:8);:OUTP8 0")
    assert unit.scpi("SOUR:VOLT? (@1:8)") == "3.5000,3.5000,3.5000,0.0000,4.2000,0.0000,3.5000,0.0000"
    assert unit.scpi("OUTP? (@7:8)") == "1,0"
    assert unit.scpi("MEAS:VOLT? (@1,5)") == "3.50000,4.20000"
    assert unit.scpi("SYST:ERR?") == OK


@pytest.mark.parametrize(
    ("command", "error"),
    [
        ("SOUR1:VOLT 5.1", '-222,"Data out of range"'),  # the ABS range is 0..5 V
        ("SOUR:VOLT 3,(@1:9)", '-222,"Data out of range"'),  # eight cells
        ("SOUR9:VOLT 3", '-113,"Undefined header"'),
        ("SOUR1:CURR:SRC 6", '-222,"Data out of range"'),
        ("OUTP1:FAUL BROKEN", '-224,"Illegal parameter value"'),
        ("SOUR1:VOLT", '-109,"Missing parameter"'),
        ("MEAS1:VOLT 3", '-113,"Undefined header"'),  # a query-only header as a command
        ("SOUR2:VOLT 3,(@1)", '-102,"Syntax error"'),  # a suffix and a list at once
    ],
)
def test_bad_commands_queue_scpi_errors(command: str, error: str) -> None:
    unit = AbsUnit("X", random.Random(1))
    unit.scpi(command)
    assert unit.scpi("SYST:ERR?") == error
    assert unit.scpi("SOUR:VOLT? (@1:8)") == ",".join(["0.0000"] * 8)  # nothing changed


def test_the_fault_relay_opens_or_shorts_what_the_bms_sees() -> None:
    bus = _bus(units=1)
    bus.scpi("@1 SOUR:VOLT 3.7,(@1:8);:SOUR:CURR:SRC 1,(@1:8);:SOUR:CURR:SNK 1,(@1:8);:OUTP 1,(@1:8)")
    bus.scpi("@1 OUTP2:FAUL OPEN;:OUTP3:FAUL SHORT")
    assert bus.scpi("@1 OUTP:FAUL? (@1:3)") == "NONE,OPENCIRCUIT,SHORTCIRCUIT"
    assert bus.cell(1).sense_voltage == 3.7
    assert bus.cell(2).sense_voltage is None  # the sense line is open
    assert bus.cell(3).sense_voltage == 0.0
    bus.scpi("@1 OUTP:FAUL NONE,(@1:8)")
    assert [bus.cell(k).sense_voltage for k in (2, 3)] == [3.7, 3.7]


def test_the_balancing_current_hook_flows_within_the_limits() -> None:
    bus = _bus(units=2)
    bus.scpi("@2 SOUR:VOLT 3.9,(@1:8);:SOUR:CURR:SRC 0.1,(@1:8);:SOUR:CURR:SNK 0.05,(@1:8);:OUTP 1,(@1:8)")
    bus.set_load_current(9, 0.08)  # cell 9 = unit 2, cell 1
    assert bus.scpi("@2 MEAS1:CURR?") == "0.08000"
    assert bus.scpi("@2 MEAS1:VOLT?") == "3.90000"
    bus.set_load_current(10, 0.2)  # above the sourcing limit: current limited, the output sags
    assert float(bus.scpi("@2 MEAS2:CURR?") or "") == pytest.approx(0.1)
    assert float(bus.scpi("@2 MEAS2:VOLT?") or "") == pytest.approx(3.9 * 0.1 / 0.2)
    assert bus.cell(10).current_limited
    bus.set_load_current(11, -0.2)  # charging the cell: the sinking limit holds
    assert float(bus.scpi("@2 MEAS3:CURR?") or "") == pytest.approx(-0.05)
    bus.scpi("@2 OUTP 0,(@1:8)")
    assert bus.cell(9).current == 0.0  # output off: nothing flows


def test_resistor_channels_set_open_and_short() -> None:
    module = ResistorModule("R")
    module.scpi("SOUR:RES 4700,(@1:8);:SOUR2:RES 1.2e5;:OUTP3:FAUL OPEN;:OUTP4:FAUL SHORT")
    assert module.scpi("SOUR:RES? (@1:2)") == "4700,120000"
    assert [ch.resistance for ch in module.channels[:4]] == [4700.0, 120000.0, math.inf, 0.0]
    module.scpi("SOUR1:RES 0.5")
    assert module.scpi("SYST:ERR?") == '-222,"Data out of range"'
    module.scpi("*RST")
    assert module.scpi("OUTP:FAUL? (@3:4)") == "NONE,NONE"


def test_the_plant_registers_the_bus_under_its_endpoint() -> None:
    registered: dict[str, Any] = {}
    plant = load_plant_builder("cell_emulator")(
        {"endpoint": "cells", "units": 24, "resistor_modules": 2}, faults=[], seed=1, register=registered.__setitem__
    )
    assert registered["cells"] is plant.bus
    assert (plant.bus.cell_count, plant.bus.ntc_count) == (192, 16)
    with pytest.raises(ValueError, match="units must be >= 1 and <= 24, got 25"):
        load_plant_builder("cell_emulator")({"units": 25}, faults=[], seed=1, register=registered.__setitem__)


# -- NTC models -----------------------------------------------------------------------------------


@pytest.mark.parametrize("celsius", [-40.0, -20.0, 0.0, 25.0, 45.0, 60.0, 85.0, 125.0])
def test_beta_model_against_the_formula(celsius: float) -> None:
    model = ntc_model(BETA)
    t, t25 = celsius + 273.15, 298.15
    reference = 10_000.0 * math.exp(3435.0 * (1.0 / t - 1.0 / t25))
    assert model.resistance(celsius) == pytest.approx(reference, rel=1e-12)
    assert model.temperature(reference) == pytest.approx(celsius, abs=1e-9)


@pytest.mark.parametrize("celsius", [-40.0, 0.0, 25.0, 60.0, 125.0])
def test_steinhart_hart_inverse_satisfies_the_equation(celsius: float) -> None:
    model = ntc_model(SH)
    assert isinstance(model, SteinhartHart)
    ohms = model.resistance(celsius)
    x = math.log(ohms)
    # The forward equation, written out here: 1/T = A + B ln R + C (ln R)^3.
    assert 1.0 / (SH["a"] + SH["b"] * x + SH["c"] * x**3) - 273.15 == pytest.approx(celsius, abs=1e-9)
    if celsius == 25.0:
        assert ohms == pytest.approx(10_000.0, rel=0.02)  # these coefficients describe a 10 kOhm NTC (9.88 kOhm)
    assert SteinhartHart(SH["a"], SH["b"], 0.0).temperature(SteinhartHart(SH["a"], SH["b"], 0.0).resistance(40.0)) == (
        pytest.approx(40.0)
    )


@pytest.mark.parametrize(
    ("ntc", "message"),
    [
        ({"model": "beta", "r25": "10 kohm", "beta": -3435}, "ntc.beta: must be > 0 K"),
        ({"model": "beta", "r25": "-1 kohm", "beta": 3435}, "ntc.r25: must be > 0 ohm"),
        ({"model": "beta", "r25": "10 V", "beta": 3435}, "ntc.r25: expected a value in ohm"),
        ({"model": "beta", "beta": 3435}, "ntc.r25: missing"),
        ({"model": "beta", "r25": 10000, "beta": 3435, "b25": 1}, "ntc.b25: unknown key"),
        ({"model": "ptc"}, "ntc.model: expected 'beta' or 'steinhart_hart'"),
        ({**SH, "b": -1e-4}, "ntc.b: must be > 0"),
        ({**SH, "c": "x"}, "ntc.c: expected a number"),
        ("10k", "ntc: expected a mapping"),
    ],
)
def test_bad_ntc_parameters_are_one_line_errors(ntc: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        make(CellEmulatorDriver, _config(ntc=ntc))
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_bad_station_config_is_refused_at_load() -> None:
    for config, message in [
        (_config(units=0), "units: a cell emulator needs at least one ABS unit id"),
        ({**_config(), "units": [1, 2, 2]}, "units: device id 2 is used twice"),
        ({**_config(), "units": "1..8"}, "units: expected a list of device ids"),
        ({**_config(), "units": [300]}, "units: device id 300 is outside 0..255"),
        (_config(units=25), "units: at most 24 units"),
        (_config(voltage_max="6 V"), "voltage_max: must be > 0 V and <= 5 V"),
        ({k: v for k, v in _config().items() if k != "ntc"}, "ntc: resistor modules need the NTC model"),
    ]:
        with pytest.raises(ConfigError, match=message):
            make(CellEmulatorDriver, config)


def test_a_bad_ntc_in_a_station_file_names_the_device(tmp_path: Path) -> None:
    station = _station(tmp_path, {"inproc": "cells"}, ntc={"model": "beta", "r25": "10 kohm", "beta": 0})
    with pytest.raises(LoadError) as info:
        build_drivers(load_station(station), ["emu"])
    assert "emu" in str(info.value) and "ntc.beta: must be > 0 K" in str(info.value)
    assert "\n" not in str(info.value)


# -- driver, in-process ---------------------------------------------------------------------------


def test_signal_names_carry_module_and_channel() -> None:
    driver = make(CellEmulatorDriver, _config(units=24, resistors=2), "emu")
    names = {s.name for s in driver.signals()}
    assert {"emu.m01c1_voltage_set", "emu.m24c8_current", "emu.r02c8_temperature", "emu.all_voltage_set"} <= names
    assert len([n for n in names if n.endswith("_voltage")]) == 192
    assert driver.cell_signal(1, "voltage") == "m01c1_voltage"
    assert driver.cell_signal(9, "voltage") == "m02c1_voltage"
    assert driver.cell_signal(192, "fault") == "m24c8_fault"
    assert load_driver("cell_emulator") is CellEmulatorDriver


def test_setting_all_192_cells_is_one_write() -> None:
    bus = _bus(units=24, resistors=0)
    spy = Spy(bus)
    driver = make(CellEmulatorDriver, {**_config(units=24, resistors=0)}, "emu")
    harness = Harness()
    voltages = {driver.cell_signal(k, "voltage_set"): round(3.0 + k / 1000, 4) for k in range(1, 193)}

    async def main() -> dict[str, float]:
        async with connected(driver, harness, {"cells": spy}):
            spy.calls.clear()
            return await driver.set(voltages)

    readback = run_virtual(main)
    writes = [c for c in spy.calls if "?" not in c]
    assert len(writes) == 1  # the whole set in one transport write
    lines = writes[0].split("\n")
    assert len(lines) == 24 and lines[0].startswith("@1 :SOUR1:VOLT 3.0010;:SOUR2:VOLT 3.0020")
    # Then one query per unit reads its settings back with its error queue.
    assert len(spy.calls) == 25 and all(c.endswith(";:SYST:ERR?") for c in spy.calls[1:])
    assert all(bus.cell(k).voltage_set == pytest.approx(3.0 + k / 1000) for k in range(1, 193))
    assert readback["m24c8_voltage_set"] == pytest.approx(3.192)
    assert harness.last("emu.m13c5_voltage_set") == pytest.approx(3.0 + 101 / 1000)


def test_one_value_for_many_cells_uses_a_channel_list() -> None:
    spy = Spy(_bus(units=3, resistors=0))
    driver = make(CellEmulatorDriver, _config(units=3, resistors=0), "emu")

    harness = Harness()

    async def main() -> dict[str, float]:
        async with connected(driver, harness, {"cells": spy}):
            spy.calls.clear()
            return await driver.set({"all_voltage_set": 3.65, "all_current_limit": 0.5, "all_output": 1})

    # The step's record gets what it set; every channel's read-back is published.
    assert run_virtual(main) == {"all_voltage_set": 3.65, "all_current_limit": 0.5, "all_output": 1}
    assert harness.last("emu.m03c8_current_limit") == 0.5
    assert spy.calls[0].split("\n")[1] == (
        "@2 :SOUR:VOLT 3.6500,(@1:8);:SOUR:CURR:SRC 0.5000,(@1:8);:SOUR:CURR:SNK 0.5000,(@1:8);:OUTP 1,(@1:8)"
    )
    assert all(spy.bus.cell(k).enabled and spy.bus.cell(k).source_limit == 0.5 for k in range(1, 25))


def test_measurements_are_polled_and_the_relay_is_read_back() -> None:
    bus = _bus(units=2)
    driver = make(CellEmulatorDriver, _config(units=2, poll_interval="500 ms"), "emu")
    harness = Harness()

    async def main() -> None:
        async with connected(driver, harness, {"cells": bus}):
            await driver.set({"all_voltage_set": 3.7, "all_current_limit": 1.0, "all_output": 1})
            bus.set_load_current(12, 0.25)  # the BMS balances cell 12 (module 2, channel 4)
            await driver.set({"m01c2_fault": 1, "m01c3_fault": 2})
            await settle(1.0)

    run_virtual(main)
    assert harness.faults == []
    assert harness.last("emu.m02c4_current") == pytest.approx(0.25)
    assert harness.last("emu.m02c4_voltage") == pytest.approx(3.7)
    assert (harness.last("emu.m01c2_fault"), harness.last("emu.m01c3_fault")) == (1, 2)
    assert harness.last("emu.m01c3_voltage") == 0.0  # shorted
    assert bus.cell(2).sense_voltage is None
    assert harness.last("emu.all_output") == 1


def test_a_temperature_becomes_the_ntc_resistance() -> None:
    bus = _bus(units=1, resistors=2)
    driver = make(CellEmulatorDriver, _config(units=1, resistors=2, ntc=SH), "emu")
    harness = Harness()

    async def main() -> None:
        async with connected(driver, harness, {"cells": bus}):
            await driver.set({"all_temperature": 25.0})
            await driver.set({"r02c3_temperature": 60.0, "r01c1_fault": 1})

    run_virtual(main)
    reference = ntc_model(SH).resistance(60.0)
    channel = bus.ntc(8 + 3)  # module r02, channel 3
    assert channel.resistance == pytest.approx(reference, rel=1e-5)  # sent with six digits
    assert harness.last("emu.r02c3_resistance") == pytest.approx(reference, rel=1e-5)
    assert harness.last("emu.r02c3_temperature") == pytest.approx(60.0, abs=0.001)
    assert bus.ntc(1).resistance == math.inf  # the open-sensor fault
    assert bus.ntc(2).resistance == pytest.approx(ntc_model(SH).resistance(25.0), rel=1e-5)


def test_out_of_range_requests_are_one_line_errors_and_change_nothing() -> None:
    bus = _bus(units=1, resistors=1)
    driver = make(CellEmulatorDriver, _config(units=1, voltage_max="4.3 V"), "emu")

    async def main() -> list[str]:
        errors = []
        async with connected(driver, Harness(), {"cells": bus}):
            for values in ({"m01c1_voltage_set": 4.4}, {"r01c1_temperature": -200.0}, {"m01c1_fault": 7}):
                with pytest.raises(DeviceError) as info:
                    await driver.set(values)
                errors.append(str(info.value))
        return errors

    assert run_virtual(main) == [
        "emu: m01c1_voltage_set: 4.4 V is outside 0..4.3 V",
        "emu: r01c1_temperature: -200 degC needs 2.45587e+19 ohm, outside the module's 1..1e+07 ohm",
        "emu: m01c1_fault: expected NONE, OPEN or SHORT, got 7",
    ]
    assert bus.cell(1).voltage_set == 0.0


def test_an_instrument_error_fails_the_set_with_the_instruments_words() -> None:
    bus = _bus(units=1, resistors=0)
    # The simulated unit refuses more than 5 V; the station allows 5 V, so the request goes out.
    driver = make(CellEmulatorDriver, _config(units=1, resistors=0), "emu")
    original = bus.units[1].scpi

    def fussy(line: str) -> str | None:
        return original(line.replace("SOUR:VOLT 4.0000", "SOUR:VOLT 9"))

    bus.units[1].scpi = fussy  # type: ignore[method-assign]

    async def main() -> str:
        async with connected(driver, Harness(), {"cells": bus}):
            with pytest.raises(DeviceError) as info:
                await driver.set({"all_voltage_set": 4.0})
            return str(info.value)

    assert run_virtual(main) == 'emu: instrument error on m01 (id 1): -222,"Data out of range"'


def test_a_wrong_device_on_the_bus_refuses_the_connection() -> None:
    bus = CellEmulatorBus({1: ResistorModule("R")})
    driver = make(CellEmulatorDriver, {"transport": {"inproc": "cells"}, "units": [1]}, "emu")

    async def main() -> str:
        with pytest.raises(DeviceError) as info:
            await driver.connect(Harness().context(asyncio.get_running_loop(), {"cells": bus}))
        return str(info.value)

    assert run_virtual(main).endswith("not a Bloomy Controls ABS (wrong device id or bus?)")


def test_channel_list_notation() -> None:
    assert channel_list([1, 2, 3, 5, 7, 8]) == "(@1:3,5,7:8)"
    assert channel_list([4]) == "(@4)"


# -- accuracy into the uncertainty budget --------------------------------------------------------


def test_a_read_back_gets_the_register_accuracy() -> None:
    # One register entry states the accuracy of every cell channel by pattern; an entry of its own
    # for one channel comes first.
    ins = Instrument(
        asset_id="ABS-01",
        device="emu",
        maker="Bloomy Controls",
        model="ABS",
        serial="SIMABS01",
        signals={
            "m*c*_voltage": [Range(range="5 V", reading_pct=0.05, absolute="2 mV", resolution="0.1 mV")],
            "m01c1_voltage": [Range(range="5 V", absolute="10 mV")],
        },
    )
    unc = signal_uncertainty("emu.m13c5_voltage", 3.7, [ins], {})
    assert unc is not None
    half = 0.0005 * 3.7 + 0.002
    expected = math.sqrt((half / math.sqrt(3)) ** 2 + (0.1e-3 / math.sqrt(12)) ** 2)
    assert unc.u_base == pytest.approx(expected)
    assert "ABS-01 accuracy ±(0.05 % of reading + 2 mV) on the 5 V range" in unc.budget[0]
    own = signal_uncertainty("emu.m01c1_voltage", 3.7, [ins], {})
    assert own is not None and own.u_base == pytest.approx(0.010 / math.sqrt(3))
    assert signal_uncertainty("emu.m01c1_current", 0.1, [ins], {}) is None  # nothing stated for it


# -- over the real transport: `bench sim serve`, pyvisa-py on a TCP socket ------------------------


def _station(tmp: Path, transport: dict[str, Any], ntc: dict[str, Any] | None = None, **top: Any) -> Path:
    station = {
        "id": "cells-test",
        "title": "Cell emulator alone",
        "simulated": True,
        "virtual_time": "inproc" in transport,
        "devices": {
            "emu": {
                "driver": "cell_emulator",
                "config": {
                    "transport": transport,
                    "units": [1, 2],
                    "resistor_modules": [3],
                    "ntc": ntc or BETA,
                    "poll_interval": "200 ms",
                },
            }
        },
        **top,
    }
    return dump_yaml(station, tmp / ("served.yaml" if "visa" in transport else "inproc.yaml"))


def test_driver_over_tcp_scpi_served_by_bench_sim_serve(tmp_path: Path) -> None:
    can_port, scpi_port = free_ports(2)
    simulators = [{"kind": "cell_emulator", "devices": ["emu"], "config": {"units": 2, "resistor_modules": 1}}]
    inproc = _station(tmp_path, {"inproc": "cells"}, simulators=simulators)
    resource = f"TCPIP::127.0.0.1::{scpi_port}::SOCKET"
    served = _station(
        tmp_path,
        {"visa": resource, "timeout": "2 s"},
        serve={
            "simulators_from": str(inproc),
            "host": "127.0.0.1",
            "can": {"port": can_port, "channels": ["bench0"]},
            "scpi": {"cells": scpi_port},
            "serial_dir": str(tmp_path / "serial"),
        },
    )
    driver = build_drivers(load_station(served), ["emu"])["emu"]
    harness = Harness()

    async def main() -> dict[str, str]:
        async with connected(driver, harness, {}):
            await driver.set({driver.cell_signal(k, "voltage_set"): 3.5 + k / 100 for k in range(1, 17)})
            await driver.set({"all_current_limit": 1.0, "all_output": 1, "m02c8_fault": 1})
            await driver.set({"r01c4_temperature": 45.0})
            await asyncio.sleep(0.5)  # wall clock: polls after the outputs went on
            return await driver.identify()

    with sim_serve(served) as server:
        assert any(f"TCPIP::127.0.0.1::{scpi_port}::SOCKET" in line for line in server.banner)
        identity = asyncio.run(main())
        # What the served instrument itself holds, asked past the bench.
        assert scpi_query(scpi_port, "@2 SOUR:VOLT? (@7:8);:OUTP:FAUL? (@8)") == "3.6500,3.6600;OPENCIRCUIT"
        assert scpi_query(scpi_port, "@3 SOUR4:RES?") == f"{ntc_model(BETA).resistance(45.0):.6g}"
    assert harness.faults == []
    assert identity["model"] == "ABS" and "m02 (id 2): Bloomy Controls,ABS,SIMABS02" in identity["modules"]
    assert harness.last("emu.m01c3_voltage") == pytest.approx(3.53, abs=0.002)
    assert harness.last("emu.m02c8_fault") == 1
    assert harness.last("emu.r01c4_temperature") == pytest.approx(45.0, abs=0.001)
    assert isinstance(ntc_model(BETA), BetaModel)


def test_a_query_right_after_a_write_is_not_held_back_by_nagle() -> None:
    """The set's one write is followed at once by read-back queries: with Nagle's algorithm on the
    client socket, each such query waited for the delayed ACK of the write (40 ms on Linux)."""
    import socket

    from drivers.scpi import VisaTransport
    from simulators.serve_scpi import ScpiServer

    async def main() -> tuple[int, str]:
        server = ScpiServer("cells", _bus(units=1, resistors=0), port=0)
        await server.start()
        transport = VisaTransport("emu", f"TCPIP::127.0.0.1::{server.port}::SOCKET", timeout=2.0)
        try:
            await transport.write("@1 SOUR:VOLT 3.3,(@1:8)")
            reply = await transport.query("@1 SOUR8:VOLT?")
            link = transport._link
            assert link is not None and link.transport is not None
            nodelay = link.transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            return nodelay, reply
        finally:
            await transport.close()
            await server.stop()

    assert asyncio.run(main()) == (1, "3.3000")


# -- end to end: a sequence through the real CLI, in-process, virtual time -----------------------

SEQUENCE = """\
id: TEST-CELL-EMULATOR
title: cells and NTC channels set, read back and measured with the register's uncertainty
version: 1.0.0
basis: {standard: test, clause: cell emulator}
requires: [emu]
steps:
  - set: {emu.all_current_limit: 1 A, emu.all_voltage_set: 3.7 V, emu.all_output: ON}
  - set: {emu.m02c1_voltage_set: 4.05 V, emu.r01c2_temperature: 40 degC, emu.m01c3_fault: OPEN}
  - wait: 2 s
  - measure: {name: cell_9, signal: emu.m02c1_voltage, min: 4.04 V, max: 4.06 V}
  - measure: {name: cell_1, signal: emu.m01c1_voltage, min: 3.69 V, max: 3.71 V}
  - measure: {name: cell_2_current, signal: emu.m01c2_current, max: 0.1 A}
  - check: emu.m01c3_fault == OPEN and emu.r01c2_temperature > 39.99 degC
cleanup:
  - set: {emu.all_output: OFF, emu.all_fault: NONE}
"""


def test_a_sequence_sets_and_measures_cells_with_the_register_uncertainty(tmp_path: Path, reports: Path) -> None:
    from tests.conftest import bench

    simulators = [{"kind": "cell_emulator", "devices": ["emu"], "config": {"units": 2, "resistor_modules": 1}}]
    equipment = [
        {
            "asset_id": f"ABS-0{k}",
            "device": "emu",
            "maker": "Bloomy Controls",
            "model": "ABS",
            "serial": f"SIMABS0{k}",
            # One pattern entry covers the eight cells of each unit.
            "signals": {
                f"m0{k}c*_voltage": [{"range": "5 V", "reading_pct": 0.05, "absolute": "2 mV"}],
                # A pattern entry whose full scale does not read: the budget says which entry.
                f"m0{k}c*_current": [{"range": "5 furlongs"}],
            },
        }
        for k in (1, 2)
    ]
    station = _station(tmp_path, {"inproc": "cells"}, simulators=simulators, equipment=equipment)
    sequence = tmp_path / "cells.yaml"
    sequence.write_text(SEQUENCE)
    run = bench("run", sequence, "--station", station, "--reports", reports)
    assert run.rc == 0, run.out + run.err
    result = run.result()
    assert result["verdict"] == "PASS"
    cell = {m["name"]: m for m in result["measurements"]}["cell_9"]
    half = 0.0005 * 4.05 + 0.002
    assert cell["uncertainty"] == pytest.approx(2 * half / math.sqrt(3), rel=0.05)  # U stated to two digits
    assert any("ABS-02 accuracy" in line for line in cell["uncertainty_budget"])
    current = {m["name"]: m for m in result["measurements"]}["cell_2_current"]
    assert current["uncertainty"] is None
    assert current["uncertainty_budget"] == [
        "not evaluated: emu.m01c2_current: the accuracy of its instrument in the equipment register cannot be read"
    ]


def test_only_the_units_whose_measurements_a_run_reads_are_polled() -> None:
    spy = Spy(_bus(units=3, resistors=0))
    driver = make(CellEmulatorDriver, _config(units=3, resistors=0, poll_interval="100 ms"), "emu")
    harness = Harness()

    async def main() -> None:
        ctx = harness.context(asyncio.get_running_loop(), {"cells": spy})
        ctx.wanted = {"emu.m02c5_voltage", "emu.m03c1_voltage_set", "emu.all_output"}
        await driver.connect(ctx)
        try:
            spy.calls.clear()
            await asyncio.sleep(1.0)
        finally:
            await driver.close()

    run_virtual(main)
    polls = {c.split(" ", 1)[0] for c in spy.calls if "MEAS:VOLT?" in c}
    assert polls == {"@2"}  # unit 3's setpoint does not need its measurements
    assert len(spy.calls) == 10  # one query a poll interval
