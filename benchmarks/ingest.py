"""CAN ingest: frames per CPU-second of the bench's receive path against the naive pipeline.

The traffic is a heavy-truck BMS on dbc/bms.dbc with every cell voltage every 100 ms (the
multiplexed BMS_CellVoltages, 64 groups of 3 cells), BMS_Status (alive counter and CRC),
BMS_PackValues and BMS_CellStats every 100 ms, temperatures, limits and isolation every second:
about 670 frames/s, sent in bursts of one 10 ms slot as a BMS sends them. Payloads move as a
pack being charged does: a cell voltage changes by 1 mV every 10 s or so, so most payloads repeat.

Ours is the bench's own receive path with the project's classes, nothing re-implemented:
drivers/can_dbc.py's device decodes the signals the run refers to (the reference overcharge
run's: its steps, monitors, display, the station limits, plus three cell voltages shown), the
signal bus (bench/signals.py) keeps them and their history, the supervisor (bench/supervision.py)
checks the station limits and the sequence's monitors on every sample, and the run recorder
(bench/runrecord.py) writes every frame to can.blf. Two paths:

* inproc: the in-process link (drivers/can_inproc.py) on the virtual-time loop, the sender on
  the same loop (its cost is counted with ours);
* virtual: python-can's ``virtual`` interface read on a thread (the stand-in for a hardware
  interface); the sender is another thread, not counted;
* socketcand: python-can's socketcand client against ``bench sim serve`` (its own process), fed
  by a socketcand client in a third process that also observes the channel.

The baseline, on the same transport in the same run: python-can's Notifier with an
AsyncBufferedReader and cantools' ``decode_message`` of every frame, one loop callback per frame.

The figure is frames per CPU-second of the receiving threads (the event loop and the reader
thread, read from their own CPU clocks), the process pinned to one core. Every run checks, for
both pipelines, that every frame arrived in order; for ours also that the can.blf frames and
their timestamps are those sent, and that the history of the decoded signals is what cantools
decodes from the frames sent, sample for sample, at the frames' times.

    .venv/bin/python benchmarks/ingest.py [--seconds 300] [--rounds 3] [--smoke] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import can
import cantools
from cantools.database.can import Database

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.device import DeviceContext  # noqa: E402
from bench.plan import Plan, build_plan  # noqa: E402
from bench.runcontext import RunContext, RunOptions  # noqa: E402
from bench.runrecord import RunRecorder  # noqa: E402
from bench.safestate import SafeState  # noqa: E402
from bench.stopping import StopLevels  # noqa: E402
from bench.supervision import Supervision  # noqa: E402
from bench.vtime import new_loop  # noqa: E402
from benchmarks.table import Row, add_arguments, emit  # noqa: E402
from drivers.can_dbc import CanDbcDriver  # noqa: E402
from drivers.e2e import crc8_j1850  # noqa: E402

DBC = ROOT / "dbc" / "bms.dbc"
SEQUENCE = ROOT / "sequences" / "r100" / "overcharge.yaml"
STATION = ROOT / "stations" / "sim.yaml"
# Cells a display would show besides the run's own signals: the whole multiplexed message is decoded.
SHOWN_CELLS = ("bms.cell_v_001", "bms.cell_v_096", "bms.cell_v_192")
# Signals whose history is compared with cantools' decoding of the frames sent: one per message kind.
CHECKED = ("bms.soc", "bms.cell_v_max", "bms.cell_temp_max", "bms.bms_state", *SHOWN_CELLS)
START_EPOCH = 1_750_000_000.0
SLOT = 0.010
GOAL = 3.0

Frame = tuple[float, int, bytes]  # time since the traffic began, frame id, payload


def load_dbc() -> Database:
    return cast(Database, cantools.database.load_file(str(DBC)))


# -- the traffic ------------------------------------------------------------------------------------
def traffic(seconds: float) -> list[Frame]:
    """The BMS's frames for ``seconds``, in bursts of one 10 ms slot (same time within a burst)."""
    db = load_dbc()
    msg = {m.name: m for m in db.messages}
    cache: dict[tuple[str, tuple[float, ...]], bytes] = {}

    def enc(name: str, values: Mapping[str, float]) -> bytes:
        key = (name, tuple(values.values()))
        data = cache.get(key)
        if data is None:
            m = msg[name]
            full = dict(values) if m.is_multiplexed() else {s.name: 0.0 for s in m.signals} | dict(values)
            data = cache[key] = bytes(m.encode(full, strict=False))
        return data

    frames: list[Frame] = []
    cycles = round(seconds / 0.1)
    alive = 0
    for k in range(cycles):
        t0 = k * 0.1
        cells = [3.650 + 0.001 * ((k + 7 * i) // 100) for i in range(192)]  # 1 mV per 10 s, staggered
        for slot in range(10):
            t = round(t0 + slot * SLOT, 6)
            if slot == 0:
                status = {"bms_state": 3, "contactors": 2, "status_alive": alive, "status_crc": 0}
                data = bytearray(enc("BMS_Status", status))
                data[7] = crc8_j1850(bytes(data[:7]))
                alive = (alive + 1) % 16
                frames.append((t, 0x100, bytes(data)))
                pack = {"pack_voltage": 700 + k // 100, "pack_current": 60.0, "link_voltage": 700 + k // 100}
                frames.append((t, 0x101, enc("BMS_PackValues", {**pack, "soc": 50 + k // 72 * 0.1})))
                hi, lo = max(cells), min(cells)
                stats = {"cell_v_max": hi, "cell_v_min": lo, "cell_v_max_id": cells.index(hi) + 1}
                stats |= {"cell_v_min_id": cells.index(lo) + 1, "cell_v_avg": round(sum(cells) / 192, 3)}
                frames.append((t, 0x102, enc("BMS_CellStats", stats)))
            if slot == 5 and k % 10 == 0:
                temps = {"cell_temp_max": 30 + k // 600, "cell_temp_min": 28.0, "cell_temp_max_id": 17}
                frames.append((t, 0x103, enc("BMS_Temperatures", {**temps, "coolant_temp": 25.0})))
                limits = {"charge_current_limit": 160.0, "discharge_current_limit": 300.0}
                limits |= {"charge_voltage_limit": 806.0, "discharge_voltage_limit": 576.0}
                frames.append((t, 0x104, enc("BMS_Limits", limits)))
                frames.append((t, 0x105, enc("BMS_Isolation", {"iso_resistance": 5000.0, "iso_valid": 1})))
            # 64 cell groups per 100 ms: 7 in each of the first four slots, 6 in the others.
            first = slot * 6 + min(slot, 4)
            for group in range(first, first + (7 if slot < 4 else 6)):
                values = {"cell_group": group} | {
                    f"cell_v_{3 * group + j + 1:03d}": cells[3 * group + j] for j in range(3)
                }
                frames.append((t, 0x110, enc("BMS_CellVoltages", values)))
    return frames


def expected_history(frames: list[Frame], t_of: Callable[[int], float]) -> dict[str, list[tuple[float, float]]]:
    """What cantools decodes from the frames sent, per checked signal, at the time each frame had."""
    db = load_dbc()
    out: dict[str, list[tuple[float, float]]] = {n: [] for n in CHECKED}
    short = {n.split(".", 1)[1]: n for n in CHECKED}
    for i, (_, fid, data) in enumerate(frames):
        decoded = cast(dict[str, float], db.decode_message(fid, data, decode_choices=False))
        for sig, value in decoded.items():
            name = short.get(sig)
            if name is not None:
                out[name].append((t_of(i), float(value)))
    return out


# -- checks -----------------------------------------------------------------------------------------
class CheckFailed(AssertionError):
    pass


def check_sequence(what: str, got: list[tuple[int, bytes]], frames: list[Frame]) -> None:
    """No frame lost, none added, the order kept."""
    sent = [(fid, data) for _, fid, data in frames]
    if len(got) != len(sent):
        raise CheckFailed(f"{what}: {len(got)} frames received of {len(sent)} sent")
    for i, (a, b) in enumerate(zip(got, sent, strict=True)):
        if a != b:
            raise CheckFailed(f"{what}: frame {i} is {a[0]:X}#{a[1].hex()}, sent {b[0]:X}#{b[1].hex()}")


def check_record(what: str, blf: Path, frames: list[Frame], sent_t: list[float]) -> None:
    """can.blf holds every frame in order, each at the time it was sent (relative to the first)."""
    with can.BLFReader(str(blf)) as reader:
        got = [m for m in reader if m.is_rx]  # the bench's own commands are recorded too
    check_sequence(f"{what} can.blf", [(m.arbitration_id, bytes(m.data)) for m in got], frames)
    base_got, base_sent = got[0].timestamp, sent_t[0]
    for i, (m, t) in enumerate(zip(got, sent_t, strict=True)):
        # BLF keeps nanoseconds; the float of an epoch time keeps about 0.2 us.
        if abs((m.timestamp - base_got) - (t - base_sent)) > 2e-6:
            raise CheckFailed(
                f"{what} can.blf: frame {i} at {m.timestamp - base_got:.6f} s, sent at {t - base_sent:.6f} s"
            )


def check_history(what: str, ctx: RunContext, frames: list[Frame], t_of: Callable[[int], float], t_tol: float) -> None:
    """Every sample of the checked signals, with the value cantools decodes and the frame's time."""
    for name, want in expected_history(frames, t_of).items():
        got = ctx.bus.history(name, float("-inf"))
        if len(got) != len(want):
            raise CheckFailed(f"{what}: {name} has {len(got)} samples, {len(want)} frames carried it")
        for (tg, vg), (tw, vw) in zip(got, want, strict=True):
            if abs(tg - tw) > t_tol or abs(vg - vw) > 1e-9:
                raise CheckFailed(f"{what}: {name} sample ({tg:.6f} s, {vg}) where the frame gave ({tw:.6f} s, {vw})")


# -- the bench's receive path -----------------------------------------------------------------------
@dataclass
class Bench:
    """The run's parts that a received frame reaches, as the engine wires them."""

    ctx: RunContext
    rec: RunRecorder
    driver: CanDbcDriver
    dctx: DeviceContext
    subs: list[Any]


def bench_parts(plan: Plan, loop: asyncio.AbstractEventLoop, run_dir: Path, can_cfg: dict[str, Any]) -> Bench:
    ctx = RunContext(plan, RunOptions(reports_dir=run_dir, run_id="ingest", start_epoch=START_EPOCH))
    ctx.state.t0 = loop.time()
    for name in CHECKED:
        ctx.bus.keep_history(name)
    supervision = Supervision(ctx, StopLevels(ctx, SafeState(ctx)))
    subs = supervision.start_station() + supervision.start_monitors()
    rec = RunRecorder(run_dir / "run", loop.time(), START_EPOCH)
    ctx.rec = rec
    faults: list[str] = []

    def fault(device: str, reason: str) -> None:
        faults.append(f"{device}: {reason}")
        raise CheckFailed(f"device fault: {device}: {reason}")

    wanted = frozenset(plan.wanted or ()) | set(SHOWN_CELLS)
    dctx = DeviceContext(loop, ctx.bus.publish, rec.frame, fault, wanted=wanted, record_frames=rec.frames_received)
    # The bench's node, as on the station: the device also sends its BENCH_Command cycle.
    driver = CanDbcDriver("bms", {"dbc": str(DBC), "node": "BENCH", "can": can_cfg}, ROOT)
    return Bench(ctx, rec, driver, dctx, subs)


def finish(
    b: Bench, what: str, frames: list[Frame], sent_t: list[float], t_of: Callable[[int], float], t_tol: float = 0.0
) -> None:
    b.rec.close_traffic()
    if b.ctx.stop is not None:
        raise CheckFailed(f"{what}: the run was stopped: {b.ctx.stop[1]}")
    check_record(what, b.rec.dir / "can.blf", frames, sent_t)
    check_history(what, b.ctx, frames, t_of, t_tol)
    b.rec.log.close()


def last_frame(b: Bench, frames: list[Frame]) -> Callable[[], Any]:
    """Wait (call, then await) until the last frame sent is published (all before it are, in order), or 30 s."""
    last = SHOWN_CELLS[-1]  # in the last group of the cell voltages, the last frame of every cycle
    want = sum(1 for _, fid, data in frames if fid == 0x110 and data[0] == 63)
    heard = [0]
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def count(name: str, value: float, t: float) -> None:
        heard[0] += 1
        if heard[0] == want and not done.done():
            done.set_result(None)

    sub = b.ctx.bus.subscribe([last], count)

    async def wait() -> None:
        with contextlib.suppress(TimeoutError):  # the checks then say what is missing
            async with asyncio.timeout(30.0):
                await done
        sub.cancel()

    return wait


def cpu_clock(thread: threading.Thread | None) -> Callable[[], float]:
    """The CPU clock of ``thread`` (the calling one when None), in seconds."""
    ident = threading.get_ident() if thread is None else thread.ident
    assert ident is not None
    clock = time.pthread_getcpuclockid(ident)
    return lambda: time.clock_gettime(clock)


def reader_thread(prefix: str) -> threading.Thread:
    for t in threading.enumerate():
        if t.name.startswith(prefix):
            return t
    raise CheckFailed(f"no thread named {prefix}...")


def inproc_messages(frames: list[Frame]) -> list[can.Message]:
    """The frames as the sender hands them to the link, made before anything is measured (the
    sender's cost is subtracted: the less of it, the less its noise weighs on the figure)."""
    return [can.Message(arbitration_id=fid, data=data, is_extended_id=False) for _, fid, data in frames]


async def send_inproc(sender: can.BusABC, frames: list[Frame], msgs: list[can.Message]) -> float:
    """Send the traffic on the in-process link at its times (loop time since the call); the start time."""
    loop = asyncio.get_running_loop()
    t_start = loop.time()
    send = sender.send
    i, n = 0, len(frames)
    while i < n:
        t = frames[i][0]
        await asyncio.sleep(max(0.0, t_start + t - loop.time()))
        while i < n and frames[i][0] == t:
            send(msgs[i])
            i += 1
    for _ in range(3):
        await asyncio.sleep(0)  # the last burst is delivered
    return t_start


async def sender_inproc(frames: list[Frame]) -> float:
    """CPU seconds of the sending side alone: the same sends on a channel nobody else is on."""
    sender = can.Bus(interface="inproc", channel="ingest-alone")
    msgs = inproc_messages(frames)
    cpu = cpu_clock(None)
    c0 = cpu()
    await send_inproc(sender, frames, msgs)
    spent = cpu() - c0
    sender.shutdown()
    return spent


async def ours_inproc(plan: Plan, frames: list[Frame], run_dir: Path) -> float:
    """CPU seconds of the in-process path, the sending side included: the driver on the virtual-time loop."""
    loop = asyncio.get_running_loop()
    b = bench_parts(plan, loop, run_dir, {"interface": "inproc", "channel": "ingest"})
    sender = can.Bus(interface="inproc", channel="ingest")
    msgs = inproc_messages(frames)
    cpu = cpu_clock(None)
    c0 = cpu()
    connecting = loop.create_task(b.driver.connect(b.dctx))
    await asyncio.sleep(0)
    t_start = await send_inproc(sender, frames, msgs)
    await connecting
    spent = cpu() - c0
    await b.driver.close()
    sender.shutdown()
    sent_t = [t_start + t for t, _, _ in frames]
    finish(b, "inproc", frames, sent_t, lambda i: sent_t[i], 1e-9)
    return spent


def feed_virtual(channel: str, frames: list[Frame], base: float) -> threading.Thread:
    """A thread that puts the traffic on a python-can virtual channel, stamped base + t.

    It does what ``VirtualBus.send`` does for each receiver (a message of its own, stamped, in
    the receiver's queue) without the deepcopy that makes a virtual sender slower than either
    receiving pipeline: the frames wait in the queue as they would in a busy interface's buffer,
    so what is measured is the cost of taking them in.
    """
    from can.interfaces.virtual import channels

    def run() -> None:
        queues = list(channels[channel])
        for t, fid, data in frames:
            for q in queues:
                q.put(
                    can.Message(
                        timestamp=base + t, arbitration_id=fid, data=data, is_extended_id=False, channel=channel
                    )
                )

    return threading.Thread(target=run, name="ingest-feeder", daemon=True)


async def start_reading(b: Bench, loop: asyncio.AbstractEventLoop) -> tuple[asyncio.Task[None], Callable[[], float]]:
    """Start the device's connect, which opens its bus and its reader thread; that thread's CPU clock."""
    connecting = loop.create_task(b.driver.connect(b.dctx))
    while b.driver._bus is None:  # noqa: ASYNC110 (the device opens its bus in connect; nothing to wait on)
        await asyncio.sleep(0.001)
    return connecting, cpu_clock(reader_thread("bms-rx"))


async def ours_virtual(plan: Plan, frames: list[Frame], run_dir: Path, channel: str) -> float:
    """CPU seconds of the loop and the driver's reader thread, reading python-can's virtual bus."""
    loop = asyncio.get_running_loop()
    b = bench_parts(plan, loop, run_dir, {"interface": "virtual", "channel": channel})
    all_heard = last_frame(b, frames)
    cpu = cpu_clock(None)
    c0 = cpu()
    connecting, reader_cpu = await start_reading(b, loop)
    r0 = reader_cpu()
    feeder = feed_virtual(channel, frames, START_EPOCH)
    feeder.start()
    await connecting
    await all_heard()
    spent = cpu() - c0 + reader_cpu() - r0
    await b.driver.close()
    feeder.join()
    base = START_EPOCH + frames[0][0]
    sent_t = [base + t for t, _, _ in frames]
    # The device maps the bus's clock onto the loop's with the first frame: times relative to it.
    first = b.ctx.bus.history(CHECKED[0], float("-inf"))
    offset = (first[0][0] - (frames[0][0])) if first else 0.0
    # An epoch time as a float keeps about 0.2 us: the mapped times agree to that.
    finish(b, "virtual", frames, sent_t, lambda i: frames[i][0] + offset, 1e-6)
    return spent


# -- the naive pipeline -----------------------------------------------------------------------------
async def naive(
    bus: can.BusABC, n: int, start: Callable[[], None], thread_prefix: str
) -> tuple[float, list[tuple[int, bytes]]]:
    """Notifier + AsyncBufferedReader + cantools decode of every frame: CPU seconds and what it got."""
    db = load_dbc()
    loop = asyncio.get_running_loop()
    reader = can.AsyncBufferedReader()
    cpu = cpu_clock(None)
    c0 = cpu()
    notifier = can.Notifier(bus, [reader], loop=loop)
    nthread = reader_thread(thread_prefix)
    ncpu = cpu_clock(nthread)
    n0 = ncpu()
    got: list[tuple[int, bytes]] = []
    start()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(60.0):  # a lost frame ends the wait; the check then says so
            async for msg in reader:
                db.decode_message(msg.arbitration_id, cast(bytes, msg.data))
                got.append((msg.arbitration_id, bytes(msg.data)))
                if len(got) == n:
                    break
    spent = cpu() - c0 + ncpu() - n0
    notifier.stop()
    return spent, got


async def naive_virtual(frames: list[Frame], channel: str) -> float:
    bus = can.Bus(interface="virtual", channel=channel)
    feeder = feed_virtual(channel, frames, START_EPOCH)
    try:
        spent, got = await naive(bus, len(frames), feeder.start, "Notifier")
    finally:
        bus.shutdown()
    feeder.join()
    check_sequence("naive virtual", got, frames)
    return spent


# -- socketcand: python-can's client against `bench sim serve` --------------------------------------
SOCKETCAND_CHANNEL = "ingest"
# Frames a second the feeder offers the server; the server relays them to every other client.
SOCKETCAND_RATE = 20_000
COMMAND_ID = 0x200  # BENCH_Command, which the device itself sends on the channel


@contextlib.contextmanager
def served_station(tmp: Path) -> Iterator[int]:
    """`bench sim serve` of the simulated station with one more CAN channel, empty; its socketcand port."""
    from tests.served import dump_yaml, load_yaml, sim_serve, write_stations

    stations = write_stations(tmp / "station")
    served = load_yaml(stations.served)
    served["serve"]["can"]["channels"] = ["bench0", SOCKETCAND_CHANNEL]
    with sim_serve(dump_yaml(served, stations.served)):
        yield stations.can_port


def _handshake(port: int, raw: bool) -> socket.socket:
    """A socketcand client on the channel (raw: frames flow to it at once)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    replies = [b"< open " + SOCKETCAND_CHANNEL.encode() + b" >"] + ([b"< rawmode >"] if raw else [])
    got = sock.recv(64)
    for line in replies:
        sock.sendall(line)
        got += sock.recv(64)
    if raw:
        sock.sendall(b"< echo >")  # talking after rawmode tells the server the handshake is done
    if got.count(b"< ok >") != len(replies):
        raise CheckFailed(f"socketcand handshake failed: {got!r}")
    return sock


def send_lines(frames: list[Frame]) -> list[bytes]:
    """The traffic as socketcand ``< send >`` elements (made before anything is measured)."""
    return [f"< send {fid:03X} {len(data):X} {' '.join(f'{b:X}' for b in data)} >".encode() for _, fid, data in frames]


def feed_socketcand(port: int, lines: list[bytes]) -> threading.Thread:
    """A thread that sends ``lines`` to the server, SOCKETCAND_RATE frames a second."""
    chunk = 100

    def run() -> None:
        sock = _handshake(port, raw=False)
        t0 = time.monotonic()
        for i in range(0, len(lines), chunk):
            sock.sendall(b"".join(lines[i : i + chunk]))
            ahead = t0 + (i + chunk) / SOCKETCAND_RATE - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        time.sleep(1.0)  # closed only once the server has relayed everything
        sock.close()

    return threading.Thread(target=run, name="ingest-feeder", daemon=True)


class Observer:
    """A raw socketcand client on the channel, in a process of its own (so that it takes no CPU
    or GIL from what is measured): what the server put on the channel, with the server's times."""

    def __init__(self, port: int, out: Path) -> None:
        self._out = out
        argv = [sys.executable, __file__, "--observe", str(port), "--out", str(out)]
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        if self._proc.stdout.readline().strip() != "ready":
            self._proc.kill()
            raise CheckFailed("the observer did not start")

    def frames(self) -> list[tuple[float, int, bytes]]:
        """Stop it; every frame seen except the device's own commands: (timestamp, id, payload)."""
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        if self._proc.wait(timeout=30) != 0:
            raise CheckFailed(f"the observer failed (exit code {self._proc.returncode})")
        out = []
        for element in self._out.read_bytes().split(b">"):
            fields = element.split()
            if len(fields) >= 4 and fields[1] == b"frame":
                fid = int(fields[2], 16)
                if fid != COMMAND_ID:
                    out.append((float(fields[3]), fid, bytes.fromhex(fields[4].decode()) if len(fields) > 4 else b""))
        return out


def observe(port: int, out: Path) -> int:
    """The observer process: everything the server sends to ``out``, until stdin closes."""
    sock = _handshake(port, raw=True)
    sock.settimeout(0.1)
    print("ready", flush=True)
    stop = threading.Event()

    def until_stdin_closes() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=until_stdin_closes, daemon=True).start()
    chunks = []
    while not stop.is_set():
        try:
            data = sock.recv(1 << 16)
        except TimeoutError:
            continue
        if not data:
            break
        chunks.append(data)
    sock.close()
    out.write_bytes(b"".join(chunks))
    return 0


async def ours_socketcand(plan: Plan, frames: list[Frame], run_dir: Path, port: int) -> float:
    """CPU seconds of the loop and the driver's reader thread, reading python-can's socketcand client."""
    loop = asyncio.get_running_loop()
    cfg = {"interface": "socketcand", "host": "127.0.0.1", "port": port, "channel": SOCKETCAND_CHANNEL}
    b = bench_parts(plan, loop, run_dir, cfg)
    all_heard = last_frame(b, frames)
    observer = Observer(port, run_dir / "observed.txt")
    lines = send_lines(frames)
    cpu = cpu_clock(None)
    c0 = cpu()
    connecting, reader_cpu = await start_reading(b, loop)
    r0 = reader_cpu()
    await asyncio.sleep(RAW_SETTLE)
    feeder = feed_socketcand(port, lines)
    feeder.start()
    await connecting
    await all_heard()
    spent = cpu() - c0 + reader_cpu() - r0
    await b.driver.close()
    feeder.join()
    seen = observer.frames()
    check_sequence("socketcand observer", [(fid, data) for _, fid, data in seen], frames)
    sent_t = [t for t, _, _ in seen]
    first = next(i for i, (_, fid, _) in enumerate(frames) if fid == 0x101)  # carries CHECKED[0]
    hist = b.ctx.bus.history(CHECKED[0], float("-inf"))
    offset = hist[0][0] - sent_t[first] if hist else 0.0
    finish(b, "socketcand", frames, sent_t, lambda i: sent_t[i] + offset, 1e-6)
    return spent


async def naive_socketcand(frames: list[Frame], port: int) -> float:
    cfg = {"interface": "socketcand", "host": "127.0.0.1", "port": port, "channel": SOCKETCAND_CHANNEL}
    bus = can.Bus(**cfg, tcp_tune=True)  # type: ignore[arg-type]
    await asyncio.sleep(RAW_SETTLE)
    feeder = feed_socketcand(port, send_lines(frames))
    try:
        spent, got = await naive(bus, len(frames), feeder.start, "Notifier")
    finally:
        bus.shutdown()
    feeder.join()
    check_sequence("naive socketcand", got, frames)
    return spent


# The server forwards frames to a python-can client this long after its rawmode (simulators/serve_can.py).
RAW_SETTLE = 0.4


# -- main -------------------------------------------------------------------------------------------
def run_on(virtual_time: bool, coro_fn: Callable[[], Any]) -> Any:
    loop = new_loop(virtual_time)
    try:
        return loop.run_until_complete(coro_fn())
    finally:
        loop.close()


def report(r: int, path: str, n: int, ours: float, base: float) -> None:
    print(
        f"round {r + 1} {path}: ours {n / ours:,.0f} frames/CPU-s, naive {n / base:,.0f} (ratio {base / ours:.2f})",
        file=sys.stderr,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="traffic duration (about 670 frames a second)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--paths", default="inproc,virtual,socketcand", help="which paths to measure")
    parser.add_argument("--observe", type=int, help=argparse.SUPPRESS)  # the observer process (its port)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    add_arguments(parser)
    args = parser.parse_args()
    if args.observe:
        return observe(args.observe, args.out)
    if args.smoke:
        args.seconds, args.rounds = 3.0, 1
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, for every thread started after
    frames = traffic(args.seconds)
    plan = build_plan(SEQUENCE, STATION)
    paths = args.paths.split(",")
    results: dict[str, tuple[list[float], list[float]]] = {p: ([], []) for p in paths}
    port: int | None = None
    with tempfile.TemporaryDirectory(prefix="ingest-") as tmp, contextlib.ExitStack() as stack:
        for r in range(args.rounds):
            for path in paths:
                work = Path(tmp) / f"{path}-{r}"
                work.mkdir()
                if path == "socketcand":
                    if port is None:
                        port = stack.enter_context(served_station(Path(tmp)))
                    base = run_on(False, functools.partial(naive_socketcand, frames, port))
                    ours = run_on(False, functools.partial(ours_socketcand, plan, frames, work, port))
                    results[path][0].append(ours)
                    results[path][1].append(base)
                    report(r, path, len(frames), ours, base)
                    continue
                base = run_on(False, functools.partial(naive_virtual, frames, f"naive-{r}"))
                if path == "inproc":
                    # The naive pipeline's sender is a thread of its own, not counted: nor is ours.
                    ours = run_on(True, functools.partial(ours_inproc, plan, frames, work))
                    ours -= run_on(True, functools.partial(sender_inproc, frames))
                elif path == "virtual":
                    ours = run_on(False, functools.partial(ours_virtual, plan, frames, work, f"ours-{r}"))
                else:
                    continue
                results[path][0].append(ours)
                results[path][1].append(base)
                report(r, path, len(frames), ours, base)
    rows = []
    for path, (ours_s, base_s) in results.items():
        if not ours_s:
            continue
        ours_rate = len(frames) / sorted(ours_s)[len(ours_s) // 2]
        base_rate = len(frames) / sorted(base_s)[len(base_s) // 2]
        ratio = ours_rate / base_rate
        rows.append(
            Row(
                "ingest",
                f"CAN ingest, {path} path, BMS full-bus mix",
                ours_rate,
                base_rate,
                "frames/CPU-s",
                ratio,
                "speed-up over the naive pipeline",
                f">= {GOAL:g}x",
                ratio >= GOAL,
            )
        )
    emit(rows, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
