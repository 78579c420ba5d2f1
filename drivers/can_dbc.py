"""A CAN device described by a DBC file.

Received frames become signals (decoded by cantools). Every signal has a message-qualified
name ``<device>.<Message>.<signal>``; the short name ``<device>.<signal>`` names it too where
no other message has a signal of that name, and is then the name it is published under. A
signal name that several messages share is published under its qualified names only.
Messages the bench sends are held as current signal values and transmitted at their cycle
time (``GenMsgCycleTime``, or the station's ``cycle_times``); a ``set`` re-encodes them. Works
on any python-can interface the station names; on the in-process link (``inproc``) frames are
delivered on the event loop itself.

Station config::

    dbc: ../dbc/bms.dbc          # relative to the station file
    node: BENCH                  # optional: the DBC node the bench plays (sends its messages)
    send: [BENCH_Command]        # optional: the only messages the bench sends
    cycle_times: {BMS_Event: 500 ms}   # optional: for messages the DBC gives no cycle time
    units: {Count: "1"}          # optional: the DBC's unit spellings -> the bench's units
    connect_timeout: 5 s         # optional: how long connect waits for the awaited messages
    fd: true                     # optional: a CAN FD bus (python-can's fd=True); data_bitrate: 2000000
    j1939: {source: 0xF3, bench_address: 0xF9, dtcs: [{spn: 1569, fmi: 31}]}   # optional, docs/j1939.md
    can: {interface: inproc, channel: bench0}   # passed to can.Bus
    initial: {cmd_contactors: OPEN}             # start values of transmitted signals

Connected once every awaited message has been seen: a received message with a cycle time that
the run refers to (a signal of it in the sequence, a limit, the e-stop or a safe state), within
2.5 times the slowest awaited cycle (at least 1 s) or ``connect_timeout``. A missing one is named
with its frame id and cycle.

Without ``node`` and ``send`` the device only listens. A DBC is refused when it is loaded
(one line, no output of cantools) for a defect that would make its frames mean something
else: no messages, two messages with one frame id, overlapping signals, a signal name twice
in a message, a frame longer than its bus carries.
    uds:                                        # optional: identify the DUT over UDS (drivers/uds.py)
      tx_id: 0x7E0                              # physical request id (default 0x7E0)
      rx_id: 0x7E8                              # response id (default 0x7E8)
      expect: {software_version: "BMS-SIM 1.0.0"}   # refuse to run on another version

With ``uds``, connecting reads VIN (F190), ECU serial (F18C) and software version (F195) by
ReadDataByIdentifier once the DUT's cyclic frames are seen; ``identify()`` returns them and an
``expect`` mismatch fails the connection with both versions named.
The same channel reads and clears the DUT's DTC memory (``read_dtcs``, ``clear_dtcs``,
docs/dtc.md): for the ``check_dtcs`` and ``clear_dtcs`` steps and the record's start and end.

Fault injection (ISO 26262 fault-reaction tests): every cyclic message the bench sends has a
signal ``<device>.inject_<message>`` (message name in lower case) with the states NONE, LOST
(the frame is no longer sent), ALIVE_FROZEN (the alive counter stops), CRC_CORRUPTED (the CRC
byte is wrong), STUCK (the payload stays as it was when the fault was injected, with a valid
alive counter and CRC) and IMPLAUSIBLE (every payload signal at its all-ones raw value, the
usual "invalid" pattern, with a valid alive counter and CRC). It acts from the next frame on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import os
import re
import socket
import threading
import warnings
from collections import Counter, deque
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import can
import cantools
from cantools.database.can import Database, Message

from bench.device import DEFAULT_CONNECT_TIMEOUT, ConfigError, DeviceContext, Driver, SignalInfo
from bench.dtccodes import ALL_DTC_GROUPS, Dtc
from bench.errors import DeviceError, ExpressionError
from bench.expr import state_list, state_value
from bench.periodic import Periodic
from bench.suggest import did_you_mean
from bench.units import TIME, format_duration, parse_quantity, parse_unit, signal_unit
from drivers.can_fd import bit_rate_switch, fd_bus_config
from drivers.can_j1939_rx import J1939Device, is_j1939_dbc
from drivers.cyclic_tx import CyclicSender
from drivers.e2e import crc8_j1850
from drivers.uds_names import IDENTITY_DIDS, UdsError

if TYPE_CHECKING:
    from drivers.uds import UdsClient

E2E_STATES = {"OK": 0, "ALIVE_ERROR": 1, "CRC_ERROR": 2}
INJECTIONS = {"NONE": 0, "LOST": 1, "ALIVE_FROZEN": 2, "CRC_CORRUPTED": 3, "STUCK": 4, "IMPLAUSIBLE": 5}
_LOST, _ALIVE_FROZEN, _CRC_CORRUPTED, _STUCK, _IMPLAUSIBLE = 1, 2, 3, 4, 5
INJECT_PREFIX = "inject_"
_KEYS = {"dbc", "node", "send", "cycle_times", "units", "can", "initial", "uds", "connect_timeout"}
_KEYS |= {"fd", "data_bitrate", "j1939"}  # drivers/can_fd.py, drivers/can_j1939_rx.py
# The awaited messages must be seen within this many of their cycles (one lost frame is
# forgiven), and never less than the floor: a first frame may take a moment to arrive.
_CYCLES_AWAITED = 2.5
_MIN_WAIT = 1.0
_MAX_FRAME = {False: 8, True: 64}
_OVERLAP = re.compile(
    r"The signals (\w+) and (\w+) are overlapping in message (\w+)"
)  # payload bytes of a classic and of an FD frame
_UDS_KEYS = {"tx_id", "rx_id", "expect", "timeout"}
# Payloads kept per message (decoded or encoded); one whose payloads never repeat starts afresh at this many.
_CODEC_CACHE = 4096
# A bus read on a thread: how often it looks whether it should stop, and the most frames handed over at once.
_READ_POLL_S = 0.1
_MAX_BATCH = 4096


class _Protection:
    """Alive counter and CRC signals of one message (see drivers/e2e.py)."""

    def __init__(self, prefix: str, alive: str, crc: str, crc_byte: int) -> None:
        self.prefix = prefix
        self.alive = alive
        self.crc = crc
        self.crc_byte = crc_byte
        self.last_alive: int | None = None


class CanDbcDriver(Driver):
    def __init__(self, name: str, config: Mapping[str, Any], base_dir: Path) -> None:
        super().__init__(name, config, base_dir)
        self.check_keys(_KEYS)
        if "dbc" not in self.config:
            raise ConfigError("a CAN device needs 'dbc'")
        self.dbc_path = (base_dir / str(self.config["dbc"])).resolve()
        self.db = db = _load_dbc(self.dbc_path, str(self.config["dbc"]))
        node = self.config.get("node")
        self.node: str | None = None if node is None else str(node)
        nodes = [n.name for n in db.nodes]
        if self.node is not None and self.node not in nodes:
            listed = f"nodes: {', '.join(nodes)}" if nodes else "it names no nodes"
            raise ConfigError(
                f"node '{self.node}' is not in {self.config['dbc']} ({listed}); without 'node' the device"
                " listens, and 'send' names the messages the bench sends",
                "node",
            )
        can_cfg = self.config.get("can")
        if not isinstance(can_cfg, dict) or "interface" not in can_cfg:
            raise ConfigError("'can' must give at least 'interface' (and usually 'channel')", "can")
        _check_interface(can_cfg)
        self.can_cfg = fd_bus_config(self.config, can_cfg, db, str(self.config["dbc"]))
        self.tx_msgs = self._sent_messages(self.config.get("send"))
        sent = {m.frame_id for m in self.tx_msgs}
        self.rx_msgs = {m.frame_id: m for m in db.messages if m.frame_id not in sent}
        # A J1939 device matches received frames by PGN and runs the transport protocol.
        j1939 = self.config.get("j1939")
        self._j1939 = J1939Device(name, j1939, db, self.rx_msgs) if j1939 is not None or is_j1939_dbc(db) else None
        self._cycle = self._cycle_times(self.config.get("cycle_times"))
        wait = self.config.get("connect_timeout")
        self._wait_override = None if wait is None else _duration(str(wait), "connect_timeout", "connect_timeout")
        self._units = self._unit_map(self.config.get("units"))
        # Each signal's name on this device: "signal" where the name is unique in the file, else
        # "Message.signal" (the device name goes in front). Frames are decoded and published by it.
        counts = Counter(s.name for m in db.messages for s in m.signals)
        self._local: dict[int, dict[str, str]] = {
            m.frame_id: {s.name: s.name if counts[s.name] == 1 else f"{m.name}.{s.name}" for s in m.signals}
            for m in db.messages
        }
        self._protection = {m.frame_id: self._find_protection(m) for m in db.messages}
        # What a received frame is published as: each signal's full name, the E2E state's name.
        self._published = {
            i: {sig: f"{name}.{local}" for sig, local in by_signal.items()} for i, by_signal in self._local.items()
        }
        self._e2e_name = {i: f"{name}.{p.prefix}_e2e" for i, p in self._protection.items() if p is not None}
        self._decode_cache: dict[int, dict[bytes, tuple[list[tuple[str, float]], bool, int] | tuple[()]]] = {}
        self._encode_cache: dict[int, dict[tuple[float, ...], bytes]] = {}
        self._tx_values: dict[str, dict[str, float]] = {}
        # Local name (and the qualified "Message.signal" of a unique one) -> message and signal.
        self._tx_signal: dict[str, tuple[Message, str]] = {}
        for m in self.tx_msgs:
            self._tx_values[m.name] = {s.name: self._default(s) for s in m.signals}
            for s in m.signals:
                self._tx_signal[self._local[m.frame_id][s.name]] = (m, s.name)
                self._tx_signal[f"{m.name}.{s.name}"] = (m, s.name)
        for key, value in dict(self.config.get("initial") or {}).items():
            if key not in self._tx_signal:
                hint = did_you_mean(str(key), self._tx_signal)
                raise ConfigError(f"initial: '{key}' is not a signal the bench sends{hint}", "initial")
            m, sig_name = self._tx_signal[key]
            code = _choice_code(m.get_signal_by_name(sig_name), value)
            if code is None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ConfigError(f"initial: {key} takes a plain number in the DBC's unit, got {value!r}", "initial")
            self._tx_values[m.name][sig_name] = code if code is not None else float(value)
        # Injected fault per transmitted message (INJECTIONS code) and the payload a STUCK one keeps.
        self._inject: dict[str, int] = {}
        self._stuck: dict[str, dict[str, float]] = {}
        self._inject_msg = {INJECT_PREFIX + m.name.lower(): m for m in self.tx_msgs if self._cycle[m.frame_id]}
        self._signals = self._build_signals() + (self._j1939.signals() if self._j1939 else [])
        self._uds_cfg = self._check_uds(self.config.get("uds"))
        self._uds: UdsClient | None = None
        self._identity: dict[str, str] = {}
        self._ctx: DeviceContext | None = None
        self._bus: can.BusABC | None = None
        self._reader: _BatchReader | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ts_offset: float | None = 0.0
        self._unseen: set[int] = set()
        self._tx_lock = threading.Lock()
        self._sender: CyclicSender | None = None
        self._all_seen: asyncio.Future[None] | None = None
        # What a received frame is published as, once connect knows what the run refers to (_receive_only).
        self._publish_names: dict[int, dict[str, str]] = {}
        self._e2e_published: dict[int, str] = {}

    def _sent_messages(self, send: Any) -> list[Message]:
        """What the bench sends: the ``send`` list when given, else its node's messages, else nothing."""
        if send is None:
            return [m for m in self.db.messages if self.node is not None and self.node in m.senders]
        if not isinstance(send, list) or not all(isinstance(n, str) for n in send):
            raise ConfigError("'send' must be a list of message names", "send")
        by_name = {m.name: m for m in self.db.messages}
        out = []
        for name in send:
            m = by_name.get(name)
            if m is None:
                raise ConfigError(f"send: '{name}' is not a message of {self.config['dbc']}", "send")
            if self.node is not None and m.senders and self.node not in m.senders:
                # Another node sends it: sending it too would put two writers on one frame id.
                raise ConfigError(f"send: {name} is sent by {', '.join(m.senders)}, not by {self.node}", "send")
            out.append(m)
        return out

    def _cycle_times(self, cfg: Any) -> dict[int, float | None]:
        """Cycle time per frame id in seconds: the DBC's, or the station's for a message it gives none."""
        cycle = {m.frame_id: (m.cycle_time / 1000.0 if m.cycle_time else None) for m in self.db.messages}
        if cfg is None:
            return cycle
        if not isinstance(cfg, dict):
            raise ConfigError(
                "'cycle_times' must map message names to durations, e.g. {BMS_Event: 500 ms}", "cycle_times"
            )
        by_name = {m.name: m for m in self.db.messages}
        for name, text in cfg.items():
            if name not in by_name:
                raise ConfigError(f"cycle_times: '{name}' is not a message of {self.config['dbc']}", "cycle_times")
            cycle[by_name[name].frame_id] = _duration(str(text), f"cycle_times: {name}", "cycle_times")
        return cycle

    def _awaited(self, wanted: Collection[str] | None) -> set[int]:
        """Frame ids connect waits for: received, cyclic, sent by another node, and referred to by the run.

        A message of the bench's own node that the bench does not send has nobody else to send
        it; a message nobody refers to is recorded whenever it comes but is not waited for.
        """
        referenced = self._referenced(wanted)
        return {
            i
            for i, m in self.rx_msgs.items()
            if self._cycle[i] and (self.node is None or self.node not in m.senders) and i in referenced
        }

    def _referenced(self, wanted: Collection[str] | None) -> set[int]:
        """Received frame ids a signal of which the run refers to (``wanted`` None: all)."""
        if wanted is None:
            return set(self.rx_msgs)
        prefix = self.name + "."
        return {
            m.frame_id
            for m in self.rx_msgs.values()
            if any(prefix + local in wanted for local in self._local[m.frame_id].values())
            or ((prot := self._protection[m.frame_id]) is not None and f"{prefix}{prot.prefix}_e2e" in wanted)
        } | (self._j1939.referenced(wanted) if self._j1939 else set())

    def _wait_for(self, awaited: set[int]) -> float:
        """How long connect waits for ``awaited``: the station's connect_timeout, else from the cycles."""
        if self._wait_override is not None:
            return self._wait_override
        slowest = max((self._cycle[i] or 0.0 for i in awaited), default=0.0)
        return max(_MIN_WAIT, _CYCLES_AWAITED * slowest)

    @property
    def connect_timeout(self) -> float:
        """Opening the bus, the longest wait for awaited messages any run can have, and UDS identification."""
        uds = 0.0
        if self._uds_cfg is not None:
            # One request per identity DID, each answered within its timeout (a pending reply may extend it).
            uds = len(IDENTITY_DIDS) * (2 * self._uds_cfg["timeout"])
        return DEFAULT_CONNECT_TIMEOUT + self._wait_for(self._awaited(None)) + uds

    def _unit_map(self, cfg: Any) -> dict[str, str]:
        """The station's spelling of units the DBC writes its own way (``units: {Count: "1"}``)."""
        if cfg is None:
            return {}
        if not isinstance(cfg, dict):
            raise ConfigError("'units' must map the DBC's unit spellings to units, e.g. {Count: \"1\"}", "units")
        for spelling, unit in cfg.items():
            try:
                parse_unit(str(unit))
            except ExpressionError:
                raise ConfigError(
                    f"units: '{spelling}' maps to '{unit}', which is not a unit the bench knows", "units"
                ) from None
        return {str(k): str(v) for k, v in cfg.items()}

    @staticmethod
    def _check_uds(cfg: Any) -> dict[str, Any] | None:
        if cfg is None:
            return None
        if not isinstance(cfg, dict):
            raise ConfigError("'uds' must be a mapping (tx_id, rx_id, expect, timeout)", "uds")
        unknown = sorted(set(cfg) - _UDS_KEYS)
        if unknown:
            raise ConfigError(f"uds: unknown key '{unknown[0]}' (keys: {', '.join(sorted(_UDS_KEYS))})", "uds")
        out: dict[str, Any] = {"tx_id": 0x7E0, "rx_id": 0x7E8, "expect": {}, "timeout": 1.0}
        for key in ("tx_id", "rx_id"):
            value = cfg.get(key, out[key])
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0x7FF:
                raise ConfigError(f"uds: {key} must be an 11-bit CAN id such as 0x7E0, got {value!r}", "uds")
            out[key] = value
        timeout = cfg.get("timeout", out["timeout"])
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigError(f"uds: timeout must be a number of seconds > 0, got {timeout!r}", "uds")
        out["timeout"] = float(timeout)
        expect = cfg.get("expect") or {}
        if not isinstance(expect, dict) or any(k not in IDENTITY_DIDS for k in expect):
            raise ConfigError(f"uds: expect takes {', '.join(IDENTITY_DIDS)}, got {expect!r}", "uds")
        out["expect"] = {k: str(v) for k, v in expect.items()}
        return out

    @staticmethod
    def _default(sig: Any) -> float:
        lo = sig.minimum if sig.minimum is not None else 0.0
        return float(max(lo, 0.0)) if sig.offset == 0 else float(lo)

    @staticmethod
    def _find_protection(m: Message) -> _Protection | None:
        names = {s.name: s for s in m.signals}
        for s in m.signals:
            if s.name.endswith("_alive"):
                prefix = s.name[: -len("_alive")]
                crc = names.get(prefix + "_crc")
                if crc is not None and crc.length == 8 and crc.start % 8 == 0:
                    return _Protection(prefix, s.name, crc.name, crc.start // 8)
        return None

    def _build_signals(self) -> list[SignalInfo]:
        out: list[SignalInfo] = []
        sent = {m.frame_id for m in self.tx_msgs}
        for m in self.db.messages:
            writable = m.frame_id in sent
            for s in m.signals:
                unit = signal_unit(s.unit or "", self._units)
                choices = {str(v): int(k) for k, v in s.choices.items()} if s.choices else None
                local = self._local[m.frame_id][s.name]
                qualified = f"{self.name}.{m.name}.{s.name}"
                name = f"{self.name}.{local}"
                out.append(
                    SignalInfo(
                        name,
                        unit,
                        choices,
                        writable and not s.is_multiplexer,
                        s.minimum,
                        s.maximum,
                        s.comment or "",
                        aliases=() if name == qualified else (qualified,),
                    )
                )
            prot = self._protection[m.frame_id]
            if prot is not None and not writable:
                out.append(
                    SignalInfo(
                        f"{self.name}.{prot.prefix}_e2e",
                        parse_unit(""),
                        E2E_STATES,
                        False,
                        doc=f"end-to-end check of {m.name} (alive counter and CRC)",
                    )
                )
        for key, m in self._inject_msg.items():
            out.append(
                SignalInfo(
                    f"{self.name}.{key}",
                    parse_unit(""),
                    INJECTIONS,
                    True,
                    doc=f"fault injected into the {m.name} frames the bench sends",
                )
            )
        return out

    def signals(self) -> list[SignalInfo]:
        return list(self._signals)

    def update_period(self, signal: str) -> float | None:
        """The cycle time of the message that carries ``signal`` (received, or sent by the bench)."""
        short = signal.removeprefix(f"{self.name}.")
        for m in self.db.messages:
            local = self._local[m.frame_id]
            prot = self._protection[m.frame_id]
            names = {*local.values(), *(f"{m.name}.{s}" for s in local)}
            if prot is not None:
                names.add(f"{prot.prefix}_e2e")
            if short in names or self._inject_msg.get(short) is m:
                return self._cycle[m.frame_id]
        return None

    def files(self) -> list[Path]:
        return [self.dbc_path]

    async def connect(self, ctx: DeviceContext) -> None:
        self._ctx = ctx
        try:
            if self.can_cfg.get("interface") == "inproc":
                bus = can.Bus(**self.can_cfg)  # on the loop: a virtual-time run has no threads
            else:
                bus = await _open_off_loop(self.name, self.can_cfg)
        except DeviceError:
            raise
        except Exception as exc:
            raise DeviceError(self.name, f"cannot open CAN bus {self.can_cfg}: {exc}") from None
        self._bus = bus
        if self._j1939 is not None:
            self._j1939.start(bus, ctx.loop, self._send_raw, ctx.publish, self._on_message)
        add_listener = getattr(bus, "add_listener", None)
        if callable(add_listener):
            # The in-process link stamps frames with loop time and hands over those of one instant at once.
            add_batch = getattr(bus, "add_batch_listener", None)
            if callable(add_batch):
                add_batch(self._on_frames)
            else:
                add_listener(self._on_frame)
        else:
            # Interfaces stamp frames on their own clock; the first frame maps it onto the loop's.
            self._ts_offset = None
            self._reader = _BatchReader(bus, ctx.loop, self._on_frames, self._read_failed, f"{self.name}-rx")
        # Connected once every awaited message has been seen. Decoding is most of the cost of a
        # frame; a message nobody refers to is only recorded.
        self._unseen = self._awaited(ctx.wanted)
        self._receive_only(ctx.wanted)
        if self._reader is not None:
            self._reader.start()
        self._all_seen = ctx.loop.create_future()
        if not self._unseen:
            self._all_seen.set_result(None)
        cycles: dict[float, list[Message]] = {}
        for m in self.tx_msgs:
            period = self._cycle[m.frame_id]
            if period:
                cycles.setdefault(period, []).append(m)
        if callable(add_listener):
            # The in-process link runs on the loop's clock, which may be virtual: loop tasks.
            for period, msgs in sorted(cycles.items()):
                self._tasks.append(ctx.start_task(self.name, self._cyclic(period, msgs), f"{self.name}-tx-{period}"))
        elif cycles:
            # A real bus: a dedicated thread keeps the cycle times (see drivers/cyclic_tx.py).
            loop = ctx.loop

            def sent(msg: can.Message) -> None:
                loop.call_soon_threadsafe(ctx.record_frame, msg, True)

            def failed(exc: Exception) -> None:
                loop.call_soon_threadsafe(ctx.fault, self.name, f"cyclic CAN send failed: {exc}")

            self._sender = CyclicSender(bus, on_error=failed, on_sent=sent)
            for period, msgs in sorted(cycles.items()):
                for m in msgs:
                    self._sender.add(period, functools.partial(self._encode, m))
            self._sender.start()
        wait = self._wait_for(self._unseen)
        try:
            async with asyncio.timeout(wait):
                await self._all_seen
        except TimeoutError:
            missing = ", ".join(sorted(self._described(self.rx_msgs[i]) for i in self._unseen))
            await self.close()  # not connected, so the engine will not close the bus: do it here
            raise DeviceError(
                self.name,
                f"no frames of {missing} within {format_duration(wait)} (is the device powered and on this bus?)",
            ) from None
        if self._uds_cfg is not None:
            try:
                await self._identify_uds(self._uds_cfg)
            except BaseException:
                await self.close()
                raise

    def _described(self, m: Message) -> str:
        """``BMS_Status (0x123, every 100 ms)``: what an operator looks for on a bus trace."""
        frame_id = f"0x{m.frame_id:08X}" if m.is_extended_frame else f"0x{m.frame_id:03X}"
        return f"{m.name} ({frame_id}, every {_cycle_text(self._cycle[m.frame_id] or 0.0)})"

    async def _identify_uds(self, cfg: Mapping[str, Any]) -> None:
        assert self._ctx is not None
        from drivers.uds import UdsClient  # the UDS stack, only once a DUT is identified

        self._uds = UdsClient(self._send_raw, cfg["tx_id"], cfg["rx_id"], p2=cfg["timeout"])
        try:
            self._identity = await self._uds.identify()
        except (UdsError, can.CanError) as exc:
            raise DeviceError(self.name, f"UDS identification failed: {exc}") from None
        for key, want in cfg["expect"].items():
            got = self._identity.get(key, "")
            if got != want:
                label = key.replace("_", " ")
                raise DeviceError(
                    self.name, f"DUT reports {label} '{got}' but the station expects '{want}' (uds.expect.{key})"
                )

    def _send_raw(self, msg: can.Message) -> None:
        """Diagnostic frames: stamped on the loop clock and recorded like the cyclic ones."""
        assert self._bus is not None and self._ctx is not None
        msg.timestamp = self._ctx.loop.time()
        msg.is_rx = False
        self._bus.send(msg)
        self._ctx.record_frame(msg, True)

    async def identify(self) -> dict[str, str]:
        return dict(self._identity)

    @property
    def supports_dtcs(self) -> bool:
        return self._uds_cfg is not None

    async def read_dtcs(self, status_mask: int) -> list[Dtc]:
        """ReadDTCInformation by status mask over the identification channel (``uds:``)."""
        try:
            return await self._uds_client().read_dtcs(status_mask)
        except (UdsError, can.CanError) as exc:
            raise DeviceError(self.name, str(exc)) from None

    async def clear_dtcs(self, group: int = ALL_DTC_GROUPS) -> None:
        """ClearDiagnosticInformation of ``group`` (all DTCs by default)."""
        try:
            await self._uds_client().clear_dtcs(group)
        except (UdsError, can.CanError) as exc:
            raise DeviceError(self.name, str(exc)) from None

    def _uds_client(self) -> UdsClient:
        if self._uds is None:
            why = "connected" if self._uds_cfg is not None else "configured (no 'uds:' in the station)"
            raise DeviceError(self.name, f"UDS is not {why}")
        return self._uds

    async def _cyclic(self, period: float, msgs: list[Message]) -> None:
        """Sends ``msgs`` now and every ``period`` s on absolute deadlines (no drift however long
        sending took), from a timer: the task only waits, so that a send that raises ends it."""
        loop = asyncio.get_running_loop()
        failed: asyncio.Future[None] = loop.create_future()

        def send() -> None:
            for m in msgs:
                self._transmit(m)

        timer = Periodic(
            loop, period, send, loop.time(), name=f"{self.name}-tx", body_first=True, on_error=failed.set_exception
        )
        try:
            await failed
        finally:
            timer.cancel()

    def _encode(self, m: Message) -> can.Message | None:
        """The next frame of ``m``: current values, next alive count, CRC; None while it is LOST."""
        assert self._ctx is not None
        inject = self._inject.get(m.name, 0)
        if inject == _LOST:
            return None
        # The cyclic thread and the loop (a set sends at once) both encode: one at a time.
        with self._tx_lock:
            values = self._tx_values[m.name]
            prot = self._protection[m.frame_id]
            if prot is not None:
                if inject != _ALIVE_FROZEN:
                    values[prot.alive] = float((int(values[prot.alive]) + 1) % 16)
                values[prot.crc] = 0.0
            if inject == _STUCK:
                payload = dict(self._stuck[m.name])
                if prot is not None:
                    payload[prot.alive], payload[prot.crc] = values[prot.alive], 0.0
                data = bytearray(m.encode(payload, strict=False, scaling=True))
            elif inject == _IMPLAUSIBLE:
                e2e = () if prot is None else (prot.alive, prot.crc)
                raw = {
                    s.name: (-1 if s.is_signed else (1 << s.length) - 1) if s.name not in e2e else 0 for s in m.signals
                }
                if prot is not None:
                    raw[prot.alive] = int(values[prot.alive])
                data = bytearray(m.encode(raw, strict=False, scaling=False))
            else:
                data = self._sealed(m, values, prot)
            if prot is not None:
                if inject in (_STUCK, _IMPLAUSIBLE):
                    data[prot.crc_byte] = crc8_j1850(bytes(data[: prot.crc_byte]))
                if inject == _CRC_CORRUPTED:
                    data[prot.crc_byte] ^= 0xFF
                values[prot.crc] = float(data[prot.crc_byte])
        return can.Message(
            arbitration_id=m.frame_id if self._j1939 is None else self._j1939.tx_id(m.frame_id, m.is_extended_frame),
            is_extended_id=m.is_extended_frame,
            is_fd=bool(m.is_fd),
            bitrate_switch=bit_rate_switch(m),
            data=bytes(data),
            timestamp=self._ctx.loop.time(),
            is_rx=False,
        )

    def _sealed(self, m: Message, values: Mapping[str, float], prot: _Protection | None) -> bytearray:
        """The payload of ``values`` with its CRC. The bench's commands change seldom and the alive
        counter has 16 values, so a payload is encoded once and then reused."""
        cache = self._encode_cache.setdefault(m.frame_id, {})
        key = tuple(values.values())  # the message's signals, always in the same order
        sealed = cache.get(key)
        if sealed is None:
            data = bytearray(m.encode(values, strict=False, scaling=True))
            if prot is not None:
                data[prot.crc_byte] = crc8_j1850(bytes(data[: prot.crc_byte]))
            if len(cache) >= _CODEC_CACHE:
                cache.clear()
            cache[key] = sealed = bytes(data)
        return bytearray(sealed)

    def _transmit(self, m: Message) -> None:
        assert self._bus is not None and self._ctx is not None
        msg = self._encode(m)
        if msg is None:
            return
        try:
            self._bus.send(msg)
        except can.CanError as exc:
            self._ctx.fault(self.name, f"CAN send of {m.name} failed: {exc}")
            return
        self._ctx.record_frame(msg, True)

    def _on_frame(self, msg: can.Message) -> None:
        """One received frame (the in-process link hands over frames one by one when asked to)."""
        self._on_frames((msg,))

    def _on_frames(self, frames: Sequence[can.Message]) -> None:
        """Received frames in bus order, on the loop: each recorded, then decoded and published.

        The in-process link hands over the frames of one instant, a bus read on a thread what
        arrived since its last batch (:class:`_BatchReader`): one call, not one loop callback, per frame.
        The frames are recorded together, in runs: those before a frame that publishes anything
        (or raises a fault) are recorded before it is, so the record sees what one call per frame
        would. A payload already decoded that publishes nothing (a cell voltage nobody shows, the
        usual case on a busy bus) is recorded and costs a dictionary look-up.
        """
        ctx = self._ctx
        if ctx is None:
            return
        record_frames = ctx.record_frames or self._record_each
        rx_msgs = self.rx_msgs
        j1939 = self._j1939
        uds = self._uds
        uds_rx = -1 if uds is None else uds.rx_id
        on_message = self._on_message
        publish = self._publish
        decoded = self._decode_cache
        protected = self._protection
        unseen = self._unseen  # messages connect waits for; emptied by _on_message
        pending: list[can.Message] = []  # received, not recorded yet
        for msg in frames:
            pending.append(msg)
            if msg.is_error_frame:
                record_frames(pending)
                pending = []
                ctx.fault(self.name, f"CAN error frame on the bus: {_error_class(msg)}")
                continue
            fid = msg.arbitration_id
            if fid == uds_rx:
                assert uds is not None
                # The ISO-TP state lives on the loop; fed after the frames before it, as a callback.
                ctx.loop.call_soon_threadsafe(uds.feed, msg)
                continue
            if j1939 is None:
                m = rx_msgs.get(fid)
                if m is None:
                    continue
            else:
                record_frames(pending)
                pending = []
                m = j1939.on_frame(msg)
                if m is None:
                    continue
                fid = m.frame_id
            if self._ts_offset is None:
                self._ts_offset = ctx.loop.time() - msg.timestamp
            cache = decoded.get(fid)
            if cache is None and not unseen:
                continue  # nobody refers to a signal of it (and connect waits for none): recorded only
            # More than 8 bytes with is_fd false is an FD frame from python-can's socketcand client: decoded alike.
            data = bytes(msg.data)
            if cache is not None and not unseen:
                samples = cache.get(data)
                if samples is not None:  # decoded before: _on_message's work without decoding
                    if samples and (samples[0] or protected[fid] is not None):
                        if pending:
                            record_frames(pending)
                            pending = []
                        publish(fid, samples, msg.timestamp + self._ts_offset)
                    continue  # else no signal of it that anybody refers to, no E2E state: recorded only
            if pending:
                record_frames(pending)
                pending = []
            on_message(m, data, msg.timestamp + self._ts_offset)
        if pending:
            record_frames(pending)

    def _record_each(self, frames: list[can.Message]) -> None:
        """Received frames for the record, one call each (a context that records no batches)."""
        assert self._ctx is not None
        record = self._ctx.record_frame
        for msg in frames:
            record(msg, False)

    def _read_failed(self, exc: Exception) -> None:
        if self._ctx is not None and self._reader is not None:
            self._ctx.fault(self.name, f"CAN bus read failed: {exc}")

    def _on_message(self, m: Message, data: bytes, t: float) -> None:
        """A received DBC message at loop time ``t``: one frame, or a J1939 multi-packet message."""
        ctx = self._ctx
        assert ctx is not None
        if self._unseen:
            self._unseen.discard(m.frame_id)
            if not self._unseen and self._all_seen is not None and not self._all_seen.done():
                self._all_seen.set_result(None)
        cache = self._decode_cache.get(m.frame_id)
        if cache is None:
            return  # nobody refers to a signal of it: recorded, not decoded
        # A cyclic message mostly repeats its payload (a status, a slowly moving value): the
        # samples of a payload are decoded once. Same payload, same signals, so the same values.
        key = data if type(data) is bytes else bytes(data)
        samples = cache.get(key)
        if samples is None:
            samples = self._samples(m, key)
            if len(cache) >= _CODEC_CACHE:
                cache.clear()
            cache[key] = samples
        if samples:  # else a frame that does not fit its DBC definition carries no usable signals
            self._publish(m.frame_id, samples, t)

    def _publish(self, frame_id: int, samples: tuple[list[tuple[str, float]], bool, int], t: float) -> None:
        """The decoded samples of one frame at loop time ``t``, and its E2E state (checked on every frame)."""
        assert self._ctx is not None
        publish = self._ctx.publish
        for name, value in samples[0]:
            publish(name, value, t)
        prot = self._protection[frame_id]
        if prot is not None:
            state = float(self._check(prot, samples[1], samples[2]))
            e2e = self._e2e_published.get(frame_id)
            if e2e is not None:
                publish(e2e, state, t)

    def _samples(self, m: Message, data: bytes) -> tuple[list[tuple[str, float]], bool, int] | tuple[()]:
        """The signals of a payload somebody refers to (published names and values), whether its
        CRC holds and its alive count; empty when it does not decode."""
        try:
            decoded = cast(dict[str, float], m.decode(data, decode_choices=False, scaling=True))
        except Exception:
            return ()
        names = self._publish_names[m.frame_id]
        values = [(names[sig], float(value)) for sig, value in decoded.items() if sig in names]
        prot = self._protection[m.frame_id]
        if prot is None:
            return values, True, 0
        crc_ok = len(data) > prot.crc_byte and crc8_j1850(bytes(data[: prot.crc_byte])) == data[prot.crc_byte]
        return values, crc_ok, int(decoded.get(prot.alive, 0))

    def _receive_only(self, wanted: Collection[str] | None) -> None:
        """Decode the received messages a signal of which ``wanted`` names, and publish those signals only.

        Decoding is most of the cost of a frame. A signal nobody refers to has no reader: no
        step, monitor, limit, display, statistic or record names it (DeviceContext.wanted), so
        it is not published; its frame is recorded whatever it carries. Every sample of a
        signal somebody refers to is published, changed or not, at its frame's time.
        """
        message_names = {m.frame_id: m.name for m in self.db.messages}

        def referred(frame_id: int, sig: str, full: str) -> bool:
            return wanted is None or full in wanted or f"{self.name}.{message_names[frame_id]}.{sig}" in wanted

        self._decode_cache = {i: {} for i in self._referenced(wanted)}
        self._publish_names = {
            i: {sig: full for sig, full in by_signal.items() if referred(i, sig, full)}
            for i, by_signal in self._published.items()
        }
        self._e2e_published = {i: n for i, n in self._e2e_name.items() if wanted is None or n in wanted}

    @staticmethod
    def _check(prot: _Protection, crc_ok: bool, alive: int) -> int:
        if not crc_ok:
            return E2E_STATES["CRC_ERROR"]
        last, prot.last_alive = prot.last_alive, alive
        if last is not None and alive != (last + 1) % 16:
            return E2E_STATES["ALIVE_ERROR"]
        return E2E_STATES["OK"]

    async def set(self, values: Mapping[str, float]) -> dict[str, float]:
        assert self._ctx is not None
        readback: dict[str, float] = {}
        touched: dict[str, list[tuple[str, str]]] = {}  # message -> (local name, signal name)
        by_name: dict[str, Message] = {}
        t = self._ctx.loop.time()
        for short, value in values.items():
            if short in self._inject_msg:
                self._set_injection(self._inject_msg[short], int(value))
                readback[short] = float(self._inject.get(self._inject_msg[short].name, 0))
                self._ctx.publish(f"{self.name}.{short}", readback[short], t)
                continue
            target = self._tx_signal.get(short)
            if target is None:
                raise DeviceError(self.name, f"'{short}' is not a signal the bench sends")
            m, sig_name = target
            self._tx_values[m.name][sig_name] = float(value)
            by_name[m.name] = m
            touched.setdefault(m.name, []).append((self._local[m.frame_id][sig_name], sig_name))
        for name, sigs in touched.items():
            m = by_name[name]
            # Read back what the frame will actually carry (scaling and resolution of the DBC).
            frame = m.encode(self._tx_values[m.name], strict=False)
            decoded = cast(dict[str, float], m.decode(frame, decode_choices=False))
            for local, sig_name in sigs:
                readback[local] = float(decoded[sig_name])
                self._ctx.publish(f"{self.name}.{local}", readback[local], t)
            # Send now as well as on the cycle: a safe-state command must not wait a cycle.
            self._transmit(m)
        return readback

    def _set_injection(self, m: Message, code: int) -> None:
        if code not in INJECTIONS.values():
            raise DeviceError(self.name, f"no fault injection with code {code} for {m.name}")
        with self._tx_lock:
            if code == _STUCK and self._inject.get(m.name) != _STUCK:
                self._stuck[m.name] = dict(self._tx_values[m.name])
            if code:
                self._inject[m.name] = code
            else:
                self._inject.pop(m.name, None)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._j1939 is not None:
            self._j1939.stop()
        if self._sender is not None:
            self._sender.stop()
            self._sender = None
        if self._reader is not None:
            self._reader.stop()
            self._reader = None
        if self._bus is not None:
            with contextlib.suppress(Exception):
                self._bus.shutdown()
            self._bus = None


class _BatchReader:
    """Reads a bus on a thread and hands the frames to the loop in batches, in bus order.

    The thread takes everything the interface has already received (``recv(0)``) into a queue
    and asks the loop to collect it with one ``call_soon_threadsafe``, unless a collection is
    already due: frames that arrive while the loop is busy join the batch it collects next. A
    busy bus costs one loop wake-up per batch instead of one per frame; a quiet bus gives
    batches of one frame, handed over as soon as it arrives.
    """

    def __init__(
        self,
        bus: can.BusABC,
        loop: asyncio.AbstractEventLoop,
        on_frames: Callable[[list[can.Message]], None],
        on_error: Callable[[Exception], None],
        name: str,
    ) -> None:
        self._bus = bus
        self._loop = loop
        self._on_frames = on_frames
        self._on_error = on_error
        self._queue: deque[can.Message] = deque()
        self._due = False  # a collection is scheduled on the loop and has not begun
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        recv = self._bus.recv
        queue = self._queue
        while not self._stopped:
            try:
                msg = recv(_READ_POLL_S)
                if msg is None:
                    continue
                queue.append(msg)
                taken = 1
                while taken < _MAX_BATCH and (msg := recv(0)) is not None:
                    queue.append(msg)
                    taken += 1
            except Exception as exc:
                if not self._stopped:
                    with contextlib.suppress(RuntimeError):  # the loop is gone
                        self._loop.call_soon_threadsafe(self._on_error, exc)
                return
            if not self._due:
                self._due = True
                try:
                    self._loop.call_soon_threadsafe(self._collect)
                except RuntimeError:
                    return  # the loop is closed: nobody is left to hand frames to

    def _collect(self) -> None:
        """On the loop: everything queued so far, as one batch."""
        self._due = False  # from here on a frame queued is collected now or by the next collection
        queue = self._queue
        frames = [queue.popleft() for _ in range(len(queue))]
        if frames and not self._stopped:
            self._on_frames(frames)

    def stop(self) -> None:
        self._stopped = True
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2 * _READ_POLL_S + 1.0)


