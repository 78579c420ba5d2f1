"""can.blf as python-can writes it, with the per-frame cost of a classic CAN frame cut to one struct.pack.

python-can's ``BLFWriter.on_message_received`` works out the channel number with a regular
expression, packs the frame, then its two object headers, each with a struct of its own, for
every frame: most of the cost of recording a busy bus. :class:`FrameWriter` packs a classic
data or remote frame (what a CAN bus nearly always carries) with one precompiled struct of the
same layout, and remembers each channel's number. Everything else (CAN FD and error frames,
the containers, their compression, the file header) is python-can's own code. The bytes
written are the same: tests/test_ingest_blf.py writes the same frames both ways and compares
the files.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

import can
from can.io import blf
from can.util import channel2int

# The object header (base and V1) and CAN_MSG_STRUCT of python-can's blf.py, in one struct: the
# header's fields up to the timestamp are the same for every classic frame (signature, header
# size, header version, object size, object type, flags, client index, object version), packed
# once; then the timestamp; channel, flags, dlc, arbitration id, 8 data bytes.
_HEADER_SIZE = blf.OBJ_HEADER_BASE_STRUCT.size + blf.OBJ_HEADER_V1_STRUCT.size
_OBJECT_SIZE = _HEADER_SIZE + blf.CAN_MSG_STRUCT.size
_CAN_HEADER = struct.pack(
    "<4sHHLL" + "LHH", b"LOBJ", _HEADER_SIZE, 1, _OBJECT_SIZE, blf.CAN_MESSAGE, blf.TIME_ONE_NANS, 0, 0
)
_CAN_OBJECT = struct.Struct(f"<{len(_CAN_HEADER)}s" + "Q" + "HBBL8s")
assert _CAN_OBJECT.size == _OBJECT_SIZE and blf.CAN_MSG_STRUCT.size % 4 == 0  # no padding to add
_EXTENDED, _REMOTE, _SENT = blf.CAN_MSG_EXT, blf.REMOTE_FLAG, blf.DIR


class FrameWriter(can.BLFWriter):
    """python-can's BLF writer; classic CAN frames take the short path (same bytes)."""

    def __init__(self, file: Any, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._channel_numbers: dict[Any, int] = {}

    def on_message_received(self, msg: can.Message) -> None:
        self.write_frames((msg,))

    def write_frames(self, msgs: Iterable[can.Message]) -> None:
        """Write ``msgs`` in their order, as many calls of ``on_message_received`` would.

        A busy bus hands frames over in batches: one call packs all of them. A container is
        written as soon as the buffer holds a container's worth, as python-can does after each
        frame, so the containers and their bytes are the same. On a failed write (OSError),
        ``object_count`` includes the frame whose write failed and none after it.
        """
        start = self.start_timestamp
        numbers = self._channel_numbers
        pack = _CAN_OBJECT.pack
        header = _CAN_HEADER
        timestamp = self.stop_timestamp
        limit = self.max_container_size
        append = self._buffer.append
        size = self._buffer_size
        count = 0  # frames appended since object_count and _buffer_size were last brought up to date
        for msg in msgs:
            try:
                channel: int | None = numbers[msg.channel]
            except KeyError:
                channel = self._channel_number(msg.channel)
            except TypeError:  # an unhashable channel (a list of numbers) is python-can's to number
                channel = None
            if channel is None or msg.is_fd or msg.is_error_frame or start is None:
                # python-can's own code, which keeps the buffer's size and count itself.
                self.stop_timestamp = timestamp
                self._buffer_size = size
                self.object_count += count
                count = 0
                super().on_message_received(msg)
                start = self.start_timestamp  # python-can takes it from the first frame when unset
                timestamp = self.stop_timestamp
                append = self._buffer.append
                size = self._buffer_size
                continue
            arb_id = msg.arbitration_id | _EXTENDED if msg.is_extended_id else msg.arbitration_id
            flags = _REMOTE if msg.is_remote_frame else 0
            if not msg.is_rx:
                flags |= _SENT
            timestamp = msg.timestamp
            offset = int((timestamp - start) * 1e9)
            data: bytes | bytearray = msg.data  # a bytearray: struct's "8s" takes it as it is and pads it with zeros
            if type(data) is not bytearray:
                data = bytes(data)
            append(pack(header, offset if offset > 0 else 0, channel, flags, msg.dlc, arb_id, data))
            size += _OBJECT_SIZE
            count += 1
            if size >= limit:
                self.stop_timestamp = timestamp
                self._buffer_size = size
                self.object_count += count
                count = 0
                self._flush()  # replaces the buffer with what did not fit in the container
                append = self._buffer.append
                size = self._buffer_size
        self.stop_timestamp = timestamp
        self._buffer_size = size
        self.object_count += count

    def _channel_number(self, channel: Any) -> int:
        """The BLF channel of ``channel`` as python-can numbers it (from 1), remembered."""
        number = channel2int(channel)
        number = self.channel if number is None else number + 1
        self._channel_numbers[channel] = number
        return number
