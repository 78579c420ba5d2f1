"""Archive raw CAN traffic as ASAM MDF 4.10 bus logging (``can.mf4``) with the DBC attached.

Why not python-can's ``MF4Writer`` on the live path: it calls ``mdf.extend`` once per frame
(about 17 k frames/s on this machine type) and leaves the target file empty until ``stop()``,
so a crash loses everything. The run therefore logs BLF live (fast, written container by
container, readable after a crash) and this module converts the BLF to MF4 after the run.

The conversion is vectorised: the BLF log containers are decompressed and, when every object
is a classic ``CAN_MESSAGE`` (the only kind the recorder writes for classic CAN), the whole
stream is viewed as one numpy structured array. Anything else (CAN FD, error frames, markers)
falls back to python-can's ``BLFReader``, frame by frame. The MF4 layout is the one python-can
writes (``CAN_DataFrame`` channel group with a bus source), so ``MDF.extract_bus_logging``
and ``can.LogReader`` both read it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_FILE_HEADER = struct.Struct("<4sLBBBBBBBBQQLL8H8H")
_OBJ_BASE = struct.Struct("<4sHHLL")
_CONTAINER = struct.Struct("<H6xL4x")
_LOG_CONTAINER = 10
_CAN_MESSAGE = 1
_EXT = 0x80000000
_DIR_TX = 0x1
_REMOTE = 0x80

# One classic CAN_MESSAGE object as BLFWriter lays it out: base header, V1 header, CAN_MSG.
_BLF_CAN = np.dtype(
    [
        ("sig", "S4"),
        ("hsize", "<u2"),
        ("hver", "<u2"),
        ("osize", "<u4"),
        ("otype", "<u4"),
        ("tflags", "<u4"),
        ("client", "<u2"),
        ("over", "<u2"),
        ("ts", "<u8"),
        ("channel", "<u2"),
        ("flags", "u1"),
        ("dlc", "u1"),
        ("id", "<u4"),
        ("data", "u1", (8,)),
    ]
)

STD_DTYPE = np.dtype(
    [
        ("CAN_DataFrame.BusChannel", "<u1"),
        ("CAN_DataFrame.ID", "<u4"),
        ("CAN_DataFrame.IDE", "<u1"),
        ("CAN_DataFrame.DLC", "<u1"),
        ("CAN_DataFrame.DataLength", "<u1"),
        ("CAN_DataFrame.DataBytes", "(64,)u1"),
        ("CAN_DataFrame.Dir", "<u1"),
        ("CAN_DataFrame.EDL", "<u1"),
        ("CAN_DataFrame.BRS", "<u1"),
        ("CAN_DataFrame.ESI", "<u1"),
    ]
)


@dataclass
class Frames:
    """Classic CAN frames as columns; ``t`` is seconds since ``start_epoch``."""

    start_epoch: float
    t: np.ndarray
    channel: np.ndarray
    arbitration_id: np.ndarray
    extended: np.ndarray
    tx: np.ndarray
    dlc: np.ndarray
    data: np.ndarray  # (n, 8) uint8
    fast_path: bool = True

    def __len__(self) -> int:
        return int(self.t.shape[0])


def _blf_start_epoch(head: bytes) -> float:
    fields = _FILE_HEADER.unpack_from(head)
    y, mo, _dow, d, h, mi, s, ms = fields[14:22]
    if y == 0:
        return 0.0
    return dt.datetime(y, mo, d, h, mi, s, ms * 1000, tzinfo=dt.UTC).timestamp()


def _payloads(raw: bytes) -> Iterator[bytes]:
    """The decompressed payload of every complete log container of a BLF file, in order.

    A container cut short by a crash (or still in the writer's buffer) ends the iteration: the
    frames before it are kept, which is what "the BLF written so far is readable" means.
    """
    header_size = struct.unpack_from("<L", raw, 4)[0]
    pos = header_size
    end = len(raw)
    while pos + _OBJ_BASE.size <= end:
        sig, _hs, _hv, osize, otype = _OBJ_BASE.unpack_from(raw, pos)
        if sig != b"LOBJ" or osize < _OBJ_BASE.size or pos + osize > end:
            return
        body = raw[pos + _OBJ_BASE.size : pos + osize]
        if otype == _LOG_CONTAINER:
            method, _size = _CONTAINER.unpack_from(body)
            payload = body[_CONTAINER.size :]
            try:
                yield zlib.decompress(payload) if method == 2 else bytes(payload)
            except zlib.error:
                return
        pos += osize + osize % 4


class _NotClassic(Exception):
    """The stream holds objects other than classic CAN_MESSAGEs: use the general reader."""


def _parse(stream: bytes, start: float) -> Frames:
    arr = np.frombuffer(stream, dtype=_BLF_CAN)
    if not (
        bool(np.all(arr["sig"] == b"LOBJ"))
        and bool(np.all(arr["otype"] == _CAN_MESSAGE))
        and bool(np.all(arr["osize"] == _BLF_CAN.itemsize))
        and bool(np.all(arr["tflags"] == 2))
    ):
        raise _NotClassic
    ids = arr["id"]
    return Frames(
        start_epoch=start,
        t=arr["ts"].astype(np.float64) * 1e-9,
        channel=np.maximum(arr["channel"].astype(np.int64) - 1, 0).astype(np.uint8),
        arbitration_id=(ids & ~np.uint32(_EXT)).astype(np.uint32),
        extended=((ids & np.uint32(_EXT)) != 0).astype(np.uint8),
        tx=((arr["flags"] & _DIR_TX) != 0).astype(np.uint8),
        dlc=arr["dlc"].astype(np.uint8),
        data=np.ascontiguousarray(arr["data"]),
    )


def iter_blf(path: Path, chunk_frames: int = 1_000_000) -> Iterator[Frames]:
    """Frames of ``path`` in chunks of about ``chunk_frames`` (memory stays bounded for long runs).

    Raises ``_NotClassic`` (before yielding anything wrong) when the fast layout does not apply.
    """
    raw = Path(path).read_bytes()
    if raw[:4] != b"LOGG":
        raise ValueError(f"{path}: not a BLF file")
    start = _blf_start_epoch(raw)
    size = _BLF_CAN.itemsize
    want = chunk_frames * size
    pending: list[bytes] = []
    have = 0
    for payload in _payloads(raw):
        pending.append(payload)
        have += len(payload)
        if have >= want:
            stream = b"".join(pending)
            cut = len(stream) - len(stream) % size
            yield _parse(stream[:cut], start)
            pending, have = [stream[cut:]], len(stream) - cut
    stream = b"".join(pending)
    if len(stream) % size:
        # Objects are whole only up to the last complete one; a partial tail is a crash's cut.
        stream = stream[: len(stream) - len(stream) % size]
    if stream or have == 0:
        yield _parse(stream, start)


def read_blf(path: Path) -> Frames:
    """Every classic CAN frame of ``path`` as columns (vectorised when possible)."""
    try:
        parts = list(iter_blf(path, chunk_frames=1 << 62))
    except _NotClassic:
        raw = Path(path).read_bytes()
        return _read_blf_slow(path, _blf_start_epoch(raw))
    return parts[0] if len(parts) == 1 else _concat(parts)


def _concat(parts: list[Frames]) -> Frames:
    return Frames(
        start_epoch=parts[0].start_epoch,
        t=np.concatenate([p.t for p in parts]),
        channel=np.concatenate([p.channel for p in parts]),
        arbitration_id=np.concatenate([p.arbitration_id for p in parts]),
        extended=np.concatenate([p.extended for p in parts]),
        tx=np.concatenate([p.tx for p in parts]),
        dlc=np.concatenate([p.dlc for p in parts]),
        data=np.concatenate([p.data for p in parts]),
    )


def _read_blf_slow(path: Path, start: float) -> Frames:
    import can

    ts: list[float] = []
    rows: list[tuple[int, int, int, int, int, bytes]] = []
    with can.BLFReader(str(path)) as reader:
        for m in reader:
            if m.is_error_frame or m.is_remote_frame:
                continue
            ts.append(m.timestamp - start)
            ch = m.channel if isinstance(m.channel, int) else 0
            rows.append((ch, m.arbitration_id, int(m.is_extended_id), int(not m.is_rx), m.dlc, bytes(m.data[:8])))
    n = len(rows)
    data = np.zeros((n, 8), dtype=np.uint8)
    for i, r in enumerate(rows):
        data[i, : len(r[5])] = np.frombuffer(r[5], dtype=np.uint8)
    col: list[tuple[Any, ...]] = list(zip(*rows, strict=True)) if rows else [(), (), (), (), (), ()]
    return Frames(
        start_epoch=start,
        t=np.asarray(ts, dtype=np.float64),
        channel=np.asarray(col[0], dtype=np.uint8),
        arbitration_id=np.asarray(col[1], dtype=np.uint32),
        extended=np.asarray(col[2], dtype=np.uint8),
        tx=np.asarray(col[3], dtype=np.uint8),
        dlc=np.asarray(col[4], dtype=np.uint8),
        data=data,
        fast_path=False,
    )


def _rows(frames: Frames) -> np.ndarray:
    rows = np.zeros(len(frames), dtype=STD_DTYPE)
    rows["CAN_DataFrame.BusChannel"] = frames.channel
    rows["CAN_DataFrame.ID"] = frames.arbitration_id
    rows["CAN_DataFrame.IDE"] = frames.extended
    rows["CAN_DataFrame.DLC"] = frames.dlc
    rows["CAN_DataFrame.DataLength"] = np.minimum(frames.dlc, 8)
    rows["CAN_DataFrame.DataBytes"][:, :8] = frames.data
    # MF4 bus logging: Dir 0 = Rx, 1 = Tx (as python-can writes it).
    rows["CAN_DataFrame.Dir"] = frames.tx
    return rows


def write_mf4(
    frames: Frames | Iterable[Frames], target: Path, dbc: list[Path] | None = None, compression: int = 2
) -> int:
    """Write frames (one block, or chunks) as MF4 bus logging to ``target`` with the DBC(s) attached."""
    from asammdf import MDF, Signal
    from asammdf.blocks.v4_blocks import SourceInformation
    from asammdf.blocks.v4_constants import BUS_TYPE_CAN, SOURCE_BUS

    chunks = [frames] if isinstance(frames, Frames) else frames
    mdf: Any = MDF(version="4.10")
    attachment: Any = None
    for i, path in enumerate(dbc or []):
        blob = Path(path).read_bytes()
        if i == 0:
            # The group's attachment is the database extract_bus_logging can find by itself.
            attachment = (blob, Path(path).name, hashlib.md5(blob).digest())
        else:
            mdf.attach(blob, file_name=Path(path).name, embedded=True)
    n = 0
    for chunk in chunks:
        if n == 0:
            mdf.header.start_time = dt.datetime.fromtimestamp(chunk.start_epoch, dt.UTC)
            mdf.append(
                Signal(
                    name="CAN_DataFrame",
                    samples=_rows(chunk),
                    timestamps=chunk.t,
                    attachment=attachment,
                    source=SourceInformation(source_type=SOURCE_BUS, bus_type=BUS_TYPE_CAN),
                )
            )
        elif len(chunk):
            # One extend per chunk of ~1 M frames (python-can's MF4Writer extends once per frame).
            mdf.extend(0, [(chunk.t, None), (_rows(chunk), None)])
        n += len(chunk)
    # Saved under a temporary name (asammdf keeps the .mf4 suffix) and renamed, so that a crash
    # never leaves a half-written archive next to the BLF.
    tmp = target.with_name(target.stem + ".part.mf4")
    saved = Path(mdf.save(str(tmp), overwrite=True, compression=compression))
    mdf.close()
    saved.replace(target)
    return n


def blf_to_mf4(blf: Path, target: Path, dbc: list[Path] | None = None, chunk_frames: int = 1_000_000) -> int:
    """Convert a run's BLF to MF4 in bounded memory; return the number of frames written."""
    try:
        return write_mf4(iter_blf(blf, chunk_frames), target, dbc)
    except _NotClassic:
        return write_mf4(read_blf(blf), target, dbc)