def _load_dbc(path: Path, label: str) -> Database:
    """Load a DBC quietly and refuse the defects that would make its frames mean something else.

    cantools logs a warning for a frame id defined twice (and keeps the last) and may print; at
    load time the bench says what is wrong in one line of its own instead.
    """
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"DBC file not found: {label}", "dbc") from None
    except OSError as exc:
        raise ConfigError(f"cannot read DBC {label}: {exc.strerror or exc}", "dbc") from None
    if not text.strip():
        raise ConfigError(f"{label} has no messages (the file is empty)", "dbc")
    key = (path.suffix.lower(), text)
    if key in _LOADED:
        return _LOADED[key]
    db = _parse_dbc(path, label)
    if len(_LOADED) >= _LOADED_MAX:
        _LOADED.clear()
    _LOADED[key] = db
    return db


# A DBC parsed once per process for the same file contents and format: a fault-matrix worker
# connects the same station for every cell, and cantools takes about 0.07 s per parse. The key
# is the whole contents, so an edited file is parsed again; the database is only read (decode,
# encode, look-ups), so sharing it between the runs of one process changes nothing. A file that
# is refused raises and is not remembered.
_LOADED: dict[tuple[str, bytes], Database] = {}
_LOADED_MAX = 32


def _parse_dbc(path: Path, label: str) -> Database:
    logger = logging.getLogger("cantools")
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            db = cantools.database.load_file(str(path), strict=True)
    except Exception as exc:  # cantools raises many types for a broken file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        overlap = _OVERLAP.search(first)
        if overlap:
            a, b, m = overlap.groups()
            raise ConfigError(f"{label}: signals {a} and {b} overlap in message {m}", "dbc") from None
        raise ConfigError(f"cannot load DBC {label}: {first}", "dbc") from None
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
    if not isinstance(db, Database):
        raise ConfigError(f"{label} is not a CAN database", "dbc")
    if not db.messages:
        raise ConfigError(f"{label} has no messages", "dbc")
    seen: dict[tuple[int, bool], Message] = {}
    for m in db.messages:
        key = (m.frame_id, bool(m.is_extended_frame))
        if key in seen:
            raise ConfigError(
                f"{label}: messages {seen[key].name} and {m.name} have the same frame id 0x{m.frame_id:X}", "dbc"
            )
        seen[key] = m
        limit = _MAX_FRAME[bool(m.is_fd)]
        if m.length > limit:
            kind = "a CAN FD frame" if m.is_fd else "a classic CAN frame"
            raise ConfigError(
                f"{label}: message {m.name} is {m.length} bytes long; {kind} carries at most {limit}", "dbc"
            )
        twice = [n for n, c in Counter(s.name for s in m.signals).items() if c > 1]
        if twice:
            raise ConfigError(f"{label}: signal {twice[0]} is defined twice in message {m.name}", "dbc")
    return db


