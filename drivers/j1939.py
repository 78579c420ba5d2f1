"""SAE J1939 on a CAN link: identifiers and PGNs, the transport protocol (J1939-21), DM1 (J1939-73).

Pure and event-loop friendly: nothing here starts a thread or reads a clock. Every call that
can time out takes ``now`` (the loop's ``loop.time()``), and :meth:`TransportProtocol.next_deadline`
tells the caller when to call :meth:`TransportProtocol.poll` again, so a virtual-time run stays
deterministic. :class:`J1939Node` is the small adapter that does exactly that on an asyncio loop.

Why not a library: ``can-j1939`` (last release 2.0.12, 2022, MIT) and its forks
(``python-can-j1939``, ``can-j1939-ttpsc``) run their transport protocol in an ECU object that
starts its own job thread and its own python-can Notifier, and time their sessions with
``time.time()``. Both break a virtual-time run (the loop's clock jumps; the library's does not)
and the "time from the event loop only" rule, and the TP code cannot be used without the ECU.
The part we need (BAM and RTS/CTS sessions, about 300 lines) is small enough to own and test;
identifier packing reuses ``cantools.j1939``, which the DBC loader already depends on.

What is covered:

* 29-bit identifiers: priority, EDP/DP, PDU format (PDU1: PS is the destination address and not
  part of the PGN; PDU2: PS is the group extension), source address. :class:`PgnMatcher` finds the
  DBC message for a frame by PGN whatever its priority and source, or by PGN and source when the
  DBC has the PGN from several sources, or only from one pinned source.
* Transport protocol: TP.CM (PGN 0xEC00) and TP.DT (0xEB00). A receiver for BAM (broadcast) and
  for CMDT (RTS/CTS/EndOfMsgAck/Abort) addressed to our own address; a sender for BAM and CMDT.
  Timeouts, J1939-21 5.10.2.4, checked against ``now``:

  ======  =========  ===========================================================================
  T1      0.75 s     receiver: between two TP.DT (BAM and CMDT)
  T2      1.25 s     receiver: after sending a CTS, until its first TP.DT
  T3      1.25 s     CMDT sender: after the RTS or the last TP.DT of a block, until CTS/EOM ack
  T4      1.05 s     CMDT sender: after a hold (CTS for 0 packets), until the next CTS
  Tr      0.20 s     the longest a node may take to respond; ours respond at once (T2, T3 = Tr + margin)
  Th      0.50 s     a receiver that holds repeats its hold CTS this often (shorter than T4)
  ======  =========  ===========================================================================

  A timed-out CMDT session is closed with TP.Conn_Abort reason 3 (timeout), as J1939-21 asks; a
  BAM session is dropped silently (nobody to tell). BAM packets are sent 50 ms apart (the
  J1939-21 range is 50..200 ms).
* DM1, active diagnostic trouble codes (PGN 0xFECA): lamp status and flash codes, and each DTC's
  SPN (19 bits), FMI, occurrence count, decoded with SPN conversion method version 4 (the CM bit
  0). A DTC flagged CM = 1 uses one of the older methods 1-3, which the message does not say:
  its SPN is left undecoded (``None``) with the raw bytes kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import can
from cantools import j1939 as cj

PGN_TP_CM = 0xEC00
PGN_TP_DT = 0xEB00
PGN_DM1 = 0xFECA
GLOBAL = 0xFF  # the global destination address
NULL_ADDRESS = 0xFE

# TP.CM control bytes
CM_RTS = 16
CM_CTS = 17
CM_EOM_ACK = 19
CM_BAM = 32
CM_ABORT = 255

# Conn_Abort reasons (J1939-21 table 7)
ABORT_BUSY = 1
ABORT_RESOURCES = 2
ABORT_TIMEOUT = 3
ABORT_CTS_WHILE_DT = 4
ABORT_REASONS = {
    ABORT_BUSY: "already in a connection-managed session",
    ABORT_RESOURCES: "system resources needed elsewhere",
    ABORT_TIMEOUT: "timeout",
    ABORT_CTS_WHILE_DT: "CTS received while a data transfer was in progress",
    5: "maximum retransmit request limit reached",
    6: "unexpected data transfer packet",
    7: "bad sequence number",
    8: "duplicate sequence number",
}

T1 = 0.75
T2 = 1.25
T3 = 1.25
T4 = 1.05
TR = 0.20
TH = 0.50
BAM_PACKET_INTERVAL = 0.05

MAX_TP_SIZE = 1785  # 255 packets of 7 bytes
TP_PRIORITY = 7


class J1939Error(ValueError):
    """A frame or a payload that is not valid J1939."""


# --- identifiers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class J1939Id:
    priority: int
    pgn: int
    source: int
    destination: int  # GLOBAL for PDU2 (broadcast) PGNs

    @property
    def pdu1(self) -> bool:
        return is_pdu1(self.pgn)


def is_pdu1(pgn: int) -> bool:
    """PDU1 (PF < 240): peer-to-peer, PS is a destination address."""
    return ((pgn >> 8) & 0xFF) < 240


def parse_id(can_id: int) -> J1939Id:
    """Priority, PGN, source and destination of a 29-bit identifier."""
    if not 0 <= can_id <= 0x1FFFFFFF:
        raise J1939Error(f"0x{can_id:X} is not a 29-bit identifier")
    f = cj.frame_id_unpack(can_id)
    pgn = cj.pgn_from_frame_id(can_id)
    destination = f.pdu_specific if f.pdu_format < 240 else GLOBAL
    return J1939Id(f.priority, pgn, f.source_address, destination)


def make_id(pgn: int, source: int, destination: int = GLOBAL, priority: int = 6) -> int:
    """The 29-bit identifier; for a PDU1 PGN the destination goes into PS."""
    if not 0 <= pgn <= 0x3FFFF:
        raise J1939Error(f"PGN 0x{pgn:X} does not fit 18 bits")
    edp, dp, pf, ps = (pgn >> 17) & 1, (pgn >> 16) & 1, (pgn >> 8) & 0xFF, pgn & 0xFF
    if pf < 240:
        if ps:
            raise J1939Error(f"PDU1 PGN 0x{pgn:X} has a non-zero PS byte")
        ps = destination
    frame_id: int = cj.frame_id_pack(priority, edp, dp, pf, ps, source)
    return frame_id


class _DbcMessage(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def frame_id(self) -> int: ...
    @property
    def is_extended_frame(self) -> bool: ...


class PgnMatcher:
    """Which DBC message a received 29-bit frame is, by PGN rather than by the whole identifier.

    A PGN that the DBC has from one source matches from any source and with any priority. A PGN
    the DBC has from several sources (two packs sending the same status PGN) matches by PGN and
    source. ``pinned_source`` (a station setting) accepts frames from that source address only.
    """

    def __init__(self, messages: Iterable[_DbcMessage], pinned_source: int | None = None) -> None:
        self.pinned_source = pinned_source
        by_pgn: dict[int, dict[int, Any]] = {}
        for m in messages:
            if not m.is_extended_frame:
                continue
            ident = parse_id(m.frame_id)
            by_pgn.setdefault(ident.pgn, {})[ident.source] = m
        self._any_source = {pgn: next(iter(srcs.values())) for pgn, srcs in by_pgn.items() if len(srcs) == 1}
        self._by_source = {(pgn, src): m for pgn, srcs in by_pgn.items() if len(srcs) > 1 for src, m in srcs.items()}

    def match(self, can_id: int, is_extended: bool = True) -> Any | None:
        """The DBC message of a received frame, or None (11-bit, unknown PGN, or not from the pinned source)."""
        if not is_extended:
            return None
        ident = parse_id(can_id)
        return self.match_pgn(ident.pgn, ident.source)

    def match_pgn(self, pgn: int, source: int) -> Any | None:
        """The same for a reassembled multi-packet message, known by PGN and source."""
        if self.pinned_source is not None and source != self.pinned_source:
            return None
        return self._any_source.get(pgn) or self._by_source.get((pgn, source))


# --- transport protocol --------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """A whole parameter group: a single frame or a reassembled multi-packet message."""

    pgn: int
    source: int
    destination: int
    data: bytes
    priority: int
    time: float
    transport: str = "single"  # single | bam | cmdt


@dataclass(frozen=True)
class TransferFailed:
    """A multi-packet session that ended without its message (abort or timeout)."""

    pgn: int
    source: int
    destination: int
    reason: str
    time: float


@dataclass(frozen=True)
class Sent:
    """A multi-packet message this node sent has been delivered (BAM: its last packet went out)."""

    pgn: int
    destination: int
    time: float


Event = Received | TransferFailed | Sent


def _pgn_bytes(pgn: int) -> bytes:
    return bytes([pgn & 0xFF, (pgn >> 8) & 0xFF, (pgn >> 16) & 0xFF])


def _packets(size: int) -> int:
    return (size + 6) // 7


@dataclass
class _RxSession:
    kind: str  # bam | cmdt
    pgn: int
    source: int
    destination: int
    size: int
    packets: int
    deadline: float
    priority: int
    data: bytearray = field(default_factory=bytearray)
    next_seq: int = 1
    block_end: int = 0  # last sequence number of the current CTS block (CMDT)
    max_per_cts: int = 255  # the sender's limit from its RTS
    timer: str = "T1"  # which J1939-21 timeout the deadline is


@dataclass
class _TxSession:
    kind: str  # bam | cmdt
    pgn: int
    destination: int
    data: bytes
    deadline: float
    next_seq: int = 1
    block_end: int = 0
    state: str = "sending"  # sending (BAM) | wait_cts | hold | wait_ack (CMDT)
    timer: str = "T3"


class TransportProtocol:
    """J1939-21 multi-packet sessions of one node, driven by frames and by ``now``.

    ``address`` is this node's source address (None: listen only, no CMDT as a receiver, no
    sending). ``send`` puts one CAN frame on the bus. Frames this node sent itself are ignored.
    """

    def __init__(
        self,
        address: int | None,
        send: Callable[[can.Message], None],
        *,
        cts_window: int = 16,
        bam_interval: float = BAM_PACKET_INTERVAL,
    ) -> None:
        if address is not None and not 0 <= address <= 0xFD:
            raise J1939Error(f"source address {address} is not 0..253")
        self.address = address
        self._send = send
        self.cts_window = max(1, min(255, cts_window))
        self.bam_interval = bam_interval
        self._rx: dict[tuple[int, int], _RxSession] = {}  # (source, destination)
        self._tx: dict[int, _TxSession] = {}  # destination

    # receiving ----------------------------------------------------------------------------------

    def on_frame(self, msg: can.Message, now: float) -> list[Event]:
        if not msg.is_extended_id or msg.is_error_frame or msg.is_remote_frame:
            return []
        ident = parse_id(msg.arbitration_id)
        if self.address is not None and ident.source == self.address:
            return []
        data = bytes(msg.data)
        if ident.pgn == PGN_TP_CM:
            return self._on_cm(ident, data, now)
        if ident.pgn == PGN_TP_DT:
            return self._on_dt(ident, data, now)
        if ident.destination not in (GLOBAL, self.address) and self.address is not None:
            return []
        return [Received(ident.pgn, ident.source, ident.destination, data, ident.priority, now)]

    def _for_us(self, ident: J1939Id) -> bool:
        return self.address is not None and ident.destination == self.address

    def _on_cm(self, ident: J1939Id, data: bytes, now: float) -> list[Event]:
        if len(data) < 8:
            return []
        control, pgn = data[0], data[5] | data[6] << 8 | data[7] << 16
        size, count = data[1] | data[2] << 8, data[3]
        if control == CM_BAM and ident.destination == GLOBAL:
            if not 9 <= size <= MAX_TP_SIZE or count != _packets(size):
                return []
            # A new BAM from the same source replaces the one in progress (J1939-21).
            self._rx[(ident.source, GLOBAL)] = _RxSession(
                "bam", pgn, ident.source, GLOBAL, size, count, now + T1, ident.priority
            )
            return []
        if not self._for_us(ident):
            return []
        if control == CM_RTS:
            return self._on_rts(ident, pgn, size, count, data[4], now)
        if control == CM_ABORT:
            return self._on_abort(ident, pgn, data[1], now)
        if control in (CM_CTS, CM_EOM_ACK):
            return self._on_sender_cm(ident, control, pgn, data, now)
        return []

    def _on_rts(self, ident: J1939Id, pgn: int, size: int, count: int, max_per_cts: int, now: float) -> list[Event]:
        key = (ident.source, ident.destination)
        current = self._rx.get(key)
        if current is not None and current.pgn != pgn:
            self._abort(ident.source, pgn, ABORT_BUSY)
            return []
        if not 9 <= size <= MAX_TP_SIZE or count != _packets(size):
            self._abort(ident.source, pgn, ABORT_RESOURCES)
            return []
        # A repeated RTS for the same PGN restarts the session (J1939-21): no abort for the old one.
        session = _RxSession("cmdt", pgn, ident.source, ident.destination, size, count, now + T2, ident.priority)
        session.max_per_cts = max_per_cts or 255
        self._rx[key] = session
        self._grant(session, now)
        return []

    def _grant(self, session: _RxSession, now: float) -> None:
        window = min(self.cts_window, session.packets - session.next_seq + 1, session.max_per_cts)
        session.block_end = session.next_seq + window - 1
        session.deadline, session.timer = now + T2, "T2"
        cts = bytes([CM_CTS, window, session.next_seq, 0xFF, 0xFF]) + _pgn_bytes(session.pgn)
        self._put(PGN_TP_CM, cts, session.source)

    def _on_dt(self, ident: J1939Id, data: bytes, now: float) -> list[Event]:
        session = self._rx.get((ident.source, ident.destination))
        if session is None or len(data) < 2:
            return []
        seq = data[0]
        if seq != session.next_seq:
            del self._rx[(session.source, session.destination)]
            if session.kind == "cmdt":
                self._abort(session.source, session.pgn, 7)
            return [
                TransferFailed(
                    session.pgn,
                    session.source,
                    session.destination,
                    f"packet {seq} where {session.next_seq} was due",
                    now,
                )
            ]
        session.data += data[1:8]
        session.next_seq += 1
        session.deadline, session.timer = now + T1, "T1"
        if seq < session.packets:
            if session.kind == "cmdt" and seq == session.block_end:
                self._grant(session, now)
            return []
        del self._rx[(session.source, session.destination)]
        if session.kind == "cmdt":
            ack = bytes([CM_EOM_ACK, session.size & 0xFF, session.size >> 8, session.packets, 0xFF])
            self._put(PGN_TP_CM, ack + _pgn_bytes(session.pgn), session.source)
        return [
            Received(
                session.pgn,
                session.source,
                session.destination,
                bytes(session.data[: session.size]),
                session.priority,
                now,
                session.kind,
            )
        ]

    def _on_abort(self, ident: J1939Id, pgn: int, reason: int, now: float) -> list[Event]:
        why = f"aborted by 0x{ident.source:02X}: {ABORT_REASONS.get(reason, f'reason {reason}')}"
        events: list[Event] = []
        rx = self._rx.get((ident.source, ident.destination))
        if rx is not None and rx.pgn == pgn:
            del self._rx[(ident.source, ident.destination)]
            events.append(TransferFailed(pgn, ident.source, ident.destination, why, now))
        tx = self._tx.get(ident.source)
        if tx is not None and tx.pgn == pgn:
            del self._tx[ident.source]
            events.append(TransferFailed(pgn, ident.destination, ident.source, why, now))
        return events

    # sending ------------------------------------------------------------------------------------

    def send_pgn(self, pgn: int, data: bytes, now: float, destination: int = GLOBAL, priority: int = 6) -> None:
        """Send a parameter group: one frame up to 8 bytes, else BAM (global) or RTS/CTS (to one node)."""
        if self.address is None:
            raise J1939Error("a listen-only node has no source address to send from")
        if not is_pdu1(pgn):
            destination = GLOBAL
        if len(data) <= 8:
            self._put(pgn, bytes(data), destination, priority)
            return
        if len(data) > MAX_TP_SIZE:
            raise J1939Error(f"{len(data)} bytes: the transport protocol carries at most {MAX_TP_SIZE}")
        if destination in self._tx:
            raise J1939Error(f"a multi-packet message to 0x{destination:02X} is already in progress")
        size, count = len(data), _packets(len(data))
        if destination == GLOBAL:
            self._put(PGN_TP_CM, bytes([CM_BAM, size & 0xFF, size >> 8, count, 0xFF]) + _pgn_bytes(pgn), GLOBAL)
            self._tx[GLOBAL] = _TxSession("bam", pgn, GLOBAL, bytes(data), now + self.bam_interval)
            return
        rts = bytes([CM_RTS, size & 0xFF, size >> 8, count, 0xFF]) + _pgn_bytes(pgn)
        self._put(PGN_TP_CM, rts, destination)
        self._tx[destination] = _TxSession("cmdt", pgn, destination, bytes(data), now + T3, state="wait_cts")

    def _on_sender_cm(self, ident: J1939Id, control: int, pgn: int, data: bytes, now: float) -> list[Event]:
        tx = self._tx.get(ident.source)
        if tx is None or tx.kind != "cmdt" or tx.pgn != pgn:
            if control == CM_CTS:
                self._abort(ident.source, pgn, ABORT_RESOURCES)
            return []
        if control == CM_EOM_ACK:
            del self._tx[ident.source]
            return [Sent(pgn, ident.source, now)]
        # A block goes out within this call, so a CTS never finds a transfer in progress here; a
        # CTS after the last block asks for packets again, which J1939-21 allows.
        count, first = data[1], data[2]
        if count == 0:
            # Hold: the receiver repeats it every Th; each one restarts T4.
            tx.state, tx.deadline, tx.timer = "hold", now + T4, "T4"
            return []
        total = _packets(len(tx.data))
        tx.next_seq = max(1, min(first, total))
        tx.block_end = min(total, tx.next_seq + count - 1)
        while tx.next_seq <= tx.block_end:
            self._put_dt(tx, ident.source)
        tx.state, tx.deadline, tx.timer = "wait_ack" if tx.block_end == total else "wait_cts", now + T3, "T3"
        return []

    def _put_dt(self, tx: _TxSession, destination: int) -> None:
        chunk = tx.data[(tx.next_seq - 1) * 7 : tx.next_seq * 7]
        self._put(PGN_TP_DT, bytes([tx.next_seq]) + chunk + b"\xff" * (7 - len(chunk)), destination)
        tx.next_seq += 1

    # time ---------------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        deadlines = [s.deadline for s in self._rx.values()] + [s.deadline for s in self._tx.values()]
        return min(deadlines, default=None)

    def poll(self, now: float) -> list[Event]:
        """Send BAM packets that are due and end the sessions whose timeout has passed."""
        events: list[Event] = []
        for key, rx in list(self._rx.items()):
            if now >= rx.deadline:
                del self._rx[key]
                if rx.kind == "cmdt":
                    self._abort(rx.source, rx.pgn, ABORT_TIMEOUT)
                why = f"timeout ({rx.timer}) waiting for packet {rx.next_seq} of {rx.packets}"
                events.append(TransferFailed(rx.pgn, rx.source, rx.destination, why, now))
        for destination, tx in list(self._tx.items()):
            if now < tx.deadline:
                continue
            if tx.kind == "bam":
                self._put_dt(tx, GLOBAL)
                if tx.next_seq > _packets(len(tx.data)):
                    del self._tx[destination]
                    events.append(Sent(tx.pgn, GLOBAL, now))
                else:
                    tx.deadline = now + self.bam_interval
                continue
            del self._tx[destination]
            self._abort(destination, tx.pgn, ABORT_TIMEOUT)
            why = f"timeout ({tx.timer}) waiting for {'the end-of-message ack' if tx.state == 'wait_ack' else 'a CTS'}"
            events.append(TransferFailed(tx.pgn, self.address or 0, destination, why, now))
        return events

    # frames -------------------------------------------------------------------------------------

    def _abort(self, destination: int, pgn: int, reason: int) -> None:
        self._put(PGN_TP_CM, bytes([CM_ABORT, reason, 0xFF, 0xFF, 0xFF]) + _pgn_bytes(pgn), destination)

    def _put(self, pgn: int, data: bytes, destination: int, priority: int = TP_PRIORITY) -> None:
        assert self.address is not None, "a listen-only node never sends"
        can_id = make_id(pgn, self.address, destination, priority)
        self._send(can.Message(arbitration_id=can_id, is_extended_id=True, data=data))


# --- DM1 -----------------------------------------------------------------------------------------

LAMP_STATES = ("off", "on", "error", "not available")
FLASH_STATES = ("slow", "fast", "reserved", "off")  # 1 Hz, 2 Hz, -, do not flash / unavailable
LAMPS = ("mil", "rsl", "awl", "pl")  # malfunction, red stop, amber warning, protect


@dataclass(frozen=True)
class Lamp:
    state: str  # LAMP_STATES
    flash: str  # FLASH_STATES

    @property
    def on(self) -> bool:
        return self.state == "on"


@dataclass(frozen=True)
class Dtc:
    spn: int | None  # None: conversion method 1-3, not decodable without knowing which
    fmi: int
    occurrence: int  # 127: not available
    conversion_method_bit: int
    raw: bytes


@dataclass(frozen=True)
class Dm1:
    lamps: dict[str, Lamp]
    dtcs: tuple[Dtc, ...]

    @property
    def mil(self) -> Lamp:
        return self.lamps["mil"]

    @property
    def rsl(self) -> Lamp:
        return self.lamps["rsl"]

    @property
    def awl(self) -> Lamp:
        return self.lamps["awl"]

    @property
    def pl(self) -> Lamp:
        return self.lamps["pl"]


def decode_dtc(raw: bytes) -> Dtc:
    """Four bytes: SPN low 16 bits, SPN high 3 bits + FMI, CM bit + occurrence count."""
    if len(raw) != 4:
        raise J1939Error(f"a DTC is 4 bytes, not {len(raw)}")
    cm, oc, fmi = raw[3] >> 7, raw[3] & 0x7F, raw[2] & 0x1F
    spn = raw[0] | raw[1] << 8 | (raw[2] >> 5) << 16 if cm == 0 else None
    return Dtc(spn, fmi, oc, cm, bytes(raw))


def decode_dm1(data: bytes) -> Dm1:
    """A DM1 payload, single frame or reassembled; filler DTC slots (all 0 or all 0xFF) are skipped."""
    if len(data) < 2:
        raise J1939Error(f"a DM1 has at least 2 bytes (lamps), not {len(data)}")
    lamps = {
        name: Lamp(LAMP_STATES[(data[0] >> shift) & 3], FLASH_STATES[(data[1] >> shift) & 3])
        for name, shift in zip(LAMPS, (6, 4, 2, 0), strict=True)
    }
    dtcs = []
    for i in range(2, len(data) - 3, 4):
        raw = data[i : i + 4]
        if raw in (b"\0\0\0\0", b"\xff\xff\xff\xff"):
            continue
        dtcs.append(decode_dtc(raw))
    return Dm1(lamps, tuple(dtcs))


def encode_dtc(spn: int, fmi: int, occurrence: int = 1) -> bytes:
    if not 0 <= spn < 1 << 19 or not 0 <= fmi <= 31 or not 0 <= occurrence <= 127:
        raise J1939Error(f"DTC SPN {spn} FMI {fmi} OC {occurrence} out of range")
    return bytes([spn & 0xFF, (spn >> 8) & 0xFF, (spn >> 16) << 5 | fmi, occurrence])


def encode_dm1(dtcs: Iterable[tuple[int, int, int]], lamps: dict[str, tuple[str, str]] | None = None) -> bytes:
    """The DM1 payload a device sends: ``dtcs`` as (spn, fmi, occurrence); no DTC gives the zero DTC."""
    lamp_byte = flash_byte = 0
    for name, shift in zip(LAMPS, (6, 4, 2, 0), strict=True):
        state, flash = (lamps or {}).get(name, ("off", "off"))
        lamp_byte |= LAMP_STATES.index(state) << shift
        flash_byte |= FLASH_STATES.index(flash) << shift
    body = b"".join(encode_dtc(*d) for d in dtcs) or b"\0\0\0\0"
    payload = bytes([lamp_byte, flash_byte]) + body
    return payload + b"\xff" * (8 - len(payload)) if len(payload) < 8 else payload


# --- on the event loop ---------------------------------------------------------------------------


class J1939Node:
    """A :class:`TransportProtocol` on an asyncio loop: frames in, timers from ``loop.time()``.

    On the in-process link it registers as a listener (unless ``attach`` is False); on other
    buses the owner calls :meth:`feed` from the loop for every received frame. ``on_event`` gets every
    :class:`Received`, :class:`TransferFailed` and :class:`Sent`.
    """

    def __init__(
        self,
        bus: can.BusABC,
        address: int | None,
        on_event: Callable[[Event], None],
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        send: Callable[[can.Message], None] | None = None,
        attach: bool = True,
        **options: Any,
    ) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self.bus = bus
        self.on_event = on_event
        # ``send`` replaces ``bus.send`` (a device records what it sends); with ``attach`` False the
        # owner feeds every frame itself, also on the in-process link.
        self.tp = TransportProtocol(address, send or bus.send, **options)
        self._timer: asyncio.TimerHandle | None = None
        add_listener = getattr(bus, "add_listener", None)
        self._listening = attach and callable(add_listener)
        if self._listening:
            bus.add_listener(self.feed)  # type: ignore[attr-defined]

    def feed(self, msg: can.Message) -> None:
        self._dispatch(self.tp.on_frame(msg, self.loop.time()))

    def send_pgn(self, pgn: int, data: bytes, destination: int = GLOBAL, priority: int = 6) -> None:
        self.tp.send_pgn(pgn, data, self.loop.time(), destination, priority)
        self._rearm()

    def _tick(self) -> None:
        self._timer = None
        self._dispatch(self.tp.poll(self.loop.time()))

    def _dispatch(self, events: list[Event]) -> None:
        self._rearm()
        for event in events:
            self.on_event(event)

    def _rearm(self) -> None:
        deadline = self.tp.next_deadline()
        if self._timer is not None and (deadline is None or self._timer.when() != deadline):
            self._timer.cancel()
            self._timer = None
        if deadline is not None and self._timer is None:
            self._timer = self.loop.call_at(deadline, self._tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._listening:
            self.bus.remove_listener(self.feed)  # type: ignore[attr-defined]
