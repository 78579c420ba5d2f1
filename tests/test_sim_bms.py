"""The simulated station end to end: a test BENCH node on the in-process CAN link drives the
BMS model, the supply is driven through its SCPI text, all on a virtual-time event loop.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import can
import cantools
import pytest

from simulators import e2e
from simulators.bms_firmware import FrameCodec
from simulators.plant import Plant, build_plant, fault_catalogue
from tests.expected_protocol import run_virtual

DBC = str(Path(__file__).resolve().parents[1] / "dbc" / "bms.dbc")
DB: Any = cantools.database.load_file(DBC)
_channels = itertools.count()


class BenchNode:
    """Sends BENCH_Command every 100 ms and records every decoded BMS frame."""

    def __init__(self, channel: str) -> None:
        bus: Any = can.Bus(interface="inproc", channel=channel)  # InProcBus
        bus.add_listener(self._rx)
        self.bus = bus
        self.frames: list[tuple[float, str, dict[str, Any], bytes]] = []
        self.contactors = 0
        self.clear = 0
        self.sending = True
        self.bad_crc = False
        self.freeze_alive = False
        self._alive = 0
        self._cmd = DB.get_message_by_name("BENCH_Command")
        self._task: asyncio.Task[None] | None = None

    def _rx(self, msg: can.Message) -> None:
        m = DB.get_message_by_frame_id(msg.arbitration_id)
        self.frames.append((msg.timestamp, m.name, m.decode(msg.data), bytes(msg.data)))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            if self.sending:
                self.send_command()
            await asyncio.sleep(0.1)

    def send_command(self) -> None:
        if not self.freeze_alive:
            self._alive = e2e.next_alive(self._alive)
        values = {
            "cmd_contactors": self.contactors,
            "cmd_clear_faults": self.clear,
            "cmd_balancing": 0,
            "cmd_alive": self._alive,
            "cmd_crc": 0,
        }
        data = e2e.seal(bytearray(self._cmd.encode(values)))
        if self.bad_crc:
            data[7] ^= 0xFF
        self.bus.send(can.Message(arbitration_id=self._cmd.frame_id, data=data, is_extended_id=False))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.bus.shutdown()

    def of(self, name: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, v) for t, n, v, _ in self.frames if n == name]

    def latest(self, name: str) -> dict[str, Any]:
        return self.of(name)[-1][1]

    def first(self, name: str, pred: Callable[[dict[str, Any]], bool], after: float = -1.0) -> float | None:
        return next((t for t, v in self.of(name) if t > after and pred(v)), None)


class Station:
    def __init__(self, plant: Plant, bench: BenchNode, psu: Any) -> None:
        self.plant, self.bench, self.psu = plant, bench, psu

    def scpi(self, line: str) -> str | None:
        reply: str | None = self.psu.scpi(line)
        return reply


def scenario(
    body: Callable[[Station], Awaitable[None]], faults: tuple[str, ...] = (), seed: int = 1, **config: Any
) -> None:
    async def main() -> None:
        channel = f"test-sim-bms-{next(_channels)}"
        endpoints: dict[str, Any] = {}
        # 60 A into a ~800 V pack needs more than the PSB 11000-80's 30 kW.
        cfg = {"dbc": DBC, "can_channel": channel, "supply": {"power_max_w": 60000}, **config}
        plant = build_plant(cfg, faults=faults, seed=seed, register=endpoints.__setitem__)
        await plant.start()
        bench = BenchNode(channel)
        bench.start()
        try:
            await body(Station(plant, bench, endpoints["psu"]))
        finally:
            await bench.stop()
            await plant.stop()

    run_virtual(main)


def charge(st: Station, volts: float = 1000.0, amps: float = 60.0) -> None:
    st.scpi(f"SYST:LOCK ON;SOUR:VOLT {volts};SOUR:CURR {amps};SOUR:POW MAX;OUTP ON")


def discharge(st: Station, amps: float = 60.0) -> None:
    st.scpi(f"SYST:LOCK ON;SOUR:VOLT 0;SINK:CURR {amps};OUTP ON")


async def close_contactors(st: Station) -> float:
    st.bench.contactors = 1
    await asyncio.sleep(1.0)
    assert st.bench.latest("BMS_Status")["contactors"] == "CLOSED"
    return asyncio.get_running_loop().time()


def status_at(bench: BenchNode, t: float) -> dict[str, Any]:
    return [v for ts, v in bench.of("BMS_Status") if ts <= t][-1]


# -- codec and cyclic schedule ------------------------------------------------------------------


@pytest.mark.parametrize("name", [m.name for m in DB.messages])
def test_codec_matches_cantools(name: str) -> None:
    msg = DB.get_message_by_name(name)
    codec = FrameCodec(msg)
    for mux, names in codec.groups().items():
        for k in range(20):
            values: dict[str, float] = {}
            for sig in msg.signals:
                if sig.name in names:
                    span = (sig.maximum or 0) - (sig.minimum or 0)
                    raw = round(
                        ((sig.minimum or 0) + span * ((k * 37 + len(values) * 11) % 100) / 100 - sig.offset) / sig.scale
                    )
                    values[sig.name] = raw * sig.scale + sig.offset
            if mux is not None:
                values[codec.mux or ""] = mux
            assert bytes(codec.encode(values)) == msg.encode(values, strict=False)
            decoded = codec.decode(msg.encode(values, strict=False))
            assert decoded == pytest.approx(values)


def test_every_bms_message_at_its_cycle_time_with_e2e() -> None:
    async def body(st: Station) -> None:
        await asyncio.sleep(10.0)
        bench = st.bench
        for m in DB.messages:
            if "BMS" in m.senders:
                stamps = [t for t, _ in bench.of(m.name)]
                assert len(stamps) == pytest.approx(10.0 / (m.cycle_time / 1000), abs=1), m.name
                gaps = {round(b - a, 9) for a, b in itertools.pairwise(stamps)}
                assert gaps == {m.cycle_time / 1000}, m.name  # absolute deadlines: no drift
        statuses = [(v, raw) for _, n, v, raw in bench.frames if n == "BMS_Status"]
        alive = [v["status_alive"] for v, _ in statuses]
        assert all(b == (a + 1) % 16 for a, b in itertools.pairwise(alive))
        assert all(e2e.crc_ok(raw) for _, raw in statuses)
        groups = [v["cell_group"] for _, v in bench.of("BMS_CellVoltages")]
        assert groups[:70] == [*range(64), *range(6)]
        status = bench.latest("BMS_Status")
        assert status["bms_state"] == "STANDBY" and status["contactors"] == "OPEN"
        iso = bench.latest("BMS_Isolation")
        assert iso["iso_resistance"] == 5000 and iso["iso_valid"] == "VALID"

    scenario(body)


def test_cell_voltage_frames_agree_with_cell_stats() -> None:
    async def body(st: Station) -> None:
        await asyncio.sleep(6.5)  # one full sweep at rest
        cells: dict[int, float] = {}
        for _, v in st.bench.of("BMS_CellVoltages")[:64]:
            cells.update({int(k[-3:]): x for k, x in v.items() if k.startswith("cell_v_")})
        assert len(cells) == 192
        stats = st.bench.latest("BMS_CellStats")
        assert max(cells.values()) == pytest.approx(stats["cell_v_max"], abs=1e-9)
        assert min(cells.values()) == pytest.approx(stats["cell_v_min"], abs=1e-9)
        assert cells[stats["cell_v_max_id"]] == max(cells.values())
        assert sum(cells.values()) / 192 == pytest.approx(stats["cell_v_avg"], abs=0.003)

    scenario(body)


# -- contactors and charging ---------------------------------------------------------------------


def test_contactors_precharge_then_close_and_current_flows() -> None:
    async def body(st: Station) -> None:
        bench = st.bench
        await asyncio.sleep(0.5)
        bench.contactors = 1
        t_cmd = asyncio.get_running_loop().time()
        await asyncio.sleep(1.0)
        t_pre = bench.first("BMS_Status", lambda v: v["contactors"] == "PRECHARGE")
        t_closed = bench.first("BMS_Status", lambda v: v["contactors"] == "CLOSED")
        assert t_pre is not None and t_closed is not None
        assert t_cmd < t_pre < t_cmd + 0.25
        assert t_closed - t_pre == pytest.approx(0.3, abs=0.11)
        assert bench.latest("BMS_Status")["bms_state"] == "CONNECTED"
        charge(st, volts=1000, amps=50)
        await asyncio.sleep(60.0)
        pv = bench.latest("BMS_PackValues")
        assert pv["pack_current"] == pytest.approx(50.0, abs=0.1)
        assert pv["link_voltage"] == pytest.approx(pv["pack_voltage"], abs=0.2)
        reply = st.scpi("MEAS:CURR?;MEAS:VOLT?")
        assert reply is not None
        amps, volts = (float(x.split()[0]) for x in reply.split(";"))
        assert amps == pytest.approx(50.0, abs=0.05) and volts == pytest.approx(pv["pack_voltage"], abs=0.2)
        bench.contactors = 0
        await asyncio.sleep(0.5)
        assert bench.latest("BMS_Status")["contactors"] == "OPEN"
        assert bench.latest("BMS_PackValues")["pack_current"] == 0.0
        volts_open = str(st.scpi("MEAS:VOLT?"))
        assert volts_open.endswith(" V") and float(volts_open[:-2]) == pytest.approx(1000.0, abs=0.06)

    scenario(body)


def test_cv_phase_tapers_current_and_power_limit_holds() -> None:
    async def body(st: Station) -> None:
        await close_contactors(st)
        st.scpi("SYST:LOCK ON;SOUR:VOLT 1000;SOUR:CURR 80;SOUR:POW 30000;OUTP ON")
        await asyncio.sleep(5.0)
        pv = st.bench.latest("BMS_PackValues")
        assert pv["pack_voltage"] * pv["pack_current"] == pytest.approx(30000, rel=0.01)
        ocv_v = st.plant.pack.ocv_pack()
        st.scpi(f"SOUR:VOLT {ocv_v + 2.0:.1f}")
        await asyncio.sleep(5.0)
        assert 0 < st.bench.latest("BMS_PackValues")["pack_current"] < 15

    scenario(body, faults=("overvoltage_protection_disabled",))


# -- protections -----------------------------------------------------------------------------


def _ov_trip_times(st: Station) -> tuple[float, float, float]:
    bench = st.bench
    t_ov = bench.first("BMS_CellStats", lambda v: v["cell_v_max"] > st.plant.bms.ov_threshold_v)
    t_fault = bench.first("BMS_Status", lambda v: v["fault_cell_ov"] == "ACTIVE")
    assert t_ov is not None and t_fault is not None
    t_open = bench.first("BMS_Status", lambda v: v["contactors"] == "OPEN", after=t_fault - 1e-9)
    assert t_open is not None
    return t_ov, t_fault, t_open


def test_overvoltage_trip_opens_contactors_in_time() -> None:
    async def body(st: Station) -> None:
        await close_contactors(st)
        charge(st)
        await asyncio.sleep(600.0)
        t_ov, _, t_open = _ov_trip_times(st)
        # condition seen in a frame <= one cycle after the BMS saw it; open reported <= one cycle after
        assert 0.2 - 0.1 <= t_open - t_ov <= 0.2 + 0.1 + 0.1 + 1e-6
        status = st.bench.latest("BMS_Status")
        assert status["bms_state"] == "FAULT" and status["contactors"] == "OPEN"
        assert st.bench.latest("BMS_PackValues")["pack_current"] == 0.0
        assert st.bench.latest("BMS_Limits")["charge_current_limit"] == 0.0
        assert status_at(st.bench, t_ov)["fault_cell_ov"] == "OK"
        # a latched fault blocks closing while its condition persists under the CLOSE request
        await asyncio.sleep(5.0)
        assert st.bench.latest("BMS_Status")["contactors"] == "OPEN"

    scenario(body, initial_soc_pct=98.5)


def test_overvoltage_protection_disabled_keeps_charging() -> None:
    async def body(st: Station) -> None:
        await close_contactors(st)
        charge(st)
        await asyncio.sleep(900.0)
        status = st.bench.latest("BMS_Status")
        assert status["contactors"] == "CLOSED" and status["fault_cell_ov"] == "OK"
        assert st.bench.latest("BMS_CellStats")["cell_v_max"] > 4.5

    scenario(body, faults=("overvoltage_protection_disabled",), initial_soc_pct=98.5)


def test_ov_threshold_high_trips_late() -> None:
    async def body(st: Station) -> None:
        await close_contactors(st)
        charge(st)
        await asyncio.sleep(900.0)
        t_ov, _, _ = _ov_trip_times(st)
        before = [v["cell_v_max"] for t, v in st.bench.of("BMS_CellStats") if t <= t_ov]
        assert before[-1] > 4.38 and max(before[:-1]) <= 4.40

    scenario(body, faults=("ov_threshold_high",), initial_soc_pct=98.5)


def test_cell_voltage_sensor_offset_reports_low_and_trips_late() -> None:
    async def body(st: Station) -> None:
        await asyncio.sleep(1.0)
        pack = st.plant.pack
        true_max = pack.cell_voltage(pack.max_cell())
        assert st.bench.latest("BMS_CellStats")["cell_v_max"] == pytest.approx(true_max - 0.050, abs=0.0011)
        await close_contactors(st)
        charge(st)
        for _ in range(6000):
            if st.plant.bms.tripped:
                break
            await asyncio.sleep(0.1)
        assert pack.cell_voltage(pack.max_cell()) > 4.29  # really 4.30 V when the BMS sees 4.25 V

    scenario(body, faults=("cell_voltage_sensor_offset",), initial_soc_pct=98.5)


def test_slow_reaction_takes_two_seconds() -> None:
    async def body(st: Station) -> None:
        await close_contactors(st)
        charge(st)
        await asyncio.sleep(600.0)
        _, t_fault, t_open = _ov_trip_times(st)
        assert 1.9 <= t_open - t_fault <= 2.15

    scenario(body, faults=("slow_reaction",), initial_soc_pct=98.5)


def test_undervoltage_trip_and_disabled() -> None:
    async def body(st: Station) -> None:
        await close_contactors(st)
        discharge(st)
        await asyncio.sleep(400.0)
        status = st.bench.latest("BMS_Status")
        assert status["fault_cell_uv"] == "ACTIVE" and status["contactors"] == "OPEN"

    scenario(body, initial_soc_pct=1.5)

    async def disabled(st: Station) -> None:
        await close_contactors(st)
        discharge(st)
        await asyncio.sleep(400.0)
        assert st.bench.latest("BMS_Status")["contactors"] == "CLOSED"
        assert st.bench.latest("BMS_CellStats")["cell_v_min"] < 2.9

    scenario(disabled, faults=("undervoltage_protection_disabled",), initial_soc_pct=1.5)


def test_overtemperature_trip_and_thermal_event_warning() -> None:
    async def body(st: Station) -> None:
        await close_contactors(st)
        charge(st)
        await asyncio.sleep(1200.0)
        status = st.bench.latest("BMS_Status")
        assert status["fault_cell_ot"] == "ACTIVE" and status["contactors"] == "OPEN"
        peak = max(v["cell_temp_max"] for _, v in st.bench.of("BMS_Temperatures"))
        assert 60.0 < peak < 61.0
        assert st.bench.latest("BMS_Temperatures")["cell_temp_max"] < peak  # cooling once open

    scenario(body, faults=("overvoltage_protection_disabled",), initial_soc_pct=100.0, initial_temp_c=54.0)

    async def runaway(st: Station) -> None:
        await close_contactors(st)
        charge(st)
        await asyncio.sleep(1200.0)
        status = st.bench.latest("BMS_Status")
        assert status["contactors"] == "CLOSED" and status["fault_cell_ot"] == "OK"
        assert status["warn_thermal_event"] == "ACTIVE"
        assert st.bench.latest("BMS_Temperatures")["cell_temp_max"] > 70.0

    scenario(
        runaway,
        faults=("overvoltage_protection_disabled", "overtemperature_protection_disabled"),
        initial_soc_pct=100.0,
        initial_temp_c=66.0,
    )


# -- contactor and communication faults -----------------------------------------------------------


def test_contactor_welded() -> None:
    async def body(st: Station) -> None:
        await close_contactors(st)
        charge(st, amps=20)
        st.bench.contactors = 0
        await asyncio.sleep(1.0)
        status = st.bench.latest("BMS_Status")
        assert status["contactors"] == "WELDED"
        assert status["fault_contactor"] == "ACTIVE" and status["warn_control_failure"] == "ACTIVE"
        assert status["bms_state"] == "FAULT"
        assert st.bench.latest("BMS_PackValues")["pack_current"] == pytest.approx(20.0, abs=0.1)

    scenario(body, faults=("contactor_welded",))


def test_watchdog_opens_contactors_when_bench_command_stops() -> None:
    async def body(st: Station) -> None:
        t_closed = await close_contactors(st)
        charge(st, amps=20)
        await asyncio.sleep(2.0)
        st.bench.sending = False
        t_last = asyncio.get_running_loop().time() - 0.1  # the sender's last frame went out then
        await asyncio.sleep(3.0)
        t_open = st.bench.first("BMS_Status", lambda v: v["contactors"] == "OPEN", after=t_closed)
        assert t_open is not None
        assert 0.5 <= t_open - t_last <= 0.5 + 0.1 + 0.1 + 0.1 + 0.1 + 1e-6
        status = st.bench.latest("BMS_Status")
        assert status["fault_comm"] == "ACTIVE" and status["warn_control_failure"] == "ACTIVE"
        # the bench comes back: fault_comm clears on a clear edge and the CLOSE request reconnects
        st.bench.sending = True
        await asyncio.sleep(1.0)
        assert st.bench.latest("BMS_Status")["contactors"] == "OPEN"
        st.bench.clear = 1
        await asyncio.sleep(1.0)
        status = st.bench.latest("BMS_Status")
        assert status["fault_comm"] == "OK" and status["contactors"] == "CLOSED"

    scenario(body)


def test_command_timeout_ignored_stays_closed() -> None:
    async def body(st: Station) -> None:
        await close_contactors(st)
        st.bench.sending = False
        await asyncio.sleep(5.0)
        status = st.bench.latest("BMS_Status")
        assert status["contactors"] == "CLOSED" and status["fault_comm"] == "OK"

    scenario(body, faults=("command_timeout_ignored",))


def test_bad_crc_and_repeated_alive_are_ignored_and_counted() -> None:
    async def body(st: Station) -> None:
        st.bench.bad_crc = True
        st.bench.contactors = 1
        await asyncio.sleep(1.0)
        assert st.bench.latest("BMS_Status")["contactors"] == "OPEN"
        assert st.plant.bms.bad_command_frames == 10
        st.bench.bad_crc = False
        await asyncio.sleep(1.0)
        assert st.bench.latest("BMS_Status")["contactors"] == "CLOSED"
        st.bench.freeze_alive = True  # every frame repeats the last counter: the watchdog fires
        await asyncio.sleep(2.0)
        status = st.bench.latest("BMS_Status")
        assert status["contactors"] == "OPEN" and status["fault_comm"] == "ACTIVE"
        assert st.plant.bms.bad_command_frames >= 30

    scenario(body)


def test_alive_counter_frozen_and_crc_corrupted() -> None:
    async def frozen(st: Station) -> None:
        await asyncio.sleep(2.0)
        alive = {v["status_alive"] for _, v in st.bench.of("BMS_Status")}
        assert len(alive) == 1
        assert all(e2e.crc_ok(raw) for _, n, _, raw in st.bench.frames if n == "BMS_Status")

    scenario(frozen, faults=("alive_counter_frozen",))

    async def corrupted(st: Station) -> None:
        await asyncio.sleep(2.0)
        raws = [raw for _, n, _, raw in st.bench.frames if n == "BMS_Status"]
        assert len(raws) == 20 and not any(e2e.crc_ok(raw) for raw in raws)
        alive = [v["status_alive"] for _, v in st.bench.of("BMS_Status")]
        assert alive[:3] == [0, 1, 2]

    scenario(corrupted, faults=("crc_corrupted",))


def test_isolation_fault_flags_without_opening() -> None:
    async def body(st: Station) -> None:
        await close_contactors(st)
        status = st.bench.latest("BMS_Status")
        assert status["fault_isolation"] == "ACTIVE" and status["warn_isolation"] == "ACTIVE"
        assert st.bench.latest("BMS_Isolation")["iso_resistance"] == 60

    scenario(body, faults=("isolation_fault",))


def test_same_seed_gives_identical_frames() -> None:
    streams: list[list[bytes]] = []

    async def body(st: Station) -> None:
        await close_contactors(st)
        charge(st)
        await asyncio.sleep(20.0)
        st.scpi("MEAS:VOLT?")
        streams.append([raw for _, _, _, raw in st.bench.frames])

    scenario(body, seed=5)
    scenario(body, seed=5)
    scenario(body, seed=6)
    assert streams[0] == streams[1] and streams[0] != streams[2]


# -- configuration ---------------------------------------------------------------------------------


def _build(config: dict[str, Any], faults: tuple[str, ...] = ()) -> Plant:
    return build_plant({"dbc": DBC, "can_channel": "cfg", **config}, faults=faults, seed=0, register=lambda n, h: None)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"cells_count": 192}, "unknown key 'cells_count'"),
        ({"bms": {"ov_threshold": 4.2}}, "unknown key 'bms.ov_threshold'"),
        ({"capacity_ah": -1}, "capacity_ah must be > 0"),
        ({"capacity_ah": "120 Ah"}, "capacity_ah must be a number"),
        ({"cells": 200}, "cells must be <= 192"),
        ({"chemistry": "NCA"}, "chemistry must be one of NMC, LFP"),
        ({"bms": {"uv_threshold_v": 4.3}}, "uv_threshold_v must be below"),
        ({"supply": {"current_max_a": True}}, "supply.current_max_a must be a number"),
        ({"dbc": "/nonexistent.dbc"}, "cannot load dbc"),
    ],
)
def test_bad_config_is_one_clear_line(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        _build(config)
    assert "\n" not in str(info.value)


def test_unknown_fault_names_the_fault_and_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown fault 'welded'") as info:
        _build({}, faults=("welded",))
    assert "contactor_welded" in str(info.value) and "alive_counter_frozen" in str(info.value)


def test_fault_catalogue_and_lfp_defaults() -> None:
    required = {
        "overvoltage_protection_disabled", "contactor_welded", "slow_reaction", "alive_counter_frozen",
        "crc_corrupted", "overtemperature_protection_disabled", "undervoltage_protection_disabled",
        "ov_threshold_high", "cell_voltage_sensor_offset", "command_timeout_ignored",
    }  # fmt: skip
    catalogue = fault_catalogue()
    assert required <= set(catalogue) and all(catalogue.values())
    plant = _build({"chemistry": "LFP"})
    assert (plant.bms.ov_threshold_v, plant.bms.p.uv_threshold_v) == (3.65, 2.5)
    assert _build({"chemistry": "LFP"}, faults=("ov_threshold_high",)).bms.ov_threshold_v == 3.80


def test_registers_supply_under_psu_endpoint() -> None:
    seen: dict[str, Any] = {}
    build_plant({"dbc": DBC, "can_channel": "x", "psu_endpoint": "psu2"}, faults=[], seed=0, register=seen.__setitem__)
    assert "psu2" in seen and "psu" not in seen and seen["psu2"].scpi("OUTP?") == "OFF"
