"""DTCs over UDS: the simulated BMS and FCCU keep a DTC memory with ISO 14229-1 status bits,
driven by what their firmware detects; the hand-written server answers ReadDTCInformation 0x19
0x02 and ClearDiagnosticInformation 0x14; the driver reads and clears them through udsoncan's
service layers, on a virtual-time loop."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import can
import pytest

from bench.dtccodes import STORED_MASK, Dtc, dtc_problems, format_dtc, parse_dtc
from drivers.uds import UdsClient, UdsError
from simulators.dtc import (
    AGING_CYCLES,
    BMS_DTCS,
    CONFIRMED,
    FCCU_DTCS,
    PENDING,
    DtcMemory,
)
from simulators.uds_server import UdsServer
from tests import test_fccu_sim as fc
from tests import test_sim_bms
from tests.expected_protocol import run_virtual
from tests.test_sim_bms import BenchNode, Station, close_contactors, scenario

ROOT = Path(__file__).resolve().parents[1]
WELDED = 0x0AA100  # P0AA1-00
ISOLATION = 0x0AA600  # P0AA6-00
COMM_CRC = 0xC29383  # U0293-83
NOT_COMPLETED = 0x50  # testNotCompletedSinceLastClear | testNotCompletedThisOperationCycle


# -- the DTC memory: ISO 14229-1 status bits ------------------------------------------------------


def test_a_safety_dtc_is_confirmed_at_once_and_ages_as_14229_says() -> None:
    memory = DtcMemory(BMS_DTCS)
    assert memory.status(WELDED) == NOT_COMPLETED  # after power-up with an empty memory, as after a clear
    memory.report("contactor", failed=True)
    # testFailed, testFailedThisOperationCycle, pending, confirmed, testFailedSinceLastClear, warningIndicator
    assert memory.status(WELDED) == 0xAF
    memory.report("contactor", failed=False)
    assert memory.status(WELDED) == 0xAE  # testFailed drops when the test passes; the rest stays
    memory.new_operation_cycle()
    assert memory.status(WELDED) == 0xEC  # failed last cycle: still pending; not completed this cycle
    memory.report("contactor", failed=False)
    memory.new_operation_cycle()
    assert memory.status(WELDED) == 0x68  # a failure-free cycle: no longer pending, lamp off, still confirmed
    for _ in range(AGING_CYCLES - 2):
        memory.report("contactor", failed=False)
        memory.new_operation_cycle()
    assert memory.status(WELDED) & CONFIRMED
    memory.report("contactor", failed=False)
    memory.new_operation_cycle()
    assert memory.status(WELDED) == 0x60  # aged out: only testFailedSinceLastClear remains
    memory.clear(0xFFFFFF)
    assert memory.status(WELDED) == NOT_COMPLETED


def test_a_cycle_without_the_test_keeps_pending() -> None:
    memory = DtcMemory(BMS_DTCS)
    memory.report("contactor", failed=True)
    memory.new_operation_cycle()
    memory.new_operation_cycle()  # the test never ran: nothing is known, nothing ages
    assert memory.status(WELDED) == 0xED  # testFailed too: the last result is still a failure


def test_other_dtcs_confirm_after_three_consecutive_failed_checks() -> None:
    memory = DtcMemory(BMS_DTCS)
    memory.report("isolation", failed=True)
    memory.report("isolation", failed=True)
    assert memory.status(ISOLATION) == 0x27  # failed and pending, not yet confirmed
    memory.report("isolation", failed=False)
    assert memory.status(ISOLATION) == 0x26
    memory.report("isolation", failed=True)
    memory.report("isolation", failed=True)
    assert not memory.status(ISOLATION) & CONFIRMED  # a pass in between starts the count again
    memory.report("isolation", failed=True)
    assert memory.status(ISOLATION) == 0xAF


def test_clear_one_dtc_or_all_and_refuse_an_unknown_group() -> None:
    memory = DtcMemory(BMS_DTCS)
    memory.report("contactor", failed=True)
    memory.report("isolation", failed=True)
    assert memory.clear(WELDED)
    assert memory.status(WELDED) == NOT_COMPLETED and memory.status(ISOLATION) == 0x27
    assert not memory.clear(0x123456)
    assert memory.status(ISOLATION) == 0x27
    assert memory.clear(0xFFFFFF)
    assert memory.matching(0xFF) == [(spec.number, NOT_COMPLETED) for spec in BMS_DTCS]
    assert memory.matching(STORED_MASK) == []


def test_every_dtc_code_in_the_tables_is_what_a_tester_shows() -> None:
    # The simulator's table writes number and code separately; the driver's formatter must agree.
    for spec in (*BMS_DTCS, *FCCU_DTCS):
        assert format_dtc(spec.number) == spec.code
        assert parse_dtc(spec.code) == spec.number
    for table in (BMS_DTCS, FCCU_DTCS):
        assert len({s.number for s in table}) == len(table)
        assert len({s.monitor for s in table}) == len(table)


def test_format_and_parse_dtc() -> None:
    assert format_dtc(0xC29300) == "U0293-00"
    assert format_dtc(0x4ABCDE) == "C0ABC-DE"
    assert format_dtc(0x812345) == "B0123-45"
    assert format_dtc(0x3FFFFF) == "P3FFF-FF"
    assert parse_dtc("u0293-83") == 0xC29383
    assert parse_dtc("0x0AA100") == 0x0AA100
    for bad in ("P0AA1", "X0AA1-00", "P4AA1-00", "P0AA1-0", "0x1000000", ""):
        with pytest.raises(ValueError, match="DTC"):
            parse_dtc(bad)
    dtc = Dtc(0x0AA100, 0xAF)
    assert dtc.code == "P0AA1-00" and dtc.confirmed and dtc.test_failed and dtc.warning_indicator_requested
    assert dtc.flags() == [
        "testFailed", "testFailedThisOperationCycle", "pendingDTC", "confirmedDTC",
        "testFailedSinceLastClear", "warningIndicatorRequested",
    ]  # fmt: skip
    assert str(dtc) == "P0AA1-00 status 0xAF"


def test_every_dtc_is_in_the_docs() -> None:
    for doc, table in (("docs/dtc.md", BMS_DTCS), ("docs/fccu.md", FCCU_DTCS)):
        text = (ROOT / doc).read_text()
        for spec in table:
            confirm = "at once" if spec.confirm_after == 1 else f"after {spec.confirm_after} checks"
            lamp = "yes" if spec.warning_indicator else "no"
            row = rf"^\| {re.escape(spec.code)} \| `{spec.monitor}` \| [^|]+ \| {confirm} \| {lamp} \|$"
            assert re.search(row, text, re.M), f"{spec.code} ({spec.monitor}, {confirm}, {lamp}) not in {doc}"


# -- the server: 0x19 0x02 and 0x14, positive and negative responses -------------------------------


def test_report_dtc_by_status_mask_raw() -> None:
    memory = DtcMemory(BMS_DTCS)
    server = UdsServer({}, lambda m: None, dtcs=memory)
    memory.report("contactor", failed=True)
    assert server.read_dtc_information(bytes([0x19, 0x02, 0x08])) == bytes.fromhex("59 02 FF 0A A1 00 AF")
    assert server.read_dtc_information(bytes([0x19, 0x02, 0x00])) == bytes.fromhex("59 02 FF")
    everything = server.read_dtc_information(bytes([0x19, 0x02, 0xFF]))
    assert len(everything) == 3 + 4 * len(BMS_DTCS)
    assert server.clear_diagnostic_information(bytes([0x14, 0xFF, 0xFF, 0xFF])) == bytes([0x54])
    assert server.read_dtc_information(bytes([0x19, 0x02, 0x08])) == bytes.fromhex("59 02 FF")


@pytest.mark.parametrize(
    ("request_hex", "response_hex"),
    [
        ("19", "7F 19 13"),  # no sub-function
        ("19 02", "7F 19 13"),  # no status mask
        ("19 02 FF 00", "7F 19 13"),  # one byte too many
        ("19 04 0A A1 00 FF", "7F 19 12"),  # reportDTCSnapshotRecordByDTCNumber: not supported
        ("19 82 FF", "7F 19 12"),  # 0x19 has no suppressPosRsp bit: 0x82 is no sub-function of ours
        ("14 FF FF", "7F 14 13"),
        ("14 FF FF FF 00", "7F 14 13"),
        ("14 12 34 56", "7F 14 31"),  # neither a DTC of this ECU nor all groups
        ("14 FF FF 33", "7F 14 31"),  # the emissions group: this ECU has none
        ("14 0A A1 00", "54"),  # one DTC
    ],
)
def test_negative_responses(request_hex: str, response_hex: str) -> None:
    assert _answers(DtcMemory(BMS_DTCS), bytes.fromhex(request_hex)) == bytes.fromhex(response_hex)


def test_a_server_without_dtc_memory_does_not_support_the_services() -> None:
    assert _answers(None, bytes([0x19, 0x02, 0xFF])) == bytes([0x7F, 0x19, 0x11])
    assert _answers(None, bytes([0x14, 0xFF, 0xFF, 0xFF])) == bytes([0x7F, 0x14, 0x11])


def _answers(memory: DtcMemory | None, request: bytes) -> bytes:
    """The server's single-frame answer to a single-frame request."""
    frames: list[can.Message] = []
    server = UdsServer({}, frames.append, dtcs=memory)
    server.on_frame(can.Message(arbitration_id=0x7E0, is_extended_id=False, data=bytes([len(request)]) + request))
    (frame,) = frames
    return bytes(frame.data[1 : 1 + frame.data[0]])


