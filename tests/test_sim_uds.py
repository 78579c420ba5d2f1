"""The BMS's UDS server (hand-written ISO-TP) against the driver's client (can-isotp + udsoncan),
frame by frame, on a virtual-time loop: the two independent implementations must agree."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import can
import pytest

from drivers.uds import UdsClient, UdsError
from simulators.plant import build_plant
from simulators.uds_server import UdsServer
from tests.expected_protocol import run_virtual

DIDS = {0xF190: b"WDB9634031L000001", 0xF18C: b"BMS-SN-0000012345", 0xF195: b"BMS-SIM 1.0.0"}


def _pair(
    deliver: Callable[[can.Message], bool] | None = None,
) -> tuple[UdsServer, UdsClient, list[tuple[str, str]]]:
    """A server and a client joined on the loop; ``deliver`` may drop server frames."""
    log: list[tuple[str, str]] = []
    loop = asyncio.get_running_loop()

    def to_server(m: can.Message) -> None:
        log.append((f"{m.arbitration_id:03X}", bytes(m.data).hex(" ")))
        loop.call_soon(server.on_frame, m)

    def to_client(m: can.Message) -> None:
        log.append((f"{m.arbitration_id:03X}", bytes(m.data).hex(" ")))
        if deliver is not None and not deliver(m):
            return
        loop.call_soon(client.feed, m)

    server = UdsServer(DIDS, to_client)
    client = UdsClient(to_server)
    return server, client, log


def test_vin_read_frame_by_frame() -> None:
    async def main() -> tuple[str, list[tuple[str, str]]]:
        _, client, log = _pair()
        return str(await client.read_did(0xF190)), log

    vin, log = run_virtual(main)
    assert vin == "WDB9634031L000001"
    assert log == [
        ("7E0", "03 22 f1 90 cc cc cc cc"),  # single frame request
        ("7E8", "10 14 62 f1 90 57 44 42"),  # first frame: 20 bytes
        ("7E0", "30 08 00 cc cc cc cc cc"),  # flow control from can-isotp: CTS, BS 8, STmin 0
        ("7E8", "21 39 36 33 34 30 33 31"),
        ("7E8", "22 4c 30 30 30 30 30 31"),
    ]


def test_identity_and_negative_response() -> None:
    async def main() -> dict[str, str]:
        _, client, _ = _pair()
        with pytest.raises(UdsError, match=r"DID 0xF1A0: negative response 0x31 \(RequestOutOfRange\)"):
            await client.read_did(0xF1A0)
        return await client.identify()

    assert run_virtual(main) == {
        "vin": "WDB9634031L000001",
        "ecu_serial": "BMS-SN-0000012345",
        "software_version": "BMS-SIM 1.0.0",
    }


def test_server_answers_raw_requests() -> None:
    server = UdsServer(DIDS, lambda m: None)
    assert server.read_data_by_identifier(bytes([0x22, 0xF1, 0x95])) == b"\x62\xf1\x95BMS-SIM 1.0.0"
    assert server.read_data_by_identifier(bytes([0x22, 0xF1, 0x95, 0x12, 0x34])) == b"\x62\xf1\x95BMS-SIM 1.0.0"
    assert server.read_data_by_identifier(bytes([0x22, 0x12, 0x34])) == bytes([0x7F, 0x22, 0x31])
    assert server.read_data_by_identifier(bytes([0x22, 0xF1])) == bytes([0x7F, 0x22, 0x13])


def test_other_services_get_service_not_supported() -> None:
    async def main() -> bytes:
        _, client, _ = _pair()
        response = await client.request(bytes([0x10, 0x03]))
        return bytes(response.get_payload())

    assert run_virtual(main) == bytes([0x7F, 0x10, 0x11])


def test_lost_consecutive_frame_is_a_timeout_on_the_loop_clock() -> None:
    async def main() -> tuple[str, float]:
        # Drop the second consecutive frame: the client never completes the response.
        _, client, _ = _pair(lambda m: bytes(m.data)[0] != 0x22)
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(UdsError) as info:
            await client.read_did(0xF190)
        return str(info.value), asyncio.get_running_loop().time() - t0

    message, waited = run_virtual(main)
    assert message == "no UDS response on 0x7E8 within 1 s to request 22 F1 90 on 0x7E0"
    assert waited == pytest.approx(1.0)


def test_plant_serves_the_configured_identity_on_the_can_channel() -> None:
    dbc = str(Path(__file__).resolve().parents[1] / "dbc" / "bms.dbc")
    plant = build_plant(
        {"dbc": dbc, "can_channel": "uds-test", "bms": {"software_version": "BMS 2.3.4", "vin": "VF1AAAAA123456789"}},
        faults=[],
        seed=1,
        register=lambda name, handler: None,
    )

    async def main() -> dict[str, str]:
        await plant.start()
        bus = can.Bus(interface="inproc", channel="uds-test")
        client = UdsClient(bus.send)
        bus.add_listener(client.feed)  # type: ignore[attr-defined]
        try:
            return await client.identify()
        finally:
            bus.shutdown()
            await plant.stop()

    assert run_virtual(main) == {
        "vin": "VF1AAAAA123456789",
        "ecu_serial": "BMS-SN-0000012345",
        "software_version": "BMS 2.3.4",
    }


def test_plant_refuses_a_bad_vin() -> None:
    dbc = str(Path(__file__).resolve().parents[1] / "dbc" / "bms.dbc")
    with pytest.raises(ValueError, match=r"bms\.vin must have 17 characters"):
        build_plant({"dbc": dbc, "can_channel": "x", "bms": {"vin": "SHORT"}}, faults=[], seed=1, register=print)


def test_iso_tp_timers_run_on_the_loop_clock_not_the_wall_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """A loaded machine may take seconds of wall time between two frames 1 ms apart in virtual time."""
    import isotp.tools

    wall = iter(range(0, 10**15, 5 * 10**9))  # every read of the wall clock: 5 s later
    monkeypatch.setattr(isotp.tools.time, "perf_counter_ns", lambda: next(wall))

    async def read_vin() -> str:
        _, client, _ = _pair()
        return str(await client.read_did(0xF190))

    assert run_virtual(read_vin) == "WDB9634031L000001"

    async def late_consecutive_frame() -> str:
        # The second consecutive frame 1.5 s late on the loop clock: beyond N_Cr (1 s).
        loop = asyncio.get_running_loop()
        server, client, _ = _pair()
        late = server._send

        def delay_second(m: can.Message) -> None:
            if bytes(m.data)[0] == 0x22:
                loop.call_later(1.5, late, m)
            else:
                late(m)

        server._send = delay_second
        client.p2 = 5.0  # the request waits longer than the late frame: the ISO-TP timer must judge it
        with pytest.raises(UdsError):
            await client.read_did(0xF190)
        return " ".join(client._errors)

    assert "ConsecutiveFrameTimeoutError" in run_virtual(late_consecutive_frame)
