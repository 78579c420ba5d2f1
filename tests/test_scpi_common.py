"""IEEE 488.2 common commands and status registers: one test that every simulated SCPI instrument passes.

The instruments are whatever the simulators of stations/sim.yaml register with a ``scpi(line)``
handler, so a new one is covered (and must say what its ``*RST`` restores, in ``RESETS``); each
unit on an addressed bus (the cell emulator's RS-485 bus, lines ``@<id> ...``) is an instrument
of its own, ``<endpoint>@<id>``. The same test runs in-process (the drivers' ``inproc`` transport) and against ``bench sim serve``
over real TCP sockets (pyvisa-py ``TCPIP::...::SOCKET``, the drivers' ``visa`` transport). And
each station driver leaves its instrument's status clear after connecting (``*CLS`` clears PON).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from bench.device import load_plant_builder
from bench.plan import build_drivers
from bench.station import load_station
from drivers.cell_emulator import AddressedTransport
from drivers.scpi import InProcTransport, ScpiTransport, VisaTransport
from simulators.scpi_device import (
    ESR_CME,
    ESR_DDE,
    ESR_EXE,
    ESR_OPC,
    ESR_PON,
    ESR_QYE,
    STB_EAV,
    STB_ESB,
    STB_MAV,
    STB_MSS,
    ScpiDevice,
    event_bit,
)
from simulators.serve import is_scpi
from tests.expected_protocol import Harness, connected, run_virtual, settle
from tests.served import SIM_STATION, Served, Stations, sim_serve, write_stations


@dataclass(frozen=True)
class Reset:
    """Settings a command changes and ``*RST`` puts back: ``query`` answers ``power_on`` after it."""

    change: str
    query: str
    power_on: str


# Per endpoint of sim.yaml: what *RST restores (None: the instrument has no setting *RST touches).
RESETS: dict[str, Reset | None] = {
    "psu": Reset("SYST:LOCK ON;SOUR:VOLT 100;SOUR:CURR 2;OUTP ON", "OUTP?;SOUR:VOLT?;SOUR:CURR?", "OFF;0.00 V;0.00 A"),
    "pa": Reset(":NUM:NORM:ITEM1 WP,1;:NUM:NORM:NUMB 1", ":NUM:NORM:NUMB?;:NUM:NORM:ITEM1?", "3;U,1"),
    "fib": Reset("SHOR:RES 0.5;HEAT 10", "SHOR:RES?;HEAT?", "100.0;0.0"),
    "emu": None,  # SOC is the emulated pack's state, not a setting: *RST leaves it
    "chamber": Reset("TEMP 80;RAMP 2;COOL OFF", "TEMP:SET?;RAMP?;COOL?", "25.00;0.00;ON"),
    "fcio": Reset("VALV:POW 0", "VALV:POW?", "1"),
    **{
        daq: Reset("CONF:VOLT:DC 10,(@101:105);FORM:READ:CHAN ON", "ROUT:SCAN:SIZE?;FORM:READ:CHAN?", "0;0")
        for daq in ("daq", "daq2", "daq3", "daq4")  # the four mainframes of the station's DAQ
    },
    # The cell emulator's bus: two ABS units (*RST: every cell off, setpoints zero) and a resistor module.
    **{
        abs_unit: Reset("SOUR1:VOLT 3.3;:OUTP1 1", "SOUR1:VOLT?;:OUTP1?", "0.0000;0")
        for abs_unit in ("cells@1", "cells@2")
    },
    "cells@3": Reset("SOUR1:RES 4700;:OUTP1:FAUL OPEN", "SOUR1:RES?;:OUTP1:FAUL?", "10000;NONE"),
}


@dataclass(frozen=True)
class Instrument:
    endpoint: str
    handler: ScpiDevice

    @property
    def error_query(self) -> str:
        return self.handler.error_query

    def error(self, scpi_code: int, text: str) -> str:
        code = abs(scpi_code) if self.handler.positive_error_codes else scpi_code
        return f'{code},"{text}"'


def registered_endpoints() -> dict[str, Any]:
    """Every SCPI endpoint the simulators of sim.yaml register, freshly powered on."""
    station = load_station(SIM_STATION)
    registered: dict[str, Any] = {}
    for i, sim in enumerate(station.model.simulators):
        config = dict(sim.config)
        if "dbc" in config:
            config["dbc"] = str((station.base_dir / str(config["dbc"])).resolve())
        load_plant_builder(sim.kind)(config, faults=[], seed=i, register=registered.__setitem__)
    return {name: obj for name, obj in registered.items() if is_scpi(obj)}


def instruments_of(endpoints: dict[str, Any]) -> dict[str, ScpiDevice]:
    """The instruments behind ``endpoints``: each unit of an addressed bus as ``<endpoint>@<id>``."""
    scpi: dict[str, Any] = {}
    for name, obj in endpoints.items():
        units = getattr(obj, "units", None)
        scpi.update({f"{name}@{uid}": unit for uid, unit in units.items()} if isinstance(units, dict) else {name: obj})
    for name, obj in scpi.items():
        assert isinstance(obj, ScpiDevice), f"{name}: a simulated SCPI instrument must build on ScpiDevice"
    return scpi


def simulated_instruments() -> dict[str, ScpiDevice]:
    return instruments_of(registered_endpoints())


def split(endpoint: str) -> tuple[str, int | None]:
    """The endpoint an instrument is reached at, and its address on that bus (None: it is alone there)."""
    name, _, address = endpoint.partition("@")
    return name, int(address) if address else None


ENDPOINTS = sorted(RESETS)


def test_every_simulated_scpi_instrument_is_covered() -> None:
    assert sorted(simulated_instruments()) == ENDPOINTS


async def ask(t: ScpiTransport, text: str) -> str:
    return (await t.query(text)).strip()


async def common_commands(t: ScpiTransport, inst: Instrument) -> None:
    """The IEEE 488.2 mandatory common commands, as a lab program would send them first."""
    # Power-on: PON is the first event; reading the ESR clears it.
    assert int(await ask(t, "*ESR?")) == ESR_PON
    assert await ask(t, "*ESR?") == "0"
    idn = await ask(t, "*IDN?")
    assert idn == inst.handler.identity() and len(idn.split(",")) == 4
    assert await ask(t, "*TST?") == "0"
    assert await ask(t, "*STB?") == "0"
    assert await ask(t, inst.error_query) == inst.error(0, "No error")

    # *OPC? answers at once and sets no event; *OPC sets OPC; *WAI has nothing to wait for.
    assert await ask(t, "*OPC?") == "1"
    assert await ask(t, "*ESR?") == "0"
    await t.write("*OPC;*WAI")
    assert int(await ask(t, "*ESR?")) == ESR_OPC

    # Enable masks read back; bit 6 of *SRE is ignored.
    await t.write(f"*ESE {ESR_CME}")
    await t.write("*SRE 255")
    assert await ask(t, "*ESE?;*SRE?") == f"{ESR_CME};{255 & ~STB_MSS}"
    await t.write(f"*SRE {STB_ESB}")
    assert await ask(t, "*SRE?") == str(STB_ESB)

    # MAV: a reply of the same line is waiting in the output queue when *STB? is parsed.
    idn_stb = await ask(t, "*IDN?;*STB?")
    assert idn_stb.rsplit(";", 1) == [idn, str(STB_MAV)]

    # A command error: -113 queued, CME in the ESR, ESB (CME is enabled) and MSS (ESB is enabled).
    await t.write("BOGUS:HEADER 1")
    assert int(await ask(t, "*STB?")) == STB_EAV | STB_ESB | STB_MSS
    assert int(await ask(t, "*STB?")) == STB_EAV | STB_ESB | STB_MSS  # reading the STB clears nothing
    assert int(await ask(t, "*ESR?")) == ESR_CME
    assert int(await ask(t, "*STB?")) == STB_EAV  # the ESR is cleared; the error is still queued
    assert await ask(t, inst.error_query) == inst.error(-113, "Undefined header")
    assert await ask(t, inst.error_query) == inst.error(0, "No error")
    assert await ask(t, "*STB?") == "0"

    # Bad register values: out of range is an execution error, no value a command error.
    await t.write("*ESE 256")
    assert int(await ask(t, "*ESR?")) == ESR_EXE
    await t.write("*SRE")
    assert int(await ask(t, "*ESR?")) == ESR_CME
    await t.write("*CLS 1")
    assert int(await ask(t, "*ESR?")) == ESR_CME
    assert await ask(t, f"{inst.error_query};{inst.error_query};{inst.error_query};{inst.error_query}") == ";".join(
        [
            inst.error(-222, "Data out of range"),
            inst.error(-109, "Missing parameter"),
            inst.error(-108, "Parameter not allowed"),
            inst.error(0, "No error"),
        ]
    )
    assert await ask(t, "*ESE?") == str(ESR_CME)  # the refused value changed nothing

    # A full error queue: the overflow is a device-dependent error.
    for _ in range(25):
        await t.write("BOGUS")
    assert int(await ask(t, "*ESR?")) == ESR_CME | ESR_DDE

    # *CLS clears the ESR and the error queue; the enable masks stay.
    await t.write("BOGUS;*OPC")
    await t.write("*CLS")
    assert await ask(t, "*ESR?;*STB?") == f"0;{STB_MAV}"  # MAV: the ESR's reply waits in the output queue
    assert await ask(t, inst.error_query) == inst.error(0, "No error")
    assert await ask(t, "*ESE?;*SRE?") == f"{ESR_CME};{STB_ESB}"

    # *RST: the device settings to their power-on state; status, masks and queue untouched.
    reset = RESETS[inst.endpoint]
    await t.write("*OPC")
    if reset is not None:
        await t.write(reset.change)
        assert await ask(t, reset.query) != reset.power_on, "the change must show before *RST"
    await t.write("*RST")
    if reset is not None:
        assert await ask(t, reset.query) == reset.power_on
    assert int(await ask(t, "*ESR?")) == ESR_OPC
    assert await ask(t, "*ESE?;*SRE?") == f"{ESR_CME};{STB_ESB}"
    assert await ask(t, inst.error_query) == inst.error(0, "No error")

    # Leave the instrument as found: masks off.
    await t.write("*ESE 0;*SRE 0")
    assert await ask(t, "*ESE?;*SRE?") == "0;0"
    assert await ask(t, "*STB?") == "0"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_common_commands_in_process(endpoint: str) -> None:
    handler = simulated_instruments()[endpoint]
    asyncio.run(common_commands(InProcTransport(handler), Instrument(endpoint, handler)))


@pytest.fixture(scope="module")
def stations(tmp_path_factory: pytest.TempPathFactory) -> Stations:
    return write_stations(tmp_path_factory.mktemp("common"), initial_soc=50)


@pytest.fixture(scope="module")
def served(stations: Stations) -> Iterator[Served]:
    with sim_serve(stations.served) as s:
        yield s


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_common_commands_served_over_tcp(endpoint: str, stations: Stations, served: Served) -> None:
    # The served instrument was built from the same simulator config: the same class and *IDN?.
    twin = simulated_instruments()[endpoint]
    assert served.proc.poll() is None

    async def main() -> None:
        name, address = split(endpoint)
        transport: ScpiTransport = VisaTransport(name, stations.visa(name), timeout=5.0)
        if address is not None:
            transport = AddressedTransport(transport, address)
        try:
            await common_commands(transport, Instrument(endpoint, twin))
        finally:
            await transport.close()

    asyncio.run(main())


def test_error_classes_set_their_event_bits() -> None:
    # Query errors (-4xx) cannot be provoked over the wire (replies go out with their line).
    assert [event_bit(c) for c in (-113, -222, -350, -410, -500)] == [ESR_CME, ESR_EXE, ESR_DDE, ESR_QYE, ESR_PON]
    # Yokogawa's positive numbering keeps SCPI's classes.
    assert [event_bit(c) for c in (113, 221, 350, 420)] == [ESR_CME, ESR_EXE, ESR_DDE, ESR_QYE]


def test_served_station_serves_every_simulated_scpi_instrument(stations: Stations) -> None:
    assert sorted(stations.scpi) == sorted({split(e)[0] for e in ENDPOINTS})


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_the_driver_clears_the_power_on_status_at_connect(endpoint: str) -> None:
    # The station's driver for this instrument, connected to it in-process: its *CLS at connect
    # clears PON, and nothing it sends while connecting and polling raises an event or queues one.
    station = load_station(SIM_STATION)
    # A device may span several instruments (the DAQ's further mainframes are in its `mainframes`).
    name, _ = split(endpoint)
    device = next(
        n
        for n, d in station.model.devices.items()
        if {"inproc": name} in [d.config.get("transport"), *(m["transport"] for m in d.config.get("mainframes", []))]
    )
    driver = build_drivers(station, [device])[device]
    endpoints = registered_endpoints()
    handler = instruments_of(endpoints)[endpoint]
    harness = Harness()

    async def main() -> None:
        async with connected(driver, harness, endpoints):
            await settle(2.0)  # a few polls
            assert handler.scpi("*ESR?;*STB?") == f"0;{STB_MAV}"
            assert handler.scpi(handler.error_query) == Instrument(endpoint, handler).error(0, "No error")

    run_virtual(main)
    assert not harness.faults