# -- the driver against the server, frame by frame ------------------------------------------------


def _pair(memory: DtcMemory | None) -> UdsClient:
    """A client and a server joined on the loop."""
    loop = asyncio.get_running_loop()

    def to_client(m: can.Message) -> None:
        loop.call_soon(client.feed, m)

    def to_server(m: can.Message) -> None:
        loop.call_soon(server.on_frame, m)

    server = UdsServer({}, to_client, dtcs=memory)
    client = UdsClient(to_server)
    return client


def test_read_and_clear_through_udsoncan() -> None:
    memory = DtcMemory(BMS_DTCS)
    memory.report("contactor", failed=True)
    memory.report("isolation", failed=True)

    async def main() -> dict[str, Any]:
        client = _pair(memory)
        out: dict[str, Any] = {"all": await client.read_dtcs(0xFF)}  # a segmented response
        out["confirmed"] = await client.read_dtcs(CONFIRMED)
        out["stored"] = await client.read_dtcs(STORED_MASK)
        out["availability"] = client.dtc_status_availability_mask
        await client.clear_dtcs()
        out["after_clear"] = await client.read_dtcs(STORED_MASK)
        with pytest.raises(UdsError) as info:
            await client.clear_dtcs(0x123456)
        out["error"] = str(info.value)
        return out

    out = run_virtual(main)
    assert [d.number for d in out["all"]] == [spec.number for spec in BMS_DTCS]
    assert out["confirmed"] == [Dtc(WELDED, 0xAF)]
    assert out["stored"] == [Dtc(WELDED, 0xAF), Dtc(ISOLATION, 0x27)]
    assert out["stored"][1].pending and not out["stored"][1].confirmed
    assert out["availability"] == 0xFF
    assert out["after_clear"] == []
    assert out["error"] == "clear DTCs 0x123456: negative response 0x31 (RequestOutOfRange)"