def _check_interface(cfg: Mapping[str, Any]) -> None:
    """Refuse, when the station is loaded, an interface python-can does not know or a missing SocketCAN device.

    Both would otherwise be found only when the bus opens, after other devices may have moved.
    """
    interface = str(cfg["interface"])
    if interface not in can.VALID_INTERFACES:
        raise ConfigError(
            f"unknown CAN interface '{interface}' (known: {', '.join(sorted(can.VALID_INTERFACES))})", "can"
        )
    if interface == "socketcan":
        channel = str(cfg.get("channel", ""))
        try:
            socket.if_nametoindex(channel)
        except OSError:
            raise ConfigError(f"CAN interface '{channel}' does not exist on this host", "can") from None


async def _open_off_loop(device: str, cfg: Mapping[str, Any]) -> can.BusABC:
    """Open a hardware or network interface without blocking the loop.

    python-can's socketcand client retries a refused connection in a busy loop for 10 s and
    waits for the server's greeting with no timeout; other interfaces load vendor libraries. So a
    socketcand address is probed first (a refused port is one clear line at once), and the bus is
    built in a daemon thread: the engine's connect timeout then still holds, and a thread stuck
    in a handshake cannot keep the process from exiting.
    """
    if cfg.get("interface") == "socketcand":
        host, port = str(cfg.get("host", "127.0.0.1")), int(cfg.get("port", 29536))
        try:
            async with asyncio.timeout(2.0):
                _, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as exc:
            if isinstance(exc, OSError):
                # asyncio words a refused connection "Connect call failed (...)": say it as the OS does.
                why = os.strerror(exc.errno) if exc.errno else str(exc)
            else:
                why = "no answer within 2 s"
            raise DeviceError(device, f"cannot reach socketcand at {host}:{port}: {why}") from None
        writer.close()
        # python-can leaves Nagle on: a command frame then waits for the ACK of the frame before
        # it, which the server may delay by up to 40 ms (benchmarks/safe_state_latency.py).
        cfg = {"tcp_tune": True, **cfg}
    loop = asyncio.get_running_loop()
    done: asyncio.Future[can.BusABC] = loop.create_future()

    def settle(bus: can.BusABC | None, exc: BaseException | None) -> None:
        if done.cancelled():
            if bus is not None:
                bus.shutdown()  # opened too late: nobody will use it
        elif exc is not None:
            done.set_exception(exc)
        else:
            done.set_result(cast(can.BusABC, bus))

    def work() -> None:
        try:
            bus, exc = can.Bus(**cfg), None
        except Exception as e:
            bus, exc = None, e
        with contextlib.suppress(RuntimeError):  # the loop is gone
            loop.call_soon_threadsafe(settle, bus, exc)

    threading.Thread(target=work, name=f"{device}-open", daemon=True).start()
    return await done


