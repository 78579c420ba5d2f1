"""A J1939 device on the CAN driver: frames matched by PGN, the transport protocol, DM1 as signals.

``drivers/can_dbc.py`` hands every received frame of a J1939 device to :class:`J1939Device`
instead of looking its identifier up; this module answers with the DBC message the frame is
(by PGN, :class:`drivers.j1939.PgnMatcher`), reassembles multi-packet messages (TP.BAM, and
TP.CMDT addressed to the bench) on the loop's clock, and publishes each DM1 as signals:

* ``<dev>.DM1.active_count``: how many DTCs the last DM1 listed;
* ``<dev>.DM1.mil``, ``.rsl``, ``.awl``, ``.pl``: the lamps (``off``, ``on``, ``error``,
  ``"not available"``);
* ``<dev>.DM1.spn<SPN>_fmi<FMI>``: ``active`` or ``inactive``, for each DTC the station lists in
  ``j1939: {dtcs: [...]}`` (the signals must exist before a sequence is checked).

Station config (all optional; a DBC with ``ProtocolType "J1939"`` or J1939PG frames is a J1939
device without it)::

    j1939:
      source: 0xF3           # the device's source address: frames from any other are ignored
      bench_address: 0xF9    # the bench's source address in what it sends (else the DBC's)
      dtcs: [{spn: 1569, fmi: 31}, {spn: 168, fmi: 4}]   # DTCs a sequence checks
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection, Mapping
from typing import Any

import can
from cantools.database.can import Database, Message

from bench.device import ConfigError, SignalInfo
from bench.units import parse_unit
from drivers.j1939 import (
    LAMP_STATES,
    LAMPS,
    PGN_DM1,
    Dm1,
    Event,
    J1939Error,
    J1939Node,
    PgnMatcher,
    Received,
    decode_dm1,
    make_id,
    parse_id,
)

_KEYS = {"source", "bench_address", "dtcs"}
DTC_STATES = {"inactive": 0, "active": 1}
_LAMP_CHOICES = {state: i for i, state in enumerate(LAMP_STATES)}

# A received message of the DBC, its payload, and its time on the loop's clock.
OnMessage = Callable[[Message, bytes, float], None]


def is_j1939_dbc(db: Database) -> bool:
    """``BA_ "ProtocolType" "J1939"``, or any message in the J1939PG frame format."""
    attributes = db.dbc.attributes if db.dbc is not None else {}
    protocol = attributes.get("ProtocolType")
    if protocol is not None and str(protocol.value).strip().upper() == "J1939":
        return True
    return any(m.protocol == "j1939" for m in db.messages)


def _address(cfg: Mapping[str, Any], key: str) -> int | None:
    value = cfg.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFD:
        raise ConfigError(f"j1939: {key} must be a source address 0..253 (0x00..0xFD), got {value!r}", "j1939")
    return value


def _dtcs(value: Any) -> list[tuple[int, int]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError("j1939: dtcs must be a list such as [{spn: 1569, fmi: 31}]", "j1939")
    out = []
    for item in value:
        spn = item.get("spn") if isinstance(item, dict) else None
        fmi = item.get("fmi") if isinstance(item, dict) else None
        if (
            not isinstance(item, dict)
            or set(item) != {"spn", "fmi"}
            or isinstance(spn, bool)
            or isinstance(fmi, bool)
            or not isinstance(spn, int)
            or not isinstance(fmi, int)
            or not 0 <= spn < 1 << 19
            or not 0 <= fmi <= 31
        ):
            raise ConfigError(f"j1939: dtcs takes {{spn: 0..524287, fmi: 0..31}} entries, got {item!r}", "j1939")
        out.append((spn, fmi))
    return out


def dtc_signal(spn: int, fmi: int) -> str:
    """The local name of the signal that says whether a DTC is active: ``DM1.spn1569_fmi31``."""
    return f"DM1.spn{spn}_fmi{fmi}"


class J1939Device:
    """The J1939 side of one CAN device: matching, transport protocol, DM1 signals."""

    def __init__(self, device: str, cfg: Any, db: Database, rx_msgs: Mapping[int, Message]) -> None:
        if cfg is None:
            cfg = {}
        if not isinstance(cfg, dict):
            raise ConfigError("'j1939' must be a mapping (source, bench_address, dtcs)", "j1939")
        unknown = sorted(set(cfg) - _KEYS)
        if unknown:
            raise ConfigError(f"j1939: unknown key '{unknown[0]}' (keys: {', '.join(sorted(_KEYS))})", "j1939")
        self.device = device
        self.source = _address(cfg, "source")
        self.bench_address = _address(cfg, "bench_address")
        self.dtcs = _dtcs(cfg.get("dtcs"))
        self.matcher = PgnMatcher(rx_msgs.values(), self.source)
        # 11-bit frames on a J1939 bus (a UDS channel, a proprietary message) keep their exact id.
        self._classic = {i: m for i, m in rx_msgs.items() if not m.is_extended_frame}
        self._dm1_ids = {i for i, m in rx_msgs.items() if m.is_extended_frame and parse_id(i).pgn == PGN_DM1}
        self._node: J1939Node | None = None
        self._publish: Callable[[str, float, float], None] | None = None
        self._on_message: OnMessage | None = None

    # load time ----------------------------------------------------------------------------------

    def signals(self) -> list[SignalInfo]:
        prefix = f"{self.device}.DM1."
        none = parse_unit("")
        out = [SignalInfo(prefix + "active_count", none, None, False, 0, None, "active DTCs in the last DM1")]
        names = {"mil": "malfunction", "rsl": "red stop", "awl": "amber warning", "pl": "protect"}
        out += [SignalInfo(prefix + lamp, none, _LAMP_CHOICES, False, doc=f"DM1 {names[lamp]} lamp") for lamp in LAMPS]
        out += [
            SignalInfo(
                f"{self.device}.{dtc_signal(spn, fmi)}",
                none,
                DTC_STATES,
                False,
                doc=f"DTC SPN {spn} FMI {fmi} in the last DM1",
            )
            for spn, fmi in self.dtcs
        ]
        return out

    def referenced(self, wanted: Collection[str]) -> set[int]:
        """The DBC's DM1 frame ids when the run refers to a DM1 signal: connect then waits for a DM1."""
        prefix = f"{self.device}.DM1."
        if any(name.startswith(prefix) for name in wanted):
            return set(self._dm1_ids)
        return set()

    def tx_id(self, frame_id: int, is_extended: bool) -> int:
        """The identifier the bench sends a message with: the DBC's, with the bench's source address."""
        if self.bench_address is None or not is_extended:
            return frame_id
        ident = parse_id(frame_id)
        return make_id(ident.pgn, self.bench_address, ident.destination, ident.priority)

    # run time -----------------------------------------------------------------------------------

    def start(
        self,
        bus: can.BusABC,
        loop: asyncio.AbstractEventLoop,
        send: Callable[[can.Message], None],
        publish: Callable[[str, float, float], None],
        on_message: OnMessage,
    ) -> None:
        """Run the transport protocol with the bench's address (listen only, BAM, without one)."""
        self._publish, self._on_message = publish, on_message
        self._node = J1939Node(bus, self.bench_address, self._on_event, loop, send=send, attach=False)

    def stop(self) -> None:
        if self._node is not None:
            self._node.close()
            self._node = None

    def on_frame(self, msg: can.Message) -> Message | None:
        """The DBC message a single received frame is (None: none, or a transport-protocol packet)."""
        if not msg.is_extended_id:
            return self._classic.get(msg.arbitration_id)
        if self._node is not None:
            self._node.feed(msg)  # TP sessions and DM1; a reassembled message comes by on_message
        return self.matcher.match(msg.arbitration_id)

    def _on_event(self, event: Event) -> None:
        if not isinstance(event, Received):
            return  # a failed transfer: the message does not arrive, and its absence is what a run sees
        if event.pgn == PGN_DM1 and (self.source is None or event.source == self.source):
            # A DM1 shorter than its lamp bytes says nothing.
            with contextlib.suppress(J1939Error):
                self._publish_dm1(decode_dm1(event.data), event.time)
        if event.transport != "single" and self._on_message is not None:
            m = self.matcher.match_pgn(event.pgn, event.source)
            if m is not None:
                self._on_message(m, event.data, event.time)

    def _publish_dm1(self, dm1: Dm1, t: float) -> None:
        assert self._publish is not None
        prefix = f"{self.device}.DM1."
        self._publish(prefix + "active_count", float(len(dm1.dtcs)), t)
        for lamp in LAMPS:
            self._publish(prefix + lamp, float(_LAMP_CHOICES[dm1.lamps[lamp].state]), t)
        active = {(d.spn, d.fmi) for d in dm1.dtcs}
        for spn, fmi in self.dtcs:
            self._publish(f"{self.device}.{dtc_signal(spn, fmi)}", float((spn, fmi) in active), t)