def test_read_dtcs_negative_response_is_a_uds_error() -> None:
    async def main() -> str:
        client = _pair(None)  # a server without DTC memory
        with pytest.raises(UdsError) as info:
            await client.read_dtcs(0x08)
        return str(info.value)

    assert run_virtual(main) == "read DTCs by status mask 0x08: negative response 0x11 (ServiceNotSupported)"


# -- the simulated BMS: fault modes drive its DTC memory ----------------------------------------


class _Bench(BenchNode):
    """The BMS test node, deaf to the diagnostic ids (they are not in the DBC)."""

    def _rx(self, msg: can.Message) -> None:
        if msg.arbitration_id not in (0x7E0, 0x7E8):
            super()._rx(msg)


async def _uds(st: Station) -> tuple[UdsClient, Any]:
    bus: Any = can.Bus(interface="inproc", channel=st.plant.channel)
    client = UdsClient(bus.send)
    bus.add_listener(client.feed)
    return client, bus


@pytest.fixture
def bms(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """test_sim_bms's scenario with a bench node that ignores the diagnostic frames."""
    monkeypatch.setattr(test_sim_bms, "BenchNode", _Bench)
    return scenario


@pytest.mark.parametrize("fault", [None, "contactor_welded"])
def test_contactor_welded_is_a_confirmed_dtc_and_clear_removes_it(bms: Callable[..., None], fault: str | None) -> None:
    seen: dict[str, Any] = {}

    async def body(st: Station) -> None:
        client, bus = await _uds(st)
        try:
            await close_contactors(st)
            st.bench.contactors = 0
            await asyncio.sleep(1.0)
            seen["stored"] = await client.read_dtcs(STORED_MASK)
            seen["welded"] = st.plant.bms.dtcs.status(WELDED)
            await client.clear_dtcs()
            seen["after_clear"] = await client.read_dtcs(STORED_MASK)
        finally:
            bus.shutdown()

    bms(body, faults=(fault,) if fault else ())
    if fault is None:
        assert seen["stored"] == []
        assert seen["welded"] == 0x00  # tested at the opening and passed: no bit set, so no mask reports it
    else:
        assert seen["stored"] == [Dtc(WELDED, 0xAF)]
        assert seen["stored"][0].code == "P0AA1-00" and seen["stored"][0].confirmed
    assert seen["after_clear"] == []


def test_isolation_fault_confirms_after_three_measurements(bms: Callable[..., None]) -> None:
    seen: list[int] = []

    async def body(st: Station) -> None:
        for _ in range(5):
            seen.append(st.plant.bms.dtcs.status(ISOLATION))
            await asyncio.sleep(1.0)

    bms(body, faults=("isolation_fault",))
    # BMS_Isolation every 1 s: failed from the first measurement, confirmed at the third
    assert [s & (PENDING | CONFIRMED) for s in seen] == [0, PENDING, PENDING, PENDING | CONFIRMED, PENDING | CONFIRMED]


def test_corrupt_command_frames_are_a_dtc(bms: Callable[..., None]) -> None:
    seen: dict[str, int] = {}

    async def body(st: Station) -> None:
        await asyncio.sleep(1.05)  # between two command frames (every 100 ms from 0)
        st.bench.bad_crc = True
        await asyncio.sleep(0.25)
        seen["two"] = st.plant.bms.dtcs.status(COMM_CRC)
        await asyncio.sleep(0.1)
        seen["three"] = st.plant.bms.dtcs.status(COMM_CRC)
        st.bench.bad_crc = False
        await asyncio.sleep(0.5)
        seen["good_again"] = st.plant.bms.dtcs.status(COMM_CRC)

    bms(body)
    assert seen["two"] == 0x27
    assert seen["three"] == 0x2F
    assert seen["good_again"] == 0x2E


# -- the simulated FCCU ----------------------------------------------------------------------------


def test_fccu_command_loss_and_sensor_error_code_are_confirmed_dtcs() -> None:
    seen: dict[str, list[str]] = {}

    async def body(plant: Any, node: Any, ep: dict[str, Any]) -> None:
        await fc.running(plant, node)
        node.values["h2_conc_1"] = 655.35  # raw 0xFFFF: the sensor's error code
        await asyncio.sleep(0.5)
        seen["sensor"] = [format_dtc(n) for n, _ in plant.dtcs.matching(CONFIRMED)]
        plant.dtcs.clear(0xFFFFFF)
        node.values["h2_conc_1"] = 0.0
        await asyncio.sleep(0.2)  # the clear needs a valid reading of both sensors
        node.values["clear_faults"] = 1
        await asyncio.sleep(0.3)
        node.values["clear_faults"] = 0
        await fc.running(plant, node)
        seen["cleared"] = [format_dtc(n) for n, _ in plant.dtcs.matching(STORED_MASK)]
        node.silent.add("BENCH_FcCommand")
        await asyncio.sleep(1.0)
        seen["comm"] = [format_dtc(n) for n, _ in plant.dtcs.matching(CONFIRMED)]

    fc.run(body)
    assert seen == {"sensor": ["P1B01-96"], "cleared": [], "comm": ["U0293-00"]}


# -- helpers for sequences and records ------------------------------------------------------------


def test_dtc_problems_names_what_is_missing_unconfirmed_or_unexpected() -> None:
    welded, isolation, crc = Dtc(WELDED, 0xAF), Dtc(ISOLATION, 0x27), Dtc(COMM_CRC, 0x2F)
    assert dtc_problems([welded], expected=[WELDED]) == []
    assert dtc_problems([welded, Dtc(ISOLATION, 0x50)], expected=[WELDED]) == []  # not completed is no fault
    assert dtc_problems([isolation], expected=[ISOLATION]) == [
        "P0AA6-00 is stored but not confirmedDTC (status 0x27: testFailed, testFailedThisOperationCycle,"
        " pendingDTC, testFailedSinceLastClear)"
    ]
    assert dtc_problems([isolation], expected=[ISOLATION], required_bits=PENDING) == []
    assert dtc_problems([], expected=[WELDED]) == ["P0AA1-00 is not stored"]
    assert dtc_problems([welded, crc], expected=[WELDED]) == ["unexpected DTC U0293-83 (status 0x2F)"]
    assert dtc_problems([welded, crc], expected=[WELDED], allowed=[COMM_CRC]) == []


def test_dtc_record_form() -> None:
    assert Dtc(WELDED, 0x2E).to_record() == {
        "code": "P0AA1-00",
        "number": WELDED,
        "status": 0x2E,
        "flags": ["testFailedThisOperationCycle", "pendingDTC", "confirmedDTC", "testFailedSinceLastClear"],
    }


# -- more fault modes: the DTC follows the detection, a disabled protection stores none -----------


@pytest.mark.parametrize(("faults", "expected"), [((), ["P1A00-17"]), (("overvoltage_protection_disabled",), [])])
def test_overcharge_stores_the_cell_overvoltage_dtc(
    bms: Callable[..., None], faults: tuple[str, ...], expected: list[str]
) -> None:
    seen: list[str] = []

    async def body(st: Station) -> None:
        await close_contactors(st)
        st.scpi("SYST:LOCK ON;SOUR:VOLT 1000;SOUR:CURR 60;SOUR:POW MAX;OUTP ON")
        await asyncio.sleep(600.0)
        seen.extend(format_dtc(n) for n, _ in st.plant.bms.dtcs.matching(CONFIRMED))

    bms(body, faults=faults, initial_soc_pct=98.5)
    assert seen == expected


@pytest.mark.parametrize(
    ("how", "faults", "expected"),
    [
        ("sending", (), ["U0293-00"]),
        ("sending", ("command_timeout_ignored",), []),
        ("bad_crc", (), ["U0293-00", "U0293-83"]),  # what the ISO 26262 CRC sequence injects
        ("freeze_alive", (), ["U0293-00", "U0293-82"]),
    ],
)
def test_bms_command_loss_with_closed_contactors(
    bms: Callable[..., None], how: str, faults: tuple[str, ...], expected: list[str]
) -> None:
    seen: list[str] = []

    async def body(st: Station) -> None:
        await close_contactors(st)
        setattr(st.bench, how, how != "sending")
        await asyncio.sleep(2.0)
        seen.extend(format_dtc(n) for n, _ in st.plant.bms.dtcs.matching(STORED_MASK))

    bms(body, faults=faults)
    assert seen == expected


@pytest.mark.parametrize(
    ("action", "faults", "expected"),
    [
        ("leak", (), ["P1B00-00"]),
        ("leak", ("h2_shutoff_disabled",), []),
        ("silent_sensor_2", (), ["P1B02-87"]),
        ("silent_sensor_2", ("h2_plausibility_disabled",), []),
        ("discrepancy", (), ["P1B03-62"]),
        ("overfill", (), ["P1B04-00"]),
        ("overfill", ("fill_limit_disabled",), []),
    ],
)
def test_fccu_fault_modes_and_their_dtcs(action: str, faults: tuple[str, ...], expected: list[str]) -> None:
    seen: list[str] = []

    async def body(plant: Any, node: Any, ep: dict[str, Any]) -> None:
        await fc.running(plant, node)
        if action == "leak":
            node.values["h2_conc_1"] = node.values["h2_conc_2"] = 4.5
        elif action == "silent_sensor_2":
            node.silent.add("BENCH_H2Sensor2")
        elif action == "discrepancy":
            node.values["h2_conc_1"] = 2.0
        else:
            node.values["fill_request"] = 1
            node.values["tank_pressure_sensor"] = 900.0
        await asyncio.sleep(1.0)
        seen.extend(format_dtc(n) for n, _ in plant.dtcs.matching(STORED_MASK))

    fc.run(body, faults=faults)
    assert seen == expected
