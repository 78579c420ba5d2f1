"""A CAN device on an FD bus (station ``fd: true``): it receives a 64-byte FD frame and sends its 12-byte FD command.

The device runs on the in-process link against a peer node opened with python-can's ``fd=True``,
which plays the pack of tests/dbc/fd_64_byte.dbc.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import can
import cantools
import pytest

import drivers.can_inproc  # noqa: F401  (registers the inproc interface)
from bench.device import ConfigError, DeviceContext
from drivers.can_dbc import CanDbcDriver

DBC = Path(__file__).parent / "dbc" / "fd_64_byte.dbc"


def _config(channel: str, **extra: object) -> dict[str, object]:
    return {"dbc": str(DBC), "node": "BENCH", "can": {"interface": "inproc", "channel": channel}, **extra}


def test_an_fd_device_receives_64_bytes_and_sends_its_fd_command_with_brs() -> None:
    db = cantools.database.load_file(str(DBC))
    assert isinstance(db, cantools.database.can.Database)
    cells = db.get_message_by_name("Pack_CellVoltages")
    values = {s.name: 0 for s in cells.signals} | {"Cell24_Voltage": 3.7, "Checksum": 171, "PackVoltage": 86.4}
    summary = db.get_message_by_name("Pack_Summary")

    async def run() -> tuple[dict[str, float], list[can.Message]]:
        loop = asyncio.get_running_loop()
        published: dict[str, float] = {}
        faults: list[str] = []
        received: list[can.Message] = []
        pack = can.Bus(interface="inproc", channel="fd-dev", fd=True)
        pack.add_listener(received.append)  # type: ignore[attr-defined]
        frames = [
            can.Message(arbitration_id=cells.frame_id, is_fd=True, bitrate_switch=True, data=cells.encode(values)),
            can.Message(
                arbitration_id=summary.frame_id, data=summary.encode({"MaxCellVoltage": 3.7, "MinCellVoltage": 3.6})
            ),
        ]

        def send() -> None:
            for frame in frames:
                pack.send(frame)
            loop.call_later(0.05, send)

        loop.call_soon(send)
        device = CanDbcDriver("dut", _config("fd-dev", fd=True), DBC.parent)
        ctx = DeviceContext(
            loop, lambda n, v, t: published.__setitem__(n, v), lambda m, tx: None, lambda d, m: faults.append(m)
        )
        await device.connect(ctx)
        await asyncio.sleep(0.3)
        await device.close()
        pack.shutdown()
        assert faults == []
        return published, received

    published, received = asyncio.run(run())
    assert published["dut.Cell24_Voltage"] == pytest.approx(3.7)
    assert published["dut.Checksum"] == 171
    commands = [m for m in received if m.arbitration_id == 0x600]
    assert commands, "the bench sent no command"
    assert all(m.is_fd and m.bitrate_switch and len(m.data) == 12 for m in commands)


def test_without_fd_the_device_is_refused_at_load() -> None:
    with pytest.raises(ConfigError, match=r"message Pack_CellVoltages is a CAN FD frame .* bus is classic"):
        CanDbcDriver("dut", _config("fd-dev2"), DBC.parent)


def test_fd_and_the_data_bit_rate_go_to_python_can() -> None:
    device = CanDbcDriver("dut", _config("fd-dev3", fd=True, data_bitrate=2_000_000), DBC.parent)
    assert device.can_cfg == {"interface": "inproc", "channel": "fd-dev3", "fd": True, "data_bitrate": 2_000_000}
