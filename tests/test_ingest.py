"""The CAN receive path loses no frame, keeps their order and their timestamps.

On the in-process link (the frames of one instant in one delivery) and on a bus read on a
thread (python-can's ``virtual`` interface, frames handed to the loop in batches): the BMS
traffic of benchmarks/ingest.py, received by drivers/can_dbc.py into a run's signal bus,
supervisor and can.blf. What was recorded and decoded is compared with what was sent, frame by
frame (benchmarks/ingest.py's checks, which raise CheckFailed).
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

import pytest

from benchmarks import ingest

SECONDS = 4.0  # about 2700 frames
READ_FAILED = "CAN bus read failed:"


@pytest.fixture(scope="module")
def traffic() -> list[ingest.Frame]:
    return ingest.traffic(SECONDS)


@pytest.fixture(scope="module")
def plan() -> ingest.Plan:
    return ingest.build_plan(ingest.SEQUENCE, ingest.STATION)


def test_inproc_link_keeps_every_frame(tmp_path: Path, plan: ingest.Plan, traffic: list[ingest.Frame]) -> None:
    ingest.run_on(True, functools.partial(ingest.ours_inproc, plan, traffic, tmp_path))


def test_bus_read_on_a_thread_keeps_every_frame(tmp_path: Path, plan: ingest.Plan, traffic: list[ingest.Frame]) -> None:
    ingest.run_on(False, functools.partial(ingest.ours_virtual, plan, traffic, tmp_path, "test-ingest"))


def test_the_checks_see_a_lost_frame(tmp_path: Path, plan: ingest.Plan, traffic: list[ingest.Frame]) -> None:
    """A frame missing from what was received is found (the checks above can fail)."""
    lost = traffic[:100] + traffic[101:]
    with pytest.raises(ingest.CheckFailed, match="frames received of"):
        ingest.check_sequence("received", [(fid, data) for _, fid, data in lost], traffic)
    swapped = [*traffic[:50], traffic[51], traffic[50], *traffic[52:]]
    with pytest.raises(ingest.CheckFailed, match="frame 50 is"):
        ingest.check_sequence("received", [(fid, data) for _, fid, data in swapped], traffic)


def test_a_bus_read_that_fails_is_a_device_fault(
    tmp_path: Path, plan: ingest.Plan, traffic: list[ingest.Frame]
) -> None:
    """An interface that fails under the reader thread stops the run with the device named, not silently."""

    async def run() -> list[str]:
        loop = asyncio.get_running_loop()
        b = ingest.bench_parts(plan, loop, tmp_path, {"interface": "virtual", "channel": "test-ingest-fail"})
        faults: list[str] = []
        b.dctx.fault = lambda device, reason: faults.append(f"{device}: {reason}")
        connecting = loop.create_task(b.driver.connect(b.dctx))
        while b.driver._bus is None:  # noqa: ASYNC110 (the device opens its bus in connect)
            await asyncio.sleep(0.001)
        ingest.feed_virtual("test-ingest-fail", traffic, ingest.START_EPOCH).start()
        await connecting
        b.driver._bus.shutdown()  # the interface goes away under the reader
        for _ in range(100):
            if any(READ_FAILED in f for f in faults):
                break
            await asyncio.sleep(0.02)
        await b.driver.close()
        b.rec.close_traffic()
        b.rec.log.close()
        return faults

    faults = ingest.run_on(False, run)
    # The cyclic sender may say its part too; the reader must say that reading failed.
    assert any(f.startswith(f"bms: {READ_FAILED}") for f in faults), faults
