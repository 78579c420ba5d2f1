"""The run's BLF writer (bench/record/blf.py) writes the bytes python-can's BLFWriter writes."""

from __future__ import annotations

from pathlib import Path

import can

from bench.record.blf import FrameWriter


def frames() -> list[can.Message]:
    """Every kind of frame a run records, over more than one compressed container."""
    out = []
    for i in range(6000):
        t = 1_750_000_000.0 + i * 0.0013
        out.append(
            can.Message(
                timestamp=t,
                arbitration_id=0x100 + i % 7,
                data=bytes([i % 256] * (i % 9)),
                is_extended_id=False,
                channel="bench0",
            )
        )
        if i % 50 == 0:
            out.append(
                can.Message(
                    timestamp=t,
                    arbitration_id=0x18FECA00 + i % 3,
                    data=b"\x01\x02",
                    is_extended_id=True,
                    is_rx=False,
                    channel=None,
                )
            )
        if i % 333 == 0:
            out.append(
                can.Message(
                    timestamp=t, arbitration_id=0x7E0, is_remote_frame=True, dlc=8, is_extended_id=False, channel=1
                )
            )
            out.append(
                can.Message(
                    timestamp=t,
                    arbitration_id=0x123,
                    is_fd=True,
                    bitrate_switch=True,
                    data=bytes(range(12)),
                    channel="can2",
                )
            )
            out.append(
                can.Message(
                    timestamp=t, arbitration_id=0x20000040, is_error_frame=True, data=bytes(8), channel="bench0"
                )
            )
            out.append(can.Message(timestamp=t, arbitration_id=0x55, data=b"\x00", channel=[1, 2]))  # unhashable
    return out


def write(writer_class: type[can.BLFWriter], path: Path, start: float | None) -> bytes:
    writer = writer_class(str(path))
    writer.start_timestamp = start  # as the run recorder sets it; None: from the first frame
    for msg in frames():
        writer.on_message_received(msg)
    writer.stop_timestamp = 1_750_000_100.0
    writer.stop()
    return path.read_bytes()


def test_frame_writer_writes_what_python_can_writes(tmp_path: Path) -> None:
    for start in (1_750_000_000.0, None):
        ours = write(FrameWriter, tmp_path / "ours.blf", start)
        theirs = write(can.BLFWriter, tmp_path / "theirs.blf", start)
        assert len(ours) > 10_000
        # Where they differ, not a diff of two files (pytest's diff of long bytes takes minutes).
        differ = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), None)
        assert (len(ours), differ) == (len(theirs), None), f"start {start}: the files differ from byte {differ}"
