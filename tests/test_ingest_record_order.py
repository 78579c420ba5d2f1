"""Frames received together are recorded together, yet before anything a frame of them causes.

drivers/can_dbc.py records a delivery's frames in runs (one call to the recorder each): the
frames before one that publishes a sample are written before that sample reaches the signal
bus, so a subscriber (the supervisor, a limit that trips) sees the record one call per frame gave.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import can

from benchmarks import ingest

PACK_VALUES = 0x101  # BMS_PackValues: carries bms.soc, which the run refers to


async def soc_samples_and_frames_recorded(plan: ingest.Plan, frames: list[ingest.Frame], run_dir: Path) -> list[int]:
    """For each sample of bms.soc, how many received frames were recorded when it was published."""
    loop = asyncio.get_running_loop()
    b = ingest.bench_parts(plan, loop, run_dir, {"interface": "inproc", "channel": "record-order"})
    recorded = [0]
    record_batch = b.rec.frames_received

    def count_and_record(msgs: list[can.Message]) -> None:
        recorded[0] += len(msgs)
        record_batch(msgs)

    b.dctx.record_frames = count_and_record
    seen: list[int] = []
    b.ctx.bus.subscribe(["bms.soc"], lambda name, value, t: seen.append(recorded[0]))
    sender = can.Bus(interface="inproc", channel="record-order")
    connecting = loop.create_task(b.driver.connect(b.dctx))
    await asyncio.sleep(0)
    await ingest.send_inproc(sender, frames, ingest.inproc_messages(frames))
    await connecting
    await b.driver.close()
    sender.shutdown()
    b.rec.close_traffic()
    b.rec.log.close()
    return seen


def test_a_sample_is_published_after_its_frame_and_those_before_it_are_recorded(tmp_path: Path) -> None:
    frames = ingest.traffic(1.0)
    plan = ingest.build_plan(ingest.SEQUENCE, ingest.STATION)
    seen = ingest.run_on(True, lambda: soc_samples_and_frames_recorded(plan, frames, tmp_path))
    carrying = [i + 1 for i, (_, fid, _) in enumerate(frames) if fid == PACK_VALUES]
    assert len(carrying) == 10
    assert seen == carrying
