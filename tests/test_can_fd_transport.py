"""CAN FD frames on the in-process link (virtual time) and across the served socketcand bus.

The served tests use python-can's stock ``socketcand`` client over TCP against the real server,
so they show exactly what that client can and cannot carry (docs/served.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import can
import pytest

from simulators.serve_can import SocketcandServer, parse_send
from tests.can_link import frame, link, node
from tests.expected_protocol import run_virtual

PAYLOAD_64 = bytes(range(64))


def test_a_64_byte_fd_frame_with_brs_crosses_the_inproc_link_whole() -> None:
    async def main() -> None:
        async with link(True, True) as ((sender, receiver), (_, got)):
            sender.send(frame(0x18FF0127, PAYLOAD_64, fd=True, brs=True))
            await asyncio.sleep(0.001)
        (received,) = got
        assert bytes(received.data) == PAYLOAD_64 and received.dlc == 64
        assert received.is_fd and received.bitrate_switch and received.is_extended_id
        assert receiver.protocol == can.CanProtocol.CAN_FD

    run_virtual(main)


def test_an_fd_payload_is_padded_to_the_next_dlc_length_never_cut() -> None:
    async def main() -> None:
        async with link(True, True) as ((sender, _), (_, got)):
            sender.send(frame(0x321, bytes(range(1, 11)), fd=True))
            await asyncio.sleep(0.001)
        assert bytes(got[0].data) == bytes(range(1, 11)) + b"\0\0"
        assert got[0].dlc == 12 and not got[0].bitrate_switch

    run_virtual(main)


@pytest.mark.parametrize(
    ("fd_node", "message", "says"),
    [
        (
            False,
            frame(0x100, PAYLOAD_64[:12], fd=True),
            "classic CAN",
        ),
        (True, frame(0x100, PAYLOAD_64[:9]), "at most 8 bytes"),
        (
            True,
            frame(0x100, PAYLOAD_64 + b"\0", fd=True),
            "at most 64",
        ),
    ],
    ids=["fd-frame-on-classic-node", "9-byte-classic-frame", "65-byte-fd-frame"],
)
def test_a_frame_the_node_cannot_send_is_refused_not_cut(fd_node: bool, message: can.Message, says: str) -> None:
    async def main() -> None:
        async with link(fd_node, True) as ((sender, _), (_, got)):
            with pytest.raises(can.CanOperationError, match=says):
                sender.send(message)
            await asyncio.sleep(0.001)
        assert got == []

    run_virtual(main)


def test_a_classic_node_sees_an_fd_frame_as_an_error_frame() -> None:
    async def main() -> None:
        async with link(True, True, False) as ((sender, _, _), (_, fd_got, classic_got)):
            sender.send(frame(0x200, PAYLOAD_64[:16], fd=True))
            sender.send(frame(0x201, b"\x01\x02"))
            await asyncio.sleep(0.001)
        assert [(m.arbitration_id, m.is_fd) for m in fd_got] == [(0x200, True), (0x201, False)]
        error, classic = classic_got
        assert error.is_error_frame and error.arbitration_id & 0x08 and error.data[2] == 0x02  # protocol: form error
        assert classic.arbitration_id == 0x201 and bytes(classic.data) == b"\x01\x02"

    run_virtual(main)


def test_the_socketcand_send_line_of_python_can_becomes_an_fd_frame_above_8_bytes() -> None:
    fd = parse_send(["send", "18FF0127", "40", *(f"{b:x}" for b in PAYLOAD_64)])
    assert fd.is_fd and fd.is_extended_id and bytes(fd.data) == PAYLOAD_64
    odd = parse_send(["send", "123", "A", *(f"{b:x}" for b in range(10))])
    assert odd.is_fd and odd.dlc == 12 and bytes(odd.data) == bytes(range(10)) + b"\0\0"
    classic = parse_send(["send", "123", "8", *(f"{b:x}" for b in range(8))])
    assert not classic.is_fd
    with pytest.raises(ValueError, match="at most 64"):
        parse_send(["send", "123", "41", *(["0"] * 65)])


async def _served(
    body: Callable[[SocketcandServer, Any, list[can.Message]], Awaitable[None]],
) -> None:
    """A served FD channel with an FD plant node on it; ``body`` talks to it through a stock client."""
    server = SocketcandServer(["fd0"], port=0)
    await server.start()
    plant = node("fd0", fd=True)
    plant_got: list[can.Message] = []
    plant.add_listener(plant_got.append)
    try:
        await body(server, plant, plant_got)
    finally:
        plant.shutdown()
        await server.stop()


def _client(port: int) -> Any:
    return can.Bus(interface="socketcand", host="127.0.0.1", port=port, channel="fd0")


async def _until(cond: Callable[[], bool], within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_a_stock_socketcand_client_sends_a_64_byte_fd_frame_whole() -> None:
    async def body(server: SocketcandServer, plant: Any, plant_got: list[can.Message]) -> None:
        client = await asyncio.to_thread(_client, server.port)
        try:
            msg = frame(0x18FF0127, PAYLOAD_64, fd=True)
            await asyncio.to_thread(client.send, msg)
            await _until(lambda: bool(plant_got))
        finally:
            client.shutdown()
        received = plant_got[0]
        assert received.arbitration_id == 0x18FF0127 and received.is_extended_id
        assert received.is_fd and bytes(received.data) == PAYLOAD_64
        assert not received.bitrate_switch  # the stock client's send line has no BRS flag

    asyncio.run(_served(body))


def test_a_stock_socketcand_client_receives_an_fd_frame_whole_without_its_flags(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body(server: SocketcandServer, plant: Any, plant_got: list[can.Message]) -> None:
        client = await asyncio.to_thread(_client, server.port)
        try:
            await asyncio.to_thread(client.send, frame(0x7FF, b""))  # handshake over
            await _until(lambda: bool(plant_got))
            plant.send(frame(0x18FF0227, PAYLOAD_64, fd=True, brs=True))
            got = await asyncio.to_thread(client.recv, 10.0)
        finally:
            client.shutdown()
        assert got is not None and got.arbitration_id == 0x18FF0227
        assert bytes(got.data) == PAYLOAD_64, "all 64 bytes arrive"
        assert not got.is_fd, "python-can's socketcand client reads every frame as classic"

    with caplog.at_level(logging.WARNING, logger="simulators.serve_can"):
        asyncio.run(_served(body))
    lost = [r.getMessage() for r in caplog.records if "0x18FF0227" in r.getMessage()]
    assert len(lost) == 1 and "without its BRS flag" in lost[0]
