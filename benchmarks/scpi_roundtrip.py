"""SCPI query round trip through the driver's base (drivers/scpi.py) against a bare pyvisa query.

All paths talk to the simulated supply served by `bench sim serve` (a separate process, as a LAN
instrument would be) over pyvisa-py's ``TCPIP::127.0.0.1::PORT::SOCKET``, each on its own
connection to the same instrument, in the same run, with the same query and count:

* bare: ``inst.query("MEAS:VOLT?")`` in a plain loop (blocking, no asyncio): the baseline;
* driver: ``await ScpiInstrument.query("MEAS:VOLT?")`` on an asyncio loop: the instrument's
  lock, the transport's lock, the query's I/O on the loop on the socket pyvisa-py opened
  (``loop.sock_sendall`` / ``loop.sock_recv``, timeout armed), the reply decoded and stripped;
* driver via worker thread: the same with ``native_socket=False``, the path of every resource
  kind other than a SOCKET (INSTR, ASRL, USB ...): the pyvisa call in the instrument's worker
  thread, two thread hops per query;
* pyvisa via ``asyncio.to_thread``, as pyvisa's asyncio users are told to (pyvisa issue 842),
  for reference: the floor of keeping a blocking library off the loop through the default executor.

The machine is shared and noisy, so the paths run in many short rounds; in every round each
path runs once, in an order that rotates from round to round, so a burst of load hits them
alike. A path's time is the median of its rounds; the overhead ratio is the median over the
rounds of driver / bare of the same round (the goal is <= 1.5).

    .venv/bin/python benchmarks/scpi_roundtrip.py [--queries 200] [--rounds 25] [--smoke] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyvisa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.table import Row, add_arguments, emit  # noqa: E402
from drivers.scpi import ScpiInstrument, VisaTransport  # noqa: E402

QUERY = "MEAS:VOLT?"
GOAL = 1.5  # driver / bare


def _free_offset() -> int:
    """A port offset that puts the served station's ports (29536, 5025, 5026) on free ports."""
    for offset in range(10000, 30000, 97):
        ok = True
        for port in (29536 + offset, 5025 + offset, 5026 + offset):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok and 29536 + offset < 65536:
            return offset
    raise RuntimeError("no free ports")


def start_server(serve_args: list[str], endpoint: str = "psu") -> tuple[subprocess.Popen[str], str]:
    """`bench sim serve SERVE_ARGS` in a process of its own, and the VISA resource of ``endpoint``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "sim", "serve", *serve_args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    resource = ""
    for line in proc.stdout:
        found = re.search(rf"scpi\s+{endpoint}\s+(TCPIP::\S+::SOCKET)", line)
        if found:
            resource = found.group(1)
        if line.startswith("ready"):
            return proc, resource
    raise RuntimeError("bench sim serve did not start")


def bare(inst: pyvisa.resources.MessageBasedResource, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        inst.query(QUERY)
    return (time.perf_counter() - t0) / n


async def driver(instr: ScpiInstrument, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        await instr.query(QUERY)
    return (time.perf_counter() - t0) / n


async def bare_to_thread(inst: pyvisa.resources.MessageBasedResource, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        await asyncio.to_thread(inst.query, QUERY)
    return (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=200, help="queries per path and round")
    ap.add_argument("--rounds", type=int, default=25)
    add_arguments(ap)
    args = ap.parse_args()
    if args.smoke:
        args.queries, args.rounds = 20, 5  # every path in every position of the rotation
    # SIGTERM (a timeout of make bench) ends the run through the finally below: the server is stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with tempfile.TemporaryDirectory() as tmp:
        proc, resource = start_server(["--port-offset", str(_free_offset()), "--serial-dir", tmp])
        try:
            rm = pyvisa.ResourceManager("@py")
            inst = rm.open_resource(resource, read_termination="\n", write_termination="\n", timeout=2000)
            assert isinstance(inst, pyvisa.resources.MessageBasedResource)
            native = ScpiInstrument("psu", VisaTransport("psu", resource, timeout=2.0))
            worker = ScpiInstrument("psu", VisaTransport("psu", resource, timeout=2.0, native_socket=False))
            with asyncio.Runner() as runner:
                paths: dict[str, Callable[[int], float]] = {
                    "bare pyvisa inst.query (blocking)": lambda n: bare(inst, n),
                    "driver ScpiInstrument.query (asyncio)": lambda n: runner.run(driver(native, n)),
                    "driver via worker thread (other resources)": lambda n: runner.run(driver(worker, n)),
                    "pyvisa via asyncio.to_thread (reference)": lambda n: runner.run(bare_to_thread(inst, n)),
                }
                names = list(paths)
                times: dict[str, list[float]] = {name: [] for name in names}
                # Warm-up: connections opened, worker threads started, code paths hot.
                for name in names:
                    paths[name](100)
                for r in range(args.rounds):
                    for name in names[r % len(names) :] + names[: r % len(names)]:
                        times[name].append(paths[name](args.queries))
                runner.run(native.transport.close())
                runner.run(worker.transport.close())
            inst.close()
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

    def ratio(name: str, base: str) -> float:
        # median_low: the ratio of one round (the median of an odd number of rounds).
        return statistics.median_low(a / b for a, b in zip(times[name], times[base], strict=True))

    print(f"SCPI '{QUERY}' round trip to `bench sim serve` over {resource}")
    print(f"{args.queries} queries x {args.rounds} rounds per path, interleaved; median of the rounds")
    print()
    print(f"{'path':44s} {'us/query':>9s} {'queries/s':>10s} {'spread (us)':>16s} {'/ bare':>7s}")
    bare_name, drv_name, wrk_name, thr_name = names
    for name in names:
        med = statistics.median(times[name])
        spread = f"{min(times[name]) * 1e6:.0f}-{max(times[name]) * 1e6:.0f}"
        print(f"{name:44s} {med * 1e6:9.1f} {1 / med:10.0f} {spread:>16s} {ratio(name, bare_name):7.2f}")
    print()
    print(f"overhead ratio driver / bare: {ratio(drv_name, bare_name):.2f} (goal <= {GOAL:g})")
    print(f"worker-thread path / bare: {ratio(wrk_name, bare_name):.2f}")
    print(f"driver / pyvisa via asyncio.to_thread: {ratio(drv_name, thr_name):.2f}")
    rows = []
    for name, figure, goal in (
        (drv_name, "SCPI query through the driver (asyncio, socket on the loop)", f"<= {GOAL:g}"),
        (wrk_name, "SCPI query through the driver's worker thread (other resources)", ""),
    ):
        # The times of the round whose ratio is the median: the row's ratio is its own ours / baseline.
        median = ratio(name, bare_name)
        ours, base = next((a, b) for a, b in zip(times[name], times[bare_name], strict=True) if a / b == median)
        met = median <= GOAL if goal else None
        means = "ours / bare pyvisa query, the round of median ratio"
        rows.append(Row("scpi_roundtrip", figure, ours * 1e6, base * 1e6, "us/query", median, means, goal, met))
    emit(rows, args)


if __name__ == "__main__":
    main()
