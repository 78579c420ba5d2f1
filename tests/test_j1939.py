"""J1939 foundations (drivers/j1939.py): identifiers and PGN matching, the J1939-21 transport
protocol on the in-process link in virtual time (BAM and CMDT, aborts and every timeout), DM1.

Expected bytes are written out by hand from J1939-21 / J1939-73, not produced by the code under
test, so that an encoder and a decoder that agree on a wrong layout still fail.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import can
import cantools
import pytest

from drivers import j1939
from drivers.j1939 import (
    PGN_DM1,
    J1939Error,
    J1939Node,
    PgnMatcher,
    Received,
    Sent,
    TransferFailed,
    decode_dm1,
    encode_dm1,
    make_id,
    parse_id,
)
from tests import can_link
from tests.can_link import frame, fresh_channel
from tests.expected_protocol import run_virtual

J1939_DBC = Path(__file__).parent / "dbc" / "j1939_two_sources.dbc"
PACK_A, PACK_B, BENCH = 0xF3, 0xF4, 0xF9
PROP_A = 0xEF00  # Proprietary A: a PDU1 (destination-specific) PGN

# DM1: MIL on and fast flashing, amber warning lamp on (steady), red stop and protect off;
# DTC 1: SPN 1569 FMI 31 OC 1; DTC 2: SPN 520348 (0x7F09C, all 19 bits in use) FMI 14 OC 127.
DM1_TWO_DTCS = bytes.fromhex("44 7F 21061F01 9CF0EE7F".replace(" ", ""))


def now() -> float:
    return asyncio.get_running_loop().time()


class Wire:
    """A channel with a recorder on it: every frame with its loop time."""

    def __init__(self) -> None:
        self.channel = fresh_channel("j1939")
        self.frames: list[tuple[float, can.Message]] = []
        self._buses: list[Any] = []
        self._nodes: list[J1939Node] = []
        self.recorder = self.bus()
        self.recorder.add_listener(lambda m: self.frames.append((now(), m)))

    def bus(self) -> Any:
        bus = can_link.node(self.channel)
        self._buses.append(bus)
        return bus

    def node(self, address: int | None, **options: Any) -> tuple[J1939Node, list[j1939.Event]]:
        events: list[j1939.Event] = []
        node = J1939Node(self.bus(), address, events.append, **options)
        self._nodes.append(node)
        return node, events

    def scripted(self, peer_address: int, node_address: int = BENCH) -> tuple[Peer, J1939Node, list[j1939.Event]]:
        """A scripted peer and the node under test, with the events the node reports."""
        node, events = self.node(node_address)
        return Peer(self, peer_address), node, events

    def tp_cm(self, source: int | None = None) -> list[bytes]:
        return [
            bytes(m.data)
            for _, m in self.frames
            if parse_id(m.arbitration_id).pgn == j1939.PGN_TP_CM and source in (None, parse_id(m.arbitration_id).source)
        ]

    def close(self) -> None:
        for node in self._nodes:
            node.close()
        for bus in self._buses:
            bus.shutdown()


class Peer:
    """A scripted node: sends exactly the frames a test gives it, from its own source address."""

    def __init__(self, wire: Wire, address: int) -> None:
        self.bus, self.address = wire.bus(), address

    def cm(self, destination: int, payload: str) -> None:
        self.put(j1939.PGN_TP_CM, destination, bytes.fromhex(payload.replace(" ", "")))

    def dt(self, destination: int, seq: int, chunk: bytes) -> None:
        self.put(j1939.PGN_TP_DT, destination, bytes([seq]) + chunk.ljust(7, b"\xff"))

    def put(self, pgn: int, destination: int, data: bytes, priority: int = 7) -> None:
        self.bus.send(frame(make_id(pgn, self.address, destination, priority), data))


def on_wire(main: Callable[[Wire], Awaitable[None]]) -> None:
    """Run ``main`` on a fresh wire in virtual time; every node and bus of the wire is closed after it."""

    async def run() -> None:
        wire = Wire()
        try:
            await main(wire)
        finally:
            wire.close()

    run_virtual(run)


# --- identifiers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("can_id", "priority", "pgn", "source", "destination"),
    [
        (0x18FECAF3, 6, 0xFECA, 0xF3, 0xFF),  # DM1, PDU2: PS is the group extension
        (0x0CF00400, 3, 0xF004, 0x00, 0xFF),  # EEC1 from the engine, priority 3
        (0x18EF27F9, 6, 0xEF00, 0xF9, 0x27),  # Proprietary A, PDU1: PS is the destination
        (0x18EAFFF9, 6, 0xEA00, 0xF9, 0xFF),  # request to global
        (0x19FECAF3, 6, 0x1FECA, 0xF3, 0xFF),  # data page 1
        (0x1BFECAF3, 6, 0x3FECA, 0xF3, 0xFF),  # extended data page and data page
        (0x1CECFFF3, 7, 0xEC00, 0xF3, 0xFF),  # TP.CM BAM
    ],
)
def test_pgn_priority_and_addresses_of_a_29_bit_id(
    can_id: int, priority: int, pgn: int, source: int, destination: int
) -> None:
    ident = parse_id(can_id)
    assert (ident.priority, ident.pgn, ident.source, ident.destination) == (priority, pgn, source, destination)
    assert make_id(pgn, source, destination, priority) == can_id


def test_a_pdu1_pgn_with_a_ps_byte_or_an_oversized_id_is_refused() -> None:
    with pytest.raises(J1939Error, match="non-zero PS"):
        make_id(0xEF27, 0xF9)
    with pytest.raises(J1939Error, match="not a 29-bit"):
        parse_id(0x2000_0000)


def _matcher(pinned: int | None = None) -> PgnMatcher:
    db: Any = cantools.database.load_file(str(J1939_DBC))
    return PgnMatcher(db.messages, pinned_source=pinned)


def _name(m: Any) -> str | None:
    return None if m is None else str(m.name)


def test_a_dbc_message_matches_by_pgn_whatever_the_priority_and_source() -> None:
    matcher = _matcher()
    # Pack_Limits (PGN 0xFF11) is in the DBC from 0xF3 only: any priority, any source matches it.
    assert _name(matcher.match(0x18FF11F3)) == "Pack_Limits"
    assert _name(matcher.match(0x0CFF1127)) == "Pack_Limits"
    # PGN 0xFF10 comes from two packs: the source address tells them apart.
    assert _name(matcher.match(0x18FF10F3)) == "PackA_Status"
    assert _name(matcher.match(0x14FF10F4)) == "PackB_Status"
    assert matcher.match(0x18FF10F5) is None
    assert _name(matcher.match_pgn(PGN_DM1, 0x00)) == "DM1"
    assert matcher.match(0x18FF99F3) is None and matcher.match(0x7FF, is_extended=False) is None


def test_a_pinned_source_ignores_the_same_pgn_from_another_address() -> None:
    matcher = _matcher(pinned=PACK_A)
    assert _name(matcher.match(0x18FF11F3)) == "Pack_Limits"
    assert matcher.match(0x18FF11F4) is None
    assert matcher.match(0x18FF10F4) is None
    assert matcher.match_pgn(PGN_DM1, PACK_B) is None
    assert _name(matcher.match_pgn(PGN_DM1, PACK_A)) == "DM1"


# --- DM1 --------------------------------------------------------------------------------------


def test_dm1_lamps_and_two_dtcs_decode_as_j1939_73_lays_them_out() -> None:
    dm1 = decode_dm1(DM1_TWO_DTCS)
    assert (dm1.mil.state, dm1.mil.flash, dm1.mil.on) == ("on", "fast", True)
    assert (dm1.awl.state, dm1.awl.flash) == ("on", "off")
    assert (dm1.rsl.state, dm1.pl.state) == ("off", "off")
    assert [(d.spn, d.fmi, d.occurrence, d.conversion_method_bit) for d in dm1.dtcs] == [
        (1569, 31, 1, 0),
        (520348, 14, 127, 0),
    ]
    lamps = {"mil": ("on", "fast"), "awl": ("on", "off"), "rsl": ("off", "off"), "pl": ("off", "off")}
    assert encode_dm1([(1569, 31, 1), (520348, 14, 127)], lamps) == DM1_TWO_DTCS


def test_a_single_frame_dm1_with_one_dtc_or_none() -> None:
    one = decode_dm1(bytes.fromhex("04005B000305FFFF"))  # AWL on, slow flash codes; SPN 91 FMI 3 OC 5
    assert one.awl.on and one.awl.flash == "slow"
    assert [(d.spn, d.fmi, d.occurrence) for d in one.dtcs] == [(91, 3, 5)]
    none = decode_dm1(bytes.fromhex("00FF00000000FFFF"))
    assert none.dtcs == () and not none.mil.on and none.mil.flash == "off"
    assert encode_dm1([]) == bytes.fromhex("00FF00000000FFFF"), "lamps off, do not flash, zero DTC"


def test_a_dtc_of_an_older_conversion_method_keeps_its_bytes_but_no_spn() -> None:
    (dtc,) = decode_dm1(bytes.fromhex("000021061F81")).dtcs
    assert (
        dtc.spn is None
        and dtc.conversion_method_bit == 1
        and dtc.occurrence == 1
        and dtc.raw == bytes.fromhex("21061F81")
    )


def test_the_dbc_layout_of_a_single_frame_dm1_agrees_with_the_decoder() -> None:
    db: Any = cantools.database.load_file(str(J1939_DBC))
    frame = bytes.fromhex("44009CF0EE7FFFFF")
    signals = db.get_message_by_name("DM1").decode(frame, decode_choices=False)
    (dtc,) = decode_dm1(frame).dtcs
    # Conversion method 4 splits the SPN: 16 low bits in bytes 3-4, the 3 high bits above the FMI.
    spn = signals["DTC1_SPN_Low16"] + (signals["DTC1_SPN_High3"] << 16)
    assert (spn, signals["DTC1_FMI"], signals["DTC1_OccurrenceCount"]) == (dtc.spn, dtc.fmi, dtc.occurrence)
    assert signals["MalfunctionIndicatorLampStatus"] == 1 and signals["AmberWarningLampStatus"] == 1


# --- BAM --------------------------------------------------------------------------------------


def test_a_dm1_with_two_dtcs_sent_over_bam_is_reassembled_and_decoded() -> None:
    async def main(wire: Wire) -> None:
        pack, pack_events = wire.node(PACK_A)
        _bench, bench_events = wire.node(BENCH)
        _listener, listener_events = wire.node(None)  # a listen-only bench reassembles BAM too
        pack.send_pgn(PGN_DM1, DM1_TWO_DTCS)
        await asyncio.sleep(1.0)
        for events in (bench_events, listener_events):
            (got,) = events
            assert isinstance(got, Received) and got.transport == "bam"
            assert (got.pgn, got.source, got.destination) == (PGN_DM1, PACK_A, 0xFF)
            assert got.data == DM1_TWO_DTCS
            assert [d.spn for d in decode_dm1(got.data).dtcs] == [1569, 520348]
        (sent,) = pack_events
        assert (
            isinstance(sent, Sent)
            and (sent.pgn, sent.destination) == (PGN_DM1, 0xFF)
            and sent.time == pytest.approx(0.1)
        )
        # TP.CM_BAM (10 bytes, 2 packets, PGN FECA) then two TP.DT 50 ms apart, the last padded.
        assert [(round(t, 6), hex(m.arbitration_id), bytes(m.data).hex()) for t, m in wire.frames] == [
            (0.0, "0x1cecfff3", "200a0002ffcafe00"),
            (0.05, "0x1cebfff3", "01447f21061f019c"),
            (0.1, "0x1cebfff3", "02f0ee7fffffffff"),
        ]

    on_wire(main)


def test_two_packs_broadcast_dm1_at_once_and_a_pinned_source_takes_only_its_own() -> None:
    async def main(wire: Wire) -> None:
        pack_a, _ = wire.node(PACK_A)
        pack_b, _ = wire.node(PACK_B)
        _bench, events = wire.node(BENCH)
        other = encode_dm1([(91, 3, 5), (100, 1, 2), (110, 0, 1)])  # three DTCs: 3 packets
        pack_b.send_pgn(PGN_DM1, other)
        pack_a.send_pgn(PGN_DM1, DM1_TWO_DTCS)  # the two BAM sessions interleave on the wire
        await asyncio.sleep(1.0)
        got = {e.source: e.data for e in events if isinstance(e, Received)}
        assert got == {PACK_A: DM1_TWO_DTCS, PACK_B: other}
        pinned = _matcher(pinned=PACK_A)
        accepted = [e for e in events if isinstance(e, Received) and pinned.match_pgn(e.pgn, e.source) is not None]
        assert [(e.source, [d.spn for d in decode_dm1(e.data).dtcs]) for e in accepted] == [(PACK_A, [1569, 520348])]

    on_wire(main)


def test_a_bam_that_stops_midway_times_out_after_t1_and_a_late_packet_is_ignored() -> None:
    async def main(wire: Wire) -> None:
        peer, _, events = wire.scripted(PACK_A)
        peer.cm(0xFF, "20 0A00 02 FF CAFE00")
        await asyncio.sleep(0.05)
        peer.dt(0xFF, 1, DM1_TWO_DTCS[:7])
        await asyncio.sleep(0.74)
        assert events == [], "still within T1 (0.75 s) of the last packet"
        await asyncio.sleep(0.02)
        peer.dt(0xFF, 2, DM1_TWO_DTCS[7:])
        await asyncio.sleep(0.1)
        (failed,) = events
        assert isinstance(failed, TransferFailed) and failed.pgn == PGN_DM1 and failed.source == PACK_A
        assert failed.reason == "timeout (T1) waiting for packet 2 of 2"
        assert failed.time == pytest.approx(0.05 + j1939.T1)
        assert wire.tp_cm() == [bytes.fromhex("200a0002ffcafe00")], "nobody answers a BAM, not even with an abort"

    on_wire(main)


def test_a_bam_packet_out_of_sequence_ends_the_session() -> None:
    async def main(wire: Wire) -> None:
        peer, _, events = wire.scripted(PACK_A)
        peer.cm(0xFF, "20 1400 03 FF CAFE00")
        peer.dt(0xFF, 1, b"\x00" * 7)
        peer.dt(0xFF, 3, b"\x00" * 7)
        peer.dt(0xFF, 2, b"\x00" * 7)
        await asyncio.sleep(1.0)
        assert [(type(e).__name__, getattr(e, "reason", "")) for e in events] == [
            ("TransferFailed", "packet 3 where 2 was due")
        ]

    on_wire(main)


# --- CMDT -------------------------------------------------------------------------------------


def test_cmdt_between_two_nodes_in_blocks_of_two_packets() -> None:
    async def main(wire: Wire) -> None:
        sender, sender_events = wire.node(0x27)
        _receiver, receiver_events = wire.node(BENCH, cts_window=2)
        payload = bytes(range(40))  # 6 packets
        sender.send_pgn(PROP_A, payload, destination=BENCH)
        await asyncio.sleep(2.0)
        (got,) = receiver_events
        assert isinstance(got, Received) and got.transport == "cmdt"
        assert (got.pgn, got.source, got.destination, got.data) == (PROP_A, 0x27, BENCH, payload)
        assert sender_events == [Sent(PROP_A, BENCH, 0.0)]
        assert [m.hex() for m in wire.tp_cm()] == [
            "10280006ff00ef00",  # RTS: 40 bytes, 6 packets, no per-CTS limit, PGN EF00
            "110201ffff00ef00",  # CTS: 2 packets from 1
            "110203ffff00ef00",
            "110205ffff00ef00",
            "13280006ff00ef00",  # EndOfMsgAck
        ]

    on_wire(main)


def test_the_senders_packets_per_cts_limit_is_kept() -> None:
    async def main(wire: Wire) -> None:
        peer, _, events = wire.scripted(0x27)  # would grant 16
        peer.cm(BENCH, "10 1400 03 01 00EF00")  # at most 1 packet per CTS
        await asyncio.sleep(0.01)
        for seq in (1, 2, 3):
            peer.dt(BENCH, seq, bytes([seq] * 7))
            await asyncio.sleep(0.01)
        assert [m.hex()[:6] for m in wire.tp_cm()] == ["101400", "110101", "110102", "110103", "131400"]
        (got,) = events
        assert isinstance(got, Received) and got.data == bytes([1] * 7 + [2] * 7 + [3] * 6)

    on_wire(main)


@pytest.mark.parametrize(
    ("script", "timer", "at"),
    [
        ("no data after the CTS", "T2", j1939.T2),
        ("stops after packet 1", "T1", 0.1 + j1939.T1),
    ],
)
def test_a_cmdt_receiver_times_out_and_aborts(script: str, timer: str, at: float) -> None:
    async def main(wire: Wire) -> None:
        peer, _, events = wire.scripted(0x27)
        peer.cm(BENCH, "10 1400 03 FF 00EF00")
        if script == "stops after packet 1":
            await asyncio.sleep(0.1)
            peer.dt(BENCH, 1, b"\x01" * 7)
        await asyncio.sleep(3.0)
        (failed,) = events
        assert isinstance(failed, TransferFailed) and failed.reason.startswith(f"timeout ({timer})")
        assert failed.time == pytest.approx(at)
        assert wire.tp_cm()[-1].hex() == "ff03ffffff00ef00", "Conn_Abort, reason 3 (timeout)"

    on_wire(main)


def test_an_abort_from_the_sender_ends_the_session_without_a_message() -> None:
    async def main(wire: Wire) -> None:
        peer, _, events = wire.scripted(0x27)
        peer.cm(BENCH, "10 1400 03 FF 00EF00")
        peer.dt(BENCH, 1, b"\x01" * 7)
        peer.cm(BENCH, "FF 02 FFFFFF 00EF00")
        peer.dt(BENCH, 2, b"\x02" * 7)
        peer.dt(BENCH, 3, b"\x03" * 7)
        await asyncio.sleep(3.0)
        assert [(type(e).__name__, getattr(e, "reason", "")) for e in events] == [
            ("TransferFailed", "aborted by 0x27: system resources needed elsewhere")
        ]
        assert [m.hex() for m in wire.tp_cm(BENCH)] == ["110301ffff00ef00"], "one CTS; no abort back for an abort"

    on_wire(main)


def test_a_second_rts_for_another_pgn_from_the_same_sender_is_refused_busy() -> None:
    async def main(wire: Wire) -> None:
        peer, _, events = wire.scripted(0x27)
        peer.cm(BENCH, "10 0E00 02 FF 00EF00")
        peer.cm(BENCH, "10 0E00 02 FF 00EE00")
        peer.dt(BENCH, 1, b"\x01" * 7)
        peer.dt(BENCH, 2, b"\x02" * 7)
        await asyncio.sleep(0.1)
        assert "ff01ffffff00ee00" in [m.hex() for m in wire.tp_cm()], "Conn_Abort reason 1 for PGN EE00"
        (got,) = events
        assert isinstance(got, Received) and got.pgn == PROP_A and got.data == b"\x01" * 7 + b"\x02" * 7

    on_wire(main)


def test_a_tp_session_addressed_to_another_node_is_not_ours() -> None:
    async def main(wire: Wire) -> None:
        peer, _, events = wire.scripted(0x27)
        peer.cm(0x28, "10 0E00 02 FF 00EF00")
        await asyncio.sleep(3.0)
        assert events == [] and len(wire.tp_cm()) == 1, "no CTS, no abort, no timeout for someone else's session"

    on_wire(main)


@pytest.mark.parametrize(
    ("replies", "timer", "at"),
    [
        ([], "T3", j1939.T3),  # nobody answers the RTS
        ([(0.1, "11 00 FF FFFF 00EF00")], "T4", 0.1 + j1939.T4),  # a hold that is never renewed
        ([(0.1, "11 01 01 FFFF 00EF00")], "T3", 0.1 + j1939.T3),  # one packet granted, then silence
    ],
    ids=["rts-unanswered", "hold-not-renewed", "no-cts-after-block"],
)
def test_a_cmdt_sender_times_out_and_aborts(replies: list[tuple[float, str]], timer: str, at: float) -> None:
    async def main(wire: Wire) -> None:
        peer, sender, events = wire.scripted(BENCH, node_address=0x27)
        sender.send_pgn(PROP_A, bytes(20), destination=BENCH)
        for t, payload in replies:
            await asyncio.sleep(t - now())
            peer.cm(0x27, payload)
        await asyncio.sleep(3.0)
        (failed,) = events
        assert isinstance(failed, TransferFailed) and failed.reason.startswith(f"timeout ({timer})")
        assert failed.time == pytest.approx(at)
        assert wire.tp_cm()[-1].hex() == "ff03ffffff00ef00"

    on_wire(main)


def test_holds_renewed_every_th_keep_a_cmdt_sender_waiting() -> None:
    async def main(wire: Wire) -> None:
        peer, sender, events = wire.scripted(BENCH, node_address=0x27)
        sender.send_pgn(PROP_A, bytes(range(14)), destination=BENCH)
        for _ in range(6):  # 3 s of holds, far beyond T4 if they were not renewed
            await asyncio.sleep(j1939.TH)
            peer.cm(0x27, "11 00 FF FFFF 00EF00")
        peer.cm(0x27, "11 02 01 FFFF 00EF00")
        await asyncio.sleep(0.01)
        peer.cm(0x27, "13 0E00 02 FF 00EF00")
        await asyncio.sleep(0.01)
        (sent,) = events
        assert isinstance(sent, Sent) and (sent.pgn, sent.destination) == (PROP_A, BENCH)
        assert sent.time == pytest.approx(6 * j1939.TH + 0.01)
        dts = [bytes(m.data) for _, m in wire.frames if parse_id(m.arbitration_id).pgn == j1939.PGN_TP_DT]
        assert dts == [bytes([1, *range(7)]), bytes([2, *range(7, 14)])]

    on_wire(main)


def test_sending_needs_an_address_and_a_size_the_protocol_carries() -> None:
    async def main(wire: Wire) -> None:
        listener, _ = wire.node(None)
        sender, _ = wire.node(0x27)
        with pytest.raises(J1939Error, match="listen-only"):
            listener.send_pgn(PGN_DM1, bytes(8))
        with pytest.raises(J1939Error, match="at most 1785"):
            sender.send_pgn(PGN_DM1, bytes(1786))
        sender.send_pgn(PGN_DM1, bytes(20))
        with pytest.raises(J1939Error, match="already in progress"):
            sender.send_pgn(0xFECB, bytes(20))

    on_wire(main)


# --- over the served bus ----------------------------------------------------------------------


def test_a_dm1_over_bam_from_a_stock_socketcand_client_is_reassembled_behind_the_served_bus() -> None:
    """A device on the lab network: python-can's socketcand client sends the BAM frames as they are."""
    from simulators.serve_can import SocketcandServer

    cm = make_id(j1939.PGN_TP_CM, PACK_A, 0xFF, 7)
    dt = make_id(j1939.PGN_TP_DT, PACK_A, 0xFF, 7)
    frames = [
        bytes.fromhex("200a0002ffcafe00"),
        bytes([1]) + DM1_TWO_DTCS[:7],
        bytes([2]) + DM1_TWO_DTCS[7:] + b"\xff" * 4,
    ]

    def device(port: int) -> None:
        bus = can.Bus(interface="socketcand", host="127.0.0.1", port=port, channel="j1939")
        try:
            for i, data in enumerate(frames):
                bus.send(frame(cm if i == 0 else dt, data))
                time.sleep(0.05)  # J1939-21: 50..200 ms between BAM packets
        finally:
            bus.shutdown()

    async def main() -> list[j1939.Event]:
        server = SocketcandServer(["j1939"], port=0)
        await server.start()
        bus: Any = can.Bus(interface="inproc", channel="j1939")
        events: list[j1939.Event] = []
        arrived = asyncio.Event()

        def on_event(event: j1939.Event) -> None:
            events.append(event)
            arrived.set()

        node = J1939Node(bus, BENCH, on_event)
        try:
            await asyncio.to_thread(device, server.port)
            await asyncio.wait_for(arrived.wait(), 10)
        finally:
            node.close()
            bus.shutdown()
            await server.stop()
        return events

    (got,) = asyncio.run(main())
    assert isinstance(got, Received) and got.transport == "bam" and got.source == PACK_A
    assert [(d.spn, d.fmi, d.occurrence) for d in decode_dm1(got.data).dtcs] == [(1569, 31, 1), (520348, 14, 127)]
