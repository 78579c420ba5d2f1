"""The run's BLF writer (bench/record/blf.py) writes the bytes python-can's BLFWriter writes."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any, BinaryIO, cast

import can

from bench.record.blf import FrameWriter
from bench.runrecord import RunRecorder


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


def write(writer_class: type[can.BLFWriter], path: Path, start: float | None, **kwargs: Any) -> bytes:
    writer = writer_class(str(path), **kwargs)
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


def test_frames_written_in_batches_are_the_same_file(tmp_path: Path) -> None:
    """Batches of one frame, a few, hundreds and thousands (several containers written in one
    call), with python-can's container size and small ones (a container every few frames)."""
    msgs = frames()
    sizes = [1, 7, 300, 5000, 1, 2, 250, 33]
    for container in (128 * 1024, 4096, 1000):
        for start in (1_750_000_000.0, None):
            writer = FrameWriter(str(tmp_path / "batches.blf"), max_container_size=container)
            writer.start_timestamp = start
            i = 0
            while i < len(msgs):
                for size in sizes:
                    writer.write_frames(msgs[i : i + size])
                    i += size
            writer.stop_timestamp = 1_750_000_100.0
            writer.stop()
            theirs = write(can.BLFWriter, tmp_path / "theirs.blf", start, max_container_size=container)
            ours = (tmp_path / "batches.blf").read_bytes()
            differ = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), None)
            assert (len(ours), differ) == (len(theirs), None), (
                f"container {container}, start {start}: the files differ from byte {differ}"
            )


class _FillingFile:
    """A file that takes ``room`` bytes and then fails as a full disk does."""

    def __init__(self, file: Any, room: int) -> None:
        self._file = file
        self._room = room

    def write(self, data: bytes) -> int:
        if len(data) > self._room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._room -= len(data)
        return int(self._file.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def test_a_full_disk_loses_the_same_frames_in_batches_as_frame_by_frame(tmp_path: Path) -> None:
    """The frame whose write fails and every later one are counted lost, those before it recorded."""
    msgs = [m for m in frames() if m.is_rx]
    counts = []
    for batch in (1, 500):
        rec = RunRecorder(tmp_path / f"run-{batch}", 1_750_000_000.0, 1_750_000_000.0)
        blf = rec._blf
        assert blf is not None
        blf.file = cast(BinaryIO, _FillingFile(blf.file, 8_000))  # the first compressed container fits, not the second
        for i in range(0, len(msgs), batch):
            if batch == 1:
                rec.frame(msgs[i], False)
            else:
                rec.frames_received(msgs[i : i + batch])
        counts.append((rec.frames, rec.frames_lost, rec.write_error))
        rec.close_traffic()
        rec.log.close()
    assert counts[0] == counts[1]
    assert counts[0][0] > 0 and counts[0][1] > 0 and counts[0][0] + counts[0][1] == len(msgs)