def _choice_code(sig: Any, value: Any) -> float | None:
    if not sig.choices or not isinstance(value, str):
        return None
    choices = {str(v): int(k) for k, v in sig.choices.items()}
    code = state_value(SignalInfo(sig.name, parse_unit(""), choices), value)
    if code is not None:
        return float(code)
    raise ConfigError(
        f"initial: {sig.name} has no state '{value}' (states: {state_list(choices)}){did_you_mean(value, choices)}",
        "initial",
    )


def _duration(text: str, what: str, key: str) -> float:
    """A time of the config from 1 ms to 1 h, in seconds (``what`` names it in the error)."""
    try:
        q = parse_quantity(text)
    except ExpressionError as exc:
        raise ConfigError(f"{what}: {exc}", key) from None
    if q.dim != TIME or not 0.001 <= q.base <= 3600:
        raise ConfigError(f"{what} must be a time from 1 ms to 1 h, got '{text}'", key)
    return q.base


def _cycle_text(seconds: float) -> str:
    """A cycle time as a DBC writes it: ``100 ms`` below a second, ``5.4 s`` from one."""
    return f"{seconds * 1000:g} ms" if seconds < 1 else format_duration(seconds)


def _error_class(msg: can.Message) -> str:
    """What an error frame says, from the SocketCAN error class bits in the data bytes."""
    data = bytes(msg.data)
    status = data[1] if len(data) > 1 else 0
    if status & 0x40 or msg.arbitration_id & 0x40:
        return "bus-off"
    if status & 0x30:
        return "error-passive"
    if status & 0x0C:
        return "error-warning"
    return f"error frame 0x{msg.arbitration_id:08X} {data.hex()}"
