"""A socketcand-protocol server bridging in-process CAN channels to TCP clients.

It speaks the server side of what python-can's stock ``socketcand`` interface sends and expects
(``can/interfaces/socketcand/socketcand.py``), so that a bench connects with::

    can.Bus(interface="socketcand", host="127.0.0.1", port=29536, channel="bench0")

The conversation (socketcand's ASCII protocol, one ``< ... >`` element per message)::

    server: < hi >
    client: < open bench0 >        server: < ok >        (or < error ... > for an unknown channel)
    client: < rawmode >            server: < ok >
    server: < frame 101 12.345678 0A0B0C >       every frame on the channel, hex id and data
    client: < send 200 8 1 2 3 4 5 6 7 8 >       a frame to put on the channel (hex id, dlc, bytes)
    client: < echo >               server: < echo >

Frames are stamped with the serving loop's clock (the plant's time); the client maps them onto
its own. The python-can client reads each handshake reply with one ``recv`` and compares it
whole, so nothing may follow ``< ok >`` in the same segment: frames start only once the client
has sent something after ``< rawmode >`` (it has then finished its handshake) or after
:data:`RAW_SETTLE_S`.

CAN FD: socketcand's protocol has no FD frame (upstream proposals for ``< fdframe >`` /
``< fdsend >`` are not merged), and python-can's client writes ``< send ID LEN BYTES >`` with
LEN the payload length in hex and reads any ``< frame >`` as a classic frame. The served
channels are FD-capable, and the payload crosses both ways whole: a ``send`` of more than 8
bytes (up to 64) becomes an FD frame (without BRS: the client cannot say), and an FD frame goes
out as a ``< frame >`` with all its bytes. What the protocol cannot carry is the FD flag of a
frame of 8 bytes or fewer and the BRS flag; the server logs that once per frame id rather than
letting it pass unnoticed. Nothing is ever cut to 8 bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import can

log = logging.getLogger(__name__)

# How long frames are held back after "< rawmode >" when the client sends nothing itself.
RAW_SETTLE_S = 0.2
# A client that does not read its frames is dropped rather than buffering without bound.
MAX_CLIENT_BUFFER = 4 * 1024 * 1024
MAX_CLASSIC_LEN = 8
MAX_FD_LEN = 64


def format_frame(msg: can.Message) -> bytes:
    """``< frame ID SECONDS DATA >``: 3 hex digits for 11-bit ids, 8 for 29-bit (the client tells them apart by length)."""
    can_id = f"{msg.arbitration_id:08X}" if msg.is_extended_id else f"{msg.arbitration_id:03X}"
    return f"< frame {can_id} {msg.timestamp:.6f} {bytes(msg.data).hex().upper()} >".encode("ascii")


def parse_send(fields: Sequence[str]) -> can.Message:
    """``['send', '200', '8', '1', ...]`` -> a Message; ValueError when malformed."""
    if len(fields) < 3:
        raise ValueError("send needs an id and a length")
    id_text, length = fields[1], int(fields[2], 16)
    data = bytes(int(b, 16) for b in fields[3:])
    if len(data) != length:
        raise ValueError(f"length {length} does not match {len(data)} data bytes")
    if length > MAX_FD_LEN:
        raise ValueError(f"length {length}: a CAN FD frame carries at most {MAX_FD_LEN} bytes")
    # The protocol has no FD flag: only a payload a classic frame cannot hold marks an FD frame.
    is_fd = length > MAX_CLASSIC_LEN
    if is_fd:
        # Padded as the controller would (12, 16, 20, 24, 32, 48, 64), so every client sees the wire bytes.
        data += bytes(can.util.dlc2len(can.util.len2dlc(length)) - length)
    return can.Message(
        arbitration_id=int(id_text, 16), is_extended_id=len(id_text) > 3, data=data, dlc=len(data), is_fd=is_fd
    )


class _Client(asyncio.Protocol):
    def __init__(self, server: SocketcandServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.channel: str | None = None
        self.raw = False  # frames are forwarded to this client
        self._settle: asyncio.TimerHandle | None = None
        self._buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.clients.add(self)
        transport.write(b"< hi >")

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.clients.discard(self)
        if self._settle is not None:
            self._settle.cancel()

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while True:
            start = self._buf.find(b"<")
            end = self._buf.find(b">", start + 1) if start >= 0 else -1
            if start < 0:
                self._buf.clear()
                return
            if end < 0:
                if len(self._buf) > 4096:  # garbage without an end: drop it
                    self._buf.clear()
                return
            element = bytes(self._buf[start + 1 : end]).decode("ascii", "replace").split()
            del self._buf[: end + 1]
            if element:
                self._handle(element)

    def _reply(self, text: str) -> None:
        if self.transport is not None:
            self.transport.write(f"< {text} >".encode("ascii"))

    def _go_raw(self) -> None:
        self._settle = None
        if self.channel is not None:
            self.raw = True

    def _handle(self, fields: list[str]) -> None:
        cmd = fields[0].lower()
        if self.channel is not None and self._settle is not None:
            # The client talks again, so it has read "< ok >": frames may flow now.
            self._settle.cancel()
            self._go_raw()
        if cmd == "open":
            name = fields[1] if len(fields) > 1 else ""
            if name not in self.server.buses:
                self._reply(f"error could not open bus {name}: served channels are {', '.join(self.server.buses)}")
                return
            self.channel = name
            self._reply("ok")
        elif cmd == "rawmode":
            if self.channel is None:
                self._reply("error no bus opened")
                return
            self._reply("ok")
            self._settle = asyncio.get_running_loop().call_later(RAW_SETTLE_S, self._go_raw)
        elif cmd == "send":
            if self.channel is None:
                self._reply("error no bus opened")
                return
            try:
                msg = parse_send(fields)
            except ValueError as exc:
                self._reply(f"error bad send: {exc}")
                return
            self.server.transmit(self, self.channel, msg)
        elif cmd == "echo":
            self._reply("echo")
        else:
            self._reply(f"error unsupported command {cmd}")

    def forward(self, line: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() > MAX_CLIENT_BUFFER:
            log.warning("socketcand client does not read its frames; closing it")
            transport.abort()
            return
        transport.write(line)


class SocketcandServer:
    """One TCP port; each served channel is a node on the in-process CAN channel of that name."""

    def __init__(self, channels: Sequence[str], host: str = "127.0.0.1", port: int = 29536) -> None:
        self.host = host
        self.port = port
        self.channel_names = list(channels)
        self.buses: dict[str, Any] = {}
        self.clients: set[_Client] = set()
        self._server: asyncio.Server | None = None
        self._fd_flags_lost: set[tuple[str, int]] = set()

    async def start(self) -> None:
        for name in self.channel_names:
            # python-can resolves "inproc" through its entry point: no import of the driver package.
            # FD-capable, so that FD frames from clients and plants cross the server.
            bus: Any = can.Bus(interface="inproc", channel=name, fd=True)
            bus.add_listener(lambda msg, name=name: self._from_plant(name, msg))
            self.buses[name] = bus
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Client(self), self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def _from_plant(self, channel: str, msg: can.Message) -> None:
        if msg.is_error_frame:
            return
        self._note_fd_flags(channel, msg)
        line = format_frame(msg)
        for client in list(self.clients):
            if client.raw and client.channel == channel:
                client.forward(line)

    def _note_fd_flags(self, channel: str, msg: can.Message) -> None:
        """Say once per frame id what the protocol drops, so a lost flag is never a silent surprise."""
        if not msg.is_fd or (channel, msg.arbitration_id) in self._fd_flags_lost:
            return
        self._fd_flags_lost.add((channel, msg.arbitration_id))
        lost = "its FD and BRS flags" if len(msg.data) <= MAX_CLASSIC_LEN else "its BRS flag"
        log.warning(
            "channel %s: CAN FD frame 0x%X goes to socketcand clients without %s (the protocol has no FD frame);"
            " its %d data bytes are sent whole",
            channel,
            msg.arbitration_id,
            lost,
            len(msg.data),
        )

    def transmit(self, sender: _Client, channel: str, msg: can.Message) -> None:
        bus = self.buses[channel]
        bus.send(msg)
        # Other TCP clients on the channel see the frame too, as on a real bus (not the sender).
        msg.timestamp = asyncio.get_running_loop().time()
        line = format_frame(msg)
        for client in list(self.clients):
            if client is not sender and client.raw and client.channel == channel:
                client.forward(line)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for client in list(self.clients):
                if client.transport is not None:
                    client.transport.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        for bus in self.buses.values():
            bus.shutdown()
        self.buses.clear()
