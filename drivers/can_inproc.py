"""An in-process CAN link driven by the asyncio event loop.

python-can's ``virtual`` interface delivers frames through a receive thread, which would let
wall-clock scheduling leak into a virtual-time run. This link delivers every frame with
``loop.call_soon`` instead, stamped with ``loop.time()``, so a simulated station stays
deterministic and runs as fast as the event loop can go.

It is registered as the python-can interface ``inproc``: ``can.Bus(interface="inproc",
channel="bench0")``. Buses on the same channel (in one process) see each other's frames.
Consumers that live on the event loop register a callback with :meth:`InProcBus.add_listener`
(one frame per call) or :meth:`InProcBus.add_batch_listener` (the frames of one instant per
call); ``recv()`` only drains frames that arrived while no listener was registered.

Delivery: the frames a node receives while the loop runs one round of callbacks (a plant's
burst of cyclic frames at one instant) are handed over together, by one loop callback per
node, in the order they were sent; a frame sent while that callback runs goes into the next
one. Per node this is the order one callback per frame would give.

CAN FD: a node opened with ``fd=True`` (python-can's own keyword, as for ``socketcan`` or
``pcan``) sends and receives FD frames of up to 64 bytes with their BRS flag. Like a controller,
the link pads an FD payload to the next length a DLC can code (12, 16, 20, 24, 32, 48, 64) with
zero bytes. A classic node (``fd=False``, the default) refuses to send an FD frame, and an FD
frame on the channel reaches it as an error frame (a form error, as a classic controller sees
the FDF bit); a real classic node would also destroy the frame for everybody, which this link
does not model. A classic frame longer than 8 bytes is refused, never cut.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

import can

FrameCallback = Callable[[can.Message], None]
BatchCallback = Callable[[list[can.Message]], None]

MAX_CLASSIC_LEN = 8
MAX_FD_LEN = 64
# SocketCAN error frame for a protocol violation: class CAN_ERR_PROT in the id, type FORM in byte 2.
_CAN_ERR_FLAG = 0x20000000
_CAN_ERR_PROT = 0x08
_CAN_ERR_PROT_FORM = 0x02

_channels: dict[Any, list[InProcBus]] = {}
# Bus state per channel: a node that goes bus-off takes the whole simulated link down with it.
_states: dict[Any, can.BusState] = {}


class InProcBus(can.BusABC):
    """One node on an in-process CAN channel."""

    def __init__(
        self, channel: Any = "inproc0", receive_own_messages: bool = False, fd: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(channel=channel, **kwargs)
        self.channel_info = f"inproc channel {channel}{' (CAN FD)' if fd else ''}"
        self._channel = channel
        self._fd = bool(fd)
        self._can_protocol = can.CanProtocol.CAN_FD if self._fd else can.CanProtocol.CAN_20
        self._receive_own = receive_own_messages
        # In the order they were added; True for a batch listener.
        self._listeners: list[tuple[Callable[[Any], None], bool]] = []
        self._pending: list[can.Message] = []  # received, their delivery already scheduled
        self._backlog: deque[can.Message] = deque(maxlen=10000)
        self._peers = _channels.setdefault(channel, [])
        self._peers.append(self)
        self._open = True

    def add_listener(self, callback: FrameCallback) -> None:
        """Call ``callback(msg)`` on the event loop for every frame this node receives."""
        self._listeners.append((callback, False))

    def add_batch_listener(self, callback: BatchCallback) -> None:
        """Call ``callback(frames)`` on the event loop with the frames this node received since the last call."""
        self._listeners.append((callback, True))

    def remove_listener(self, callback: FrameCallback | BatchCallback) -> None:
        self._listeners = [entry for entry in self._listeners if entry[0] != callback]

    @property
    def state(self) -> can.BusState:
        return _states.get(self._channel, can.BusState.ACTIVE)

    @state.setter
    def state(self, new_state: can.BusState) -> None:
        """Simulate a bus fault: ERROR means bus-off, PASSIVE error-passive. Peers see an error frame."""
        _states[self._channel] = new_state
        if new_state != can.BusState.ACTIVE:
            loop = asyncio.get_running_loop()
            # Error class in byte 1 as in SocketCAN: 0x40 bus-off, 0x10 error-passive (RX/TX).
            data = bytes([0, 0x40 if new_state == can.BusState.ERROR else 0x30, 0, 0, 0, 0, 0, 0])
            frame = can.Message(
                timestamp=loop.time(),
                arbitration_id=0x20000040,
                is_error_frame=True,
                data=data,
                channel=self._channel,
                is_rx=True,
            )
            for peer in self._peers:
                peer._receive(frame, loop)

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        if not self._open:
            raise can.CanOperationError("inproc bus is shut down")
        if _states.get(self._channel) == can.BusState.ERROR:
            raise can.CanOperationError("bus-off: the controller does not transmit")
        data = self._payload(msg)
        loop = asyncio.get_running_loop()
        # One stamped copy shared by all receivers: receivers must treat frames as read-only.
        frame = can.Message(
            timestamp=loop.time(),
            arbitration_id=msg.arbitration_id,
            is_extended_id=msg.is_extended_id,
            is_remote_frame=msg.is_remote_frame,
            is_error_frame=msg.is_error_frame,
            dlc=len(data) if msg.is_fd else msg.dlc,
            data=data,
            is_fd=msg.is_fd,
            bitrate_switch=msg.bitrate_switch and msg.is_fd,
            channel=self._channel,
            is_rx=True,
        )
        for peer in self._peers:
            if peer is not self or self._receive_own:
                peer._receive(frame, loop)

    def _payload(self, msg: can.Message) -> bytes:
        """The bytes that go on the wire; CanOperationError for a frame this node cannot send."""
        data = bytes(msg.data)
        if not msg.is_fd:
            if len(data) > MAX_CLASSIC_LEN:
                raise can.CanOperationError(
                    f"frame 0x{msg.arbitration_id:X}: a classic CAN frame carries at most {MAX_CLASSIC_LEN} bytes,"
                    f" not {len(data)} (an FD frame needs is_fd=True on a bus opened with fd=True)"
                )
            return data
        if not self._fd:
            raise can.CanOperationError(
                f"frame 0x{msg.arbitration_id:X} is a CAN FD frame; this node is classic CAN (open the bus with fd=True)"
            )
        if msg.is_remote_frame:
            raise can.CanOperationError(f"frame 0x{msg.arbitration_id:X}: CAN FD has no remote frames")
        if len(data) > MAX_FD_LEN:
            raise can.CanOperationError(
                f"frame 0x{msg.arbitration_id:X}: a CAN FD frame carries at most {MAX_FD_LEN} bytes, not {len(data)}"
            )
        # A DLC codes only some lengths above 8: the controller pads up to the next one.
        wire_len = can.util.dlc2len(can.util.len2dlc(len(data)))
        return data + bytes(wire_len - len(data))

    def _receive(self, frame: can.Message, loop: asyncio.AbstractEventLoop) -> None:
        """A frame for this node: delivered by the loop callback already scheduled, or by a new one."""
        if frame.is_fd and not self._fd:
            frame = self._form_error(frame)
        if self._pending:
            self._pending.append(frame)
        else:
            self._pending = [frame]
            loop.call_soon(self._deliver)

    def _deliver(self) -> None:
        frames, self._pending = self._pending, []
        if not self._open:
            return
        listeners = self._listeners
        if not listeners:
            self._backlog.extend(frames)
        elif len(listeners) == 1 and listeners[0][1]:
            listeners[0][0](frames)
        else:
            # Frame by frame, every listener in turn: the order one callback per frame gives.
            for frame in frames:
                for callback, batch in tuple(listeners):
                    callback([frame] if batch else frame)

    def _form_error(self, fd_frame: can.Message) -> can.Message:
        """What a classic controller makes of an FD frame: a protocol (form) error, not the data."""
        return can.Message(
            timestamp=fd_frame.timestamp,
            arbitration_id=_CAN_ERR_FLAG | _CAN_ERR_PROT,
            is_error_frame=True,
            data=bytes([0, 0, _CAN_ERR_PROT_FORM, 0, 0, 0, 0, 0]),
            channel=self._channel,
            is_rx=True,
        )

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        # Never blocks: on this link frames arrive only while the event loop runs.
        if self._backlog:
            return self._backlog.popleft(), False
        return None, False

    def shutdown(self) -> None:
        if self._open:
            self._open = False
            if self in self._peers:
                self._peers.remove(self)
            if not self._peers:
                _channels.pop(self._channel, None)
                _states.pop(self._channel, None)
        super().shutdown()
