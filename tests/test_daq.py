"""The lab's DAQ (Keysight DAQ970A style): the simulator's SCPI, its wiring to the pack's truth, and
the driver byte for byte, in-process against the plant and scripted."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from bench.device import ConfigError, load_plant_builder
from bench.errors import DeviceError
from bench.plan import build_drivers
from bench.station import load_station
from drivers.daq970a import Daq970aDriver, parse_channels, scan_list
from simulators.daq import OVERLOAD, Daq970a, DaqSpec, pack_wiring
from tests.conftest import SIM_STATION
from tests.expected_protocol import Harness, ScpiScript, connected, make, run_virtual, settle
from tests.served import sim_serve, write_stations

OK = '0,"No error"'


def _daq(sources: dict[int, Any] | None = None) -> Daq970a:
    return Daq970a(DaqSpec(noise_v=0.0, noise_c=0.0), sources or {}, random.Random(1))


# -- simulator ------------------------------------------------------------------------------------


def test_identity_names_the_model_and_serial() -> None:
    assert _daq().scpi("*IDN?") == "Keysight Technologies,DAQ970A,SIM00DAQ01,A.03.01-01.00-03.01-00.02-02-01"


def test_configure_redefines_the_scan_list_and_route_scan_sets_it() -> None:
    d = _daq({101: lambda: 4.1, 102: lambda: 4.2, 103: lambda: 25.5})
    d.scpi("CONF:VOLT:DC 10,(@101:102)")
    assert d.scpi("ROUT:SCAN:SIZE?") == "2"
    d.scpi("CONFigure:TEMPerature TC,K,(@103)")
    assert d.scpi("ROUT:SCAN:SIZE?") == "1"  # CONFigure replaced the list, as on the instrument
    d.scpi("ROUTe:SCAN (@101:103)")
    assert d.scpi("READ?") == "+4.10000000E+00,+4.20000000E+00,+2.55000000E+01"
    d.scpi("FORM:READ:CHAN ON")
    assert d.scpi("READ?") == "+4.10000000E+00,101,+4.20000000E+00,102,+2.55000000E+01,103"
    assert d.scpi("SYST:ERR?") == OK


def test_initiate_then_fetch_returns_the_stored_scan() -> None:
    value = [3.7]
    d = _daq({101: lambda: value[0]})
    d.scpi("CONF:VOLT:DC 10,(@101)")
    d.scpi("INIT")
    value[0] = 3.9
    assert d.scpi("FETC?") == "+3.70000000E+00"  # the scan INIT took, not a new one
    assert d.scpi("READ?") == "+3.90000000E+00"


def test_open_thermocouple_and_over_range_read_overload() -> None:
    d = _daq({101: lambda: 1.5})
    d.scpi("CONF:VOLT:DC 1,(@101)")
    d.scpi("CONF:TEMP TC,K,(@102)")
    d.scpi("ROUT:SCAN (@101:102)")
    assert [float(v) for v in (d.scpi("READ?") or "").split(",")] == [OVERLOAD, OVERLOAD]


@pytest.mark.parametrize(
    ("command", "error"),
    [
        ("ROUT:SCAN (@121)", '-222,"Data out of range"'),  # a DAQM901A has channels 1..20
        ("ROUT:SCAN (@401)", '-222,"Data out of range"'),  # three slots
        ("ROUT:SCAN 101", '-102,"Syntax error"'),
        ("CONF:TEMP TC,J,(@101)", '-224,"Illegal parameter value"'),  # only type K is simulated
        ("CONF:VOLT:DC 10", '-109,"Missing parameter"'),
        ("READ?", '-221,"Settings conflict"'),  # empty scan list
        ("MEAS:VOLT?", '-113,"Undefined header"'),
    ],
)
def test_bad_commands_queue_scpi_errors(command: str, error: str) -> None:
    d = _daq()
    d.scpi(command)
    assert d.scpi("SYST:ERR?") == error
    assert d.scpi("SYST:ERR?") == OK


def test_rst_clears_the_scan_list_and_the_channel_format() -> None:
    d = _daq()
    d.scpi("CONF:VOLT:DC 10,(@101:105);FORM:READ:CHAN ON")
    d.scpi("*RST")
    assert d.scpi("ROUT:SCAN:SIZE?;FORM:READ:CHAN?") == "0;0"


def test_wiring_puts_every_cell_then_the_thermocouples_on_consecutive_channels() -> None:
    frames = pack_wiring(192, 16)
    assert len(frames) == 4
    assert frames[0][101] == ("cell", 0) and frames[0][320] == ("cell", 59)
    assert frames[1][101] == ("cell", 60)
    assert frames[3][112] == ("cell", 191)
    assert frames[3][113] == ("tc", 0) and frames[3][208] == ("tc", 15)
    assert sum(len(f) for f in frames) == 208


# -- the plant: the DAQ sees the pack's truth, never the BMS's measurement -----------------------


def _plant(faults: list[str]) -> tuple[Any, dict[str, Any]]:
    station = load_station(SIM_STATION)
    sim = next(s for s in station.model.simulators if s.kind == "bms_pack")
    config = dict(sim.config)
    config["dbc"] = str((station.base_dir / str(config["dbc"])).resolve())
    registered: dict[str, Any] = {}
    plant = load_plant_builder("bms_pack")(config, faults=faults, seed=3, register=registered.__setitem__)
    return plant, registered


def _connect_station_daq(registered: dict[str, Any], seconds: float = 2.5) -> Harness:
    driver = build_drivers(load_station(SIM_STATION), ["daq"])["daq"]
    harness = Harness()

    async def main() -> None:
        async with connected(driver, harness, registered):
            await settle(seconds)

    run_virtual(main)
    assert harness.faults == []
    return harness


@pytest.mark.parametrize("faults", [[], ["cell_voltage_sensor_offset"], ["temp_sensor_stuck"]])
def test_station_daq_reads_the_true_extremes_whatever_the_bms_measures(faults: list[str]) -> None:
    plant, registered = _plant(faults)
    pack = plant.pack
    h = _connect_station_daq(registered)
    hi, lo = pack.max_cell(), pack.min_cell()
    # Within the simulated noise (20 uV), far inside the DAQ's accuracy (about 0.17 mV at 4 V).
    assert h.last("daq.cell_v_max") == pytest.approx(pack.cell_voltage(hi), abs=3e-5)
    assert h.last("daq.cell_v_min") == pytest.approx(pack.cell_voltage(lo), abs=3e-5)
    assert h.last("daq.cell_v_max_id") == hi + 1
    assert h.last("daq.cell_v_min_id") == lo + 1
    hot, cold = pack.hottest_sensor(), pack.coldest_sensor()
    assert h.last("daq.cell_t_max") == pytest.approx(pack.sensor_temp(hot), abs=0.06)
    assert h.last("daq.cell_t_min") == pytest.approx(pack.sensor_temp(cold), abs=0.06)
    # Polled every second, on all four mainframes.
    assert len([1 for n, _, _ in h.samples if n == "daq.cell_v_max"]) == 3


def test_the_bms_offset_shows_against_the_daq() -> None:
    plant, registered = _plant(["cell_voltage_sensor_offset"])
    plant.bms.measure()
    h = _connect_station_daq(registered)
    assert plant.bms.v_max - h.last("daq.cell_v_max") == pytest.approx(-0.050, abs=0.001)


# -- driver, byte for byte ------------------------------------------------------------------------

IDN = "Keysight Technologies,DAQ970A,MY58001234,A.02.04-00.16-11.29-00.02-02-01"
CONFIG: dict[str, Any] = {
    "transport": {"inproc": "daq"},
    "poll_interval": "1 s",
    "cells": "@101:103",
    "thermocouples": "@110:111",
}
SETUP = [
    ("*IDN?", IDN),
    ("*CLS", None),
    ("FORM:READ:CHAN ON", None),
    ("CONF:VOLT:DC 10,(@101:103)", None),
    ("CONF:TEMP TC,K,(@110:111)", None),
    ("ROUT:SCAN (@101:103,110:111)", None),
    ("SYST:ERR?", OK),
]
SCAN = "+4.10E+00,101,+4.25E+00,102,+4.05E+00,103,+2.61E+01,110,+2.48E+01,111"


def _scripted(script: ScpiScript, seconds: float, config: dict[str, Any] | None = None) -> Harness:
    h = Harness()

    async def main() -> None:
        d = make(Daq970aDriver, config or CONFIG, "daq")
        async with connected(d, h, {"daq": script}):
            await settle(seconds)

    run_virtual(main)
    script.assert_done()
    return h


def test_driver_sets_up_the_scan_and_publishes_the_extremes() -> None:
    h = _scripted(ScpiScript([*SETUP, ("READ?", SCAN)]), 0.5)
    assert h.last("daq.cell_v_max") == 4.25 and h.last("daq.cell_v_max_id") == 2
    assert h.last("daq.cell_v_min") == 4.05 and h.last("daq.cell_v_min_id") == 3
    assert h.last("daq.cell_t_max") == 26.1 and h.last("daq.cell_t_max_id") == 1
    assert h.last("daq.cell_t_min") == 24.8 and h.last("daq.cell_t_min_id") == 2


def test_an_overload_or_a_missing_channel_fails_the_poll_three_times_a_fault() -> None:
    overload = "+4.10E+00,101,+4.25E+00,102,+4.05E+00,103,+9.90000000E+37,110,+2.48E+01,111"
    missing = "+4.10E+00,101,+4.25E+00,102,+2.61E+01,110,+2.48E+01,111"
    script = ScpiScript([*SETUP, ("READ?", SCAN), ("READ?", overload), ("READ?", missing), ("READ?", overload)])
    h = _scripted(script, 3.5)
    assert h.faults == [
        (
            "daq",
            "3 readings in a row failed, last: mainframe 1: channel 110 reads overload (+9.90000000E+37):"
            " open thermocouple or tap?",
        )
    ]


def test_further_mainframes_are_identified_configured_and_scanned() -> None:
    config = {**CONFIG, "mainframes": [{"transport": {"inproc": "daq2"}, "cells": "@101:102"}]}
    second = ScpiScript(
        [
            ("*IDN?", IDN.replace("MY58001234", "MY58005678")),
            ("*CLS", None),
            ("FORM:READ:CHAN ON", None),
            ("CONF:VOLT:DC 10,(@101:102)", None),
            ("ROUT:SCAN (@101:102)", None),
            ("SYST:ERR?", OK),
            ("READ?", "+4.30E+00,101,+3.90E+00,102"),
        ]
    )
    h = Harness()

    async def main() -> dict[str, str]:
        d = make(Daq970aDriver, config, "daq")
        async with connected(d, h, {"daq": ScpiScript([*SETUP, ("READ?", SCAN)]), "daq2": second}):
            await settle(0.5)
            return await d.identify()

    identity = run_virtual(main)
    second.assert_done()
    assert identity["serial"] == "MY58001234"
    assert "mainframe 2: Keysight Technologies,DAQ970A,MY58005678" in identity["mainframes"]
    # Cells 4 and 5 are on the second mainframe.
    assert h.last("daq.cell_v_max") == 4.30 and h.last("daq.cell_v_max_id") == 4
    assert h.last("daq.cell_v_min") == 3.90 and h.last("daq.cell_v_min_id") == 5


def test_a_wrong_instrument_refuses_the_connection() -> None:
    async def main() -> str:
        d = make(Daq970aDriver, CONFIG, "daq")
        with pytest.raises(DeviceError) as info:
            await d.connect(Harness().context(asyncio.get_running_loop(), {"daq": script}))
        return str(info.value)

    script = ScpiScript([("*IDN?", "YOKOGAWA,WT5000,1,F1")])
    assert run_virtual(main) == "daq: *IDN? answered 'YOKOGAWA,WT5000,1,F1': not a Keysight DAQ970A / DAQ973A"


def test_config_is_checked_at_load() -> None:
    with pytest.raises(ConfigError, match="channel 401 is not sccc"):
        make(Daq970aDriver, {**CONFIG, "cells": "@401"})
    with pytest.raises(ConfigError, match="channel 102 is listed twice"):
        make(Daq970aDriver, {**CONFIG, "thermocouples": "@102"})
    with pytest.raises(ConfigError, match="expected a channel list"):
        make(Daq970aDriver, {**CONFIG, "cells": 101})
    with pytest.raises(ConfigError, match="unknown key"):
        make(Daq970aDriver, {**CONFIG, "mainframes": [{"transport": {"inproc": "x"}, "cell": "@101"}]})


def test_channel_lists_round_trip() -> None:
    channels = parse_channels("@101:120,201:205,207", "cells")
    assert len(channels) == 26
    assert scan_list(channels) == "(@101:120,201:205,207)"


def test_station_cells_cover_the_whole_pack() -> None:
    driver = build_drivers(load_station(SIM_STATION), ["daq"])["daq"]
    assert isinstance(driver, Daq970aDriver)
    assert (driver.cell_count, driver.tc_count) == (192, 16)


# -- over the real transport: `bench sim serve`, pyvisa-py on TCP sockets ------------------------


def test_station_daq_over_tcp_scpi(tmp_path_factory: pytest.TempPathFactory) -> None:
    stations = write_stations(tmp_path_factory.mktemp("daq-served"), initial_soc=50.0)
    driver = build_drivers(load_station(stations.served), ["daq"])["daq"]
    harness = Harness()

    async def main() -> dict[str, str]:
        async with connected(driver, harness, {}):
            await asyncio.sleep(2.5)  # wall clock: at least one more scan of all four mainframes
            return await driver.identify()

    with sim_serve(stations.served):
        identity = asyncio.run(main())
    assert harness.faults == []
    assert identity["serial"] == "SIM00DAQ01"
    assert "mainframe 4: Keysight Technologies,DAQ970A,SIM00DAQ04" in identity["mainframes"]
    # The scan at connect and the one due at 1 s (a loaded machine may delay the one due at 2 s).
    assert len([1 for n, _, _ in harness.samples if n == "daq.cell_v_max"]) >= 2
    # Half-charged NMC cells at rest, the pack at ambient.
    assert 3.7 < harness.last("daq.cell_v_min") < harness.last("daq.cell_v_max") < 3.9
    assert 1 <= harness.last("daq.cell_v_max_id") <= 192
    assert 24.0 < harness.last("daq.cell_t_min") <= harness.last("daq.cell_t_max") < 26.0
    assert 1 <= harness.last("daq.cell_t_max_id") <= 16


def test_daq_signals_carry_the_register_accuracy_into_the_uncertainty() -> None:
    from bench.report.equipment import signal_uncertainty

    model = load_station(SIM_STATION).model
    # 4.2 V on the 10 V range: +/-(0.0030 % x 4.2 V + 0.0004 % x 10 V) = 166 uV, rectangular.
    volt = signal_uncertainty("daq.cell_v_max", 4.2, model.equipment, model.signal_sources)
    assert volt is not None and volt.expanded_base == pytest.approx(2 * 166e-6 / 3**0.5, rel=0.01)
    assert "SIM-DAQ-01" in volt.budget[0]
    # Type K: +/-1.0 degC, rectangular (the value is in kelvin, the base unit).
    temp = signal_uncertainty("daq.cell_t_min", 298.15, model.equipment, model.signal_sources)
    assert temp is not None and temp.expanded_base == pytest.approx(2 * 1.0 / 3**0.5, rel=0.01)
    # Every mainframe is in the register, with its own calibration.
    daq = [i for i in model.equipment if i.device == "daq"]
    assert [i.serial for i in daq] == ["SIM00DAQ01", "SIM00DAQ02", "SIM00DAQ03", "SIM00DAQ04"]
    assert all(i.calibration is not None for i in daq)


def test_per_channel_signals_when_asked() -> None:
    config = {**CONFIG, "per_channel": True}
    names = [s.name for s in make(Daq970aDriver, config, "daq").signals()]
    assert [n for n in names if n[len("daq.cell_v_") :].isdigit() or n[len("daq.cell_t_") :].isdigit()] == [
        "daq.cell_v_1", "daq.cell_v_2", "daq.cell_v_3", "daq.cell_t_1", "daq.cell_t_2",
    ]  # fmt: skip
    h = _scripted(ScpiScript([*SETUP, ("READ?", SCAN)]), 0.5, config)
    assert (h.last("daq.cell_v_2"), h.last("daq.cell_v_3"), h.last("daq.cell_t_1")) == (4.25, 4.05, 26.1)
    # Off by default: only the extremes.
    assert "daq.cell_v_1" not in {s.name for s in make(Daq970aDriver, CONFIG, "daq").signals()}
    with pytest.raises(ConfigError, match="per_channel: expected true or false"):
        make(Daq970aDriver, {**CONFIG, "per_channel": "yes"})
