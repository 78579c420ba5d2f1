"""SCPI query round trip through the driver's base (drivers/scpi.py) against a bare pyvisa query.

Both talk to the simulated supply served by `bench sim serve` (a separate process, as a LAN
instrument would be) over pyvisa-py's ``TCPIP::127.0.0.1::PORT::SOCKET``, on two connections
of the same instrument, in the same run, interleaved:

* bare: ``inst.query("MEAS:VOLT?")`` in a plain loop (blocking, no asyncio);
* driver: ``await ScpiInstrument.query("MEAS:VOLT?")`` on an asyncio loop: the instrument's
  lock, a worker thread per call (``asyncio.to_thread``), the transport's own thread lock, the
  same pyvisa call, then the reply stripped.

For reference, a third row does the bare query the way pyvisa's asyncio users are told to
(``await asyncio.to_thread(inst.query, ...)``, pyvisa issue 842): the floor of any driver that
keeps a blocking library off the event loop through the default executor.

The overhead ratio is median(driver) / median(bare) over the repeats; the goal is <= 1.5.

    .venv/bin/python benchmarks/scpi_roundtrip.py [--queries 1000] [--repeats 5]
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
from pathlib import Path

import pyvisa

from drivers.scpi import ScpiInstrument, VisaTransport

ROOT = Path(__file__).resolve().parent.parent
QUERY = "MEAS:VOLT?"


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


def start_server(serial_dir: str) -> tuple[subprocess.Popen[str], str]:
    offset = _free_offset()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "sim", "serve", "--port-offset", str(offset), "--serial-dir", serial_dir],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    resource = ""
    for line in proc.stdout:
        found = re.search(r"scpi\s+psu\s+(TCPIP::\S+::SOCKET)", line)
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
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, resource = start_server(tmp)
        try:
            rm = pyvisa.ResourceManager("@py")
            inst = rm.open_resource(resource, read_termination="\n", write_termination="\n", timeout=2000)
            assert isinstance(inst, pyvisa.resources.MessageBasedResource)
            instr = ScpiInstrument("psu", VisaTransport("psu", resource, timeout=2.0))
            bare_s: list[float] = []
            drv_s: list[float] = []
            thr_s: list[float] = []
            with asyncio.Runner() as runner:
                # Warm-up: connections opened, worker thread started, code paths hot.
                bare(inst, 50)
                runner.run(driver(instr, 50))
                runner.run(bare_to_thread(inst, 50))
                for _ in range(args.repeats):
                    bare_s.append(bare(inst, args.queries))
                    drv_s.append(runner.run(driver(instr, args.queries)))
                    thr_s.append(runner.run(bare_to_thread(inst, args.queries)))
                runner.run(instr.transport.close())
            inst.close()
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    b, d = statistics.median(bare_s), statistics.median(drv_s)
    print(f"SCPI '{QUERY}' round trip to `bench sim serve` over {resource}")
    print(f"{args.queries} queries x {args.repeats} repeats, interleaved; median of the repeats")
    print()
    print(f"{'path':44s} {'us/query':>9s} {'queries/s':>10s} {'spread (us)':>16s}")
    rows = (
        ("bare pyvisa inst.query (blocking)", bare_s),
        ("driver ScpiInstrument.query (asyncio)", drv_s),
        ("pyvisa via asyncio.to_thread (reference)", thr_s),
    )
    for name, runs in rows:
        med = statistics.median(runs)
        spread = f"{min(runs) * 1e6:.0f}-{max(runs) * 1e6:.0f}"
        print(f"{name:44s} {med * 1e6:9.1f} {1 / med:10.0f} {spread:>16s}")
    print()
    print(f"overhead ratio driver / bare: {d / b:.2f} (goal <= 1.5)")
    print(f"driver / pyvisa via asyncio.to_thread: {d / statistics.median(thr_s):.2f}")


if __name__ == "__main__":
    main()
