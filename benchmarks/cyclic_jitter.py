"""Cyclic TX jitter at a 10 ms period while the process decodes a fully loaded bus.

Two senders, measured in the same run under the same load:
* python-can's ``bus.send_periodic`` (one thread per task, default GIL switch interval);
* our ``drivers.cyclic_tx.CyclicSender`` (one thread, absolute deadlines, 0.5 ms switch interval).

The load is the engine's receive path: a thread feeds BMS frames (the DBC's messages) to a
cantools decoder and the signal bus as fast as it can, as a saturated bus would. The deviation
is |interval - 10 ms| between consecutive frames, from the bus's own send timestamps.

    .venv/bin/python benchmarks/cyclic_jitter.py [--seconds 5] [--repeats 3] [--smoke] [--json FILE]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import threading
import time
from pathlib import Path

import can
import cantools

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.expr import SignalInfo  # noqa: E402
from bench.signals import SignalBus  # noqa: E402
from bench.units import parse_unit  # noqa: E402
from benchmarks.table import Row, add_arguments, emit  # noqa: E402
from drivers.cyclic_tx import CyclicSender  # noqa: E402

PERIOD = 0.010
SMOKE_SECONDS = 0.5  # 50 periods per sender: enough for a p99, in a second or two


def load(stop: threading.Event, counter: list[int]) -> None:
    db = cantools.database.load_file(str(ROOT / "dbc" / "bms.dbc"))
    assert isinstance(db, cantools.database.can.Database)
    msgs = [m for m in db.messages if "BMS" in m.senders and not m.is_multiplexed()]
    frames = [(m, m.encode({s.name: (s.minimum or 0) for s in m.signals}, strict=False)) for m in msgs]
    bus = SignalBus({f"bms.{s.name}": SignalInfo(f"bms.{s.name}", parse_unit("")) for m in msgs for s in m.signals})
    i = 0
    while not stop.is_set():
        m, data = frames[i % len(frames)]
        # A plain frame decodes to a dict of numbers (decode_choices=False); the stubs allow more.
        for name, value in m.decode(data, decode_choices=False).items():  # type: ignore[union-attr]
            bus.publish("bms." + name, float(value), 0.0)  # type: ignore[arg-type]
        i += 1
    counter.append(i)


def measure(kind: str, seconds: float) -> tuple[list[float], float]:
    channel = f"jitter-{kind}-{time.perf_counter_ns()}"
    tx = can.Bus(interface="virtual", channel=channel)
    rx = can.Bus(interface="virtual", channel=channel)
    stop_load = threading.Event()
    counter: list[int] = []
    loader = threading.Thread(target=load, args=(stop_load, counter))
    loader.start()
    msg = can.Message(arbitration_id=0x200, data=bytes(8), is_extended_id=False)
    stamps: list[float] = []
    end = time.perf_counter() + seconds
    if kind == "send_periodic":
        task = tx.send_periodic(msg, PERIOD)
    else:
        sender = CyclicSender(tx, on_error=lambda e: None)
        sender.add(PERIOD, lambda: msg)
        sender.start()
    while time.perf_counter() < end:
        got = rx.recv(timeout=0.1)
        if got is not None:
            stamps.append(got.timestamp)
    if kind == "send_periodic":
        task.stop()
    else:
        sender.stop()
    stop_load.set()
    loader.join()
    tx.shutdown()
    rx.shutdown()
    devs = [abs((b - a) - PERIOD) * 1e3 for a, b in itertools.pairwise(stamps)]
    return devs, counter[0] / seconds


def p99(values: list[float]) -> float:
    # Inclusive: a short run's p99 stays within its samples (never above the max).
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    add_arguments(parser)
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.repeats = SMOKE_SECONDS, 1
    rows_by_kind: dict[str, list[tuple[float, float, float, float]]] = {"send_periodic": [], "CyclicSender": []}
    for _ in range(args.repeats):
        for kind in rows_by_kind:
            devs, rate = measure(kind, args.seconds)
            rows_by_kind[kind].append((statistics.fmean(devs), p99(devs), max(devs), rate))
            sys.setswitchinterval(0.005)  # each sender starts from the interpreter's default
    print(f"10 ms cyclic TX under a decode load, {args.seconds:g} s x {args.repeats}, median of runs")
    print(f"{'sender':16s} {'mean dev':>9s} {'p99 dev':>9s} {'max dev':>9s} {'load frames/s':>14s}")
    for kind, runs in rows_by_kind.items():
        med = [statistics.median(col) for col in zip(*runs, strict=True)]
        print(f"{kind:16s} {med[0]:7.3f}ms {med[1]:7.3f}ms {med[2]:7.3f}ms {med[3]:14.0f}")
    ratio = statistics.median(r[1] for r in rows_by_kind["send_periodic"]) / statistics.median(
        r[1] for r in rows_by_kind["CyclicSender"]
    )
    print(f"p99 ratio send_periodic / CyclicSender: {ratio:.1f}")
    rows = []
    for column, figure in ((1, "p99"), (2, "max")):
        ours = statistics.median(r[column] for r in rows_by_kind["CyclicSender"])
        baseline = statistics.median(r[column] for r in rows_by_kind["send_periodic"])
        rows.append(
            Row(
                "cyclic_jitter",
                f"10 ms cyclic TX under a decode load, {figure} deviation from the period",
                ours,
                baseline,
                "ms",
                baseline / ours,
                "python-can send_periodic / ours",
            )
        )
    emit(rows, args)


if __name__ == "__main__":
    main()
