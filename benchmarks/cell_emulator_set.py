"""Setting all 192 cells of the cell emulator through the driver, against one bare pyvisa write of
the same command text.

The emulator (24 simulated Bloomy ABS units and two NTC resistor modules on one bus,
simulators/cell_emulator.py) is served by `bench sim serve` in a separate process, as the bus's
serial device server would be, on ``TCPIP::127.0.0.1::PORT::SOCKET``. Two paths, each on its own
connection, in the same run:

* driver: ``await CellEmulatorDriver.set({...192 cell voltages...})`` (drivers/cell_emulator.py):
  the values checked, the text built, ONE write (a line per unit), then one query per unit that
  reads the settings back with the unit's error queue, the read-back compared and published;
* bare: ``inst.write(text)`` with exactly the text the driver wrote, on pyvisa-py: the floor of
  getting the settings onto the wire, with no read-back (a bare write does not wait for the
  instrument, so after each bare round one query waits for the bus to have taken everything,
  outside the timing).

The paths alternate between two sets of 192 distinct voltages, so every set changes every cell.
They run in rounds, in an order that rotates from round to round; a path's time is the median
of its rounds, and the ratio is the median over the rounds of driver / bare of the same round.
The run checks that every cell of the served instrument holds the last value set. No goal: the
figure says what the read-back of 24 units costs over putting the text on the wire.

    .venv/bin/python benchmarks/cell_emulator_set.py [--sets 20] [--rounds 15] [--smoke] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyvisa
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.device import DeviceContext  # noqa: E402
from benchmarks.scpi_roundtrip import start_server  # noqa: E402
from benchmarks.table import Row, add_arguments, emit  # noqa: E402
from drivers.cell_emulator import CellEmulatorDriver  # noqa: E402
from tests.ports import free_ports  # noqa: E402

UNITS = 24  # 192 cells


def write_stations(folder: Path, can_port: int, scpi_port: int) -> Path:
    """An in-process station with the emulator plant and a served one that points at it."""
    yaml = YAML(typ="safe")
    emulator = {"units": list(range(1, UNITS + 1)), "resistor_modules": [UNITS + 1, UNITS + 2]}
    ntc = {"model": "beta", "r25": "10 kohm", "beta": 3435}
    inproc = {
        "id": "cells-bench",
        "title": "Cell emulator alone",
        "simulated": True,
        "virtual_time": True,
        "devices": {
            "emu": {"driver": "cell_emulator", "config": {"transport": {"inproc": "cells"}, **emulator, "ntc": ntc}}
        },
        "simulators": [
            {"kind": "cell_emulator", "devices": ["emu"], "config": {"units": UNITS, "resistor_modules": 2}}
        ],
    }
    resource = f"TCPIP::127.0.0.1::{scpi_port}::SOCKET"
    served = {
        "id": "cells-bench-served",
        "title": "Cell emulator served",
        "simulated": True,
        "virtual_time": False,
        "devices": {
            "emu": {"driver": "cell_emulator", "config": {"transport": {"visa": resource}, **emulator, "ntc": ntc}}
        },
        "serve": {
            "simulators_from": str(folder / "inproc.yaml"),
            "host": "127.0.0.1",
            "can": {"port": can_port, "channels": ["bench0"]},
            "scpi": {"cells": scpi_port},
            "serial_dir": str(folder / "serial"),
        },
    }
    for name, station in (("inproc.yaml", inproc), ("served.yaml", served)):
        with (folder / name).open("w") as f:
            yaml.dump(station, f)
    return folder / "served.yaml"


def voltage_sets(driver: CellEmulatorDriver) -> list[dict[str, float]]:
    """Two sets of 192 distinct voltages: every set changes every cell."""
    return [
        {driver.cell_signal(k, "voltage_set"): round(3.0 + k / 1000 + offset, 4) for k in range(1, 8 * UNITS + 1)}
        for offset in (0.0, 0.5)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", type=int, default=20, help="sets of all 192 cells per path and round")
    ap.add_argument("--rounds", type=int, default=15)
    add_arguments(ap)
    args = ap.parse_args()
    if args.smoke:
        args.sets, args.rounds = 4, 3
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with tempfile.TemporaryDirectory() as tmp:
        can_port, scpi_port = free_ports(2)
        station = write_stations(Path(tmp), can_port, scpi_port)
        proc, resource = start_server(["--station", str(station)], "cells")
        try:
            times, text, held = measure(station, resource, args.sets, args.rounds)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    if held != 8 * UNITS:
        raise SystemExit(f"the served instrument holds the last set on {held} of {8 * UNITS} cells")

    def ratio() -> float:
        return statistics.median_low(a / b for a, b in zip(times["driver"], times["bare"], strict=True))

    median = ratio()
    ours, base = next((a, b) for a, b in zip(times["driver"], times["bare"], strict=True) if a / b == median)
    print(f"set all {8 * UNITS} cells of the emulator served by `bench sim serve` over {resource}")
    print(
        f"{args.sets} sets x {args.rounds} rounds per path, interleaved; one write of {len(text)} bytes, {UNITS} lines"
    )
    print()
    for name in ("driver", "bare"):
        med = statistics.median(times[name])
        spread = f"{min(times[name]) * 1e3:.2f}-{max(times[name]) * 1e3:.2f}"
        print(f"{name:8s} {med * 1e3:8.3f} ms/set   spread {spread} ms")
    print(f"\ndriver / bare write of the same text: {median:.2f} (the round of median ratio)")
    print(f"every one of the {held} cells holds the last value set")
    row = Row(
        "cell_emulator_set",
        f"set all {8 * UNITS} cells through the driver (one write, read back per unit)",
        ours * 1e3,
        base * 1e3,
        "ms/set",
        median,
        "driver set / one bare pyvisa write of the same text, the round of median ratio",
    )
    emit([row], args)


def measure(station: Path, resource: str, sets: int, rounds: int) -> tuple[dict[str, list[float]], str, int]:
    """(seconds per set of each path in each round, the text the driver wrote, cells holding the last set)."""
    from bench.plan import build_drivers
    from bench.station import load_station

    driver = build_drivers(load_station(station), ["emu"])["emu"]
    assert isinstance(driver, CellEmulatorDriver)
    rm = pyvisa.ResourceManager("@py")
    inst = rm.open_resource(resource, read_termination="\n", write_termination="\n", timeout=5000)
    assert isinstance(inst, pyvisa.resources.MessageBasedResource)
    written: list[str] = []
    times: dict[str, list[float]] = {"driver": [], "bare": []}
    values = voltage_sets(driver)
    with asyncio.Runner() as runner:
        loop = runner.get_loop()
        # No poll task: the run reads no measured signal (wanted is empty).
        ctx = DeviceContext(loop, lambda n, v, t: None, lambda m, tx: None, _fault, {}, wanted=set())
        runner.run(driver.connect(ctx))
        try:
            bus = driver._bus
            assert bus is not None
            original = bus.write

            async def spy(text: str) -> None:
                written.append(text)
                await original(text)

            bus.write = spy  # type: ignore[method-assign]
            runner.run(driver.set(values[0]))  # warm-up; also gives the text of a set
            texts = [written[-1]]
            runner.run(driver.set(values[1]))
            texts.append(written[-1])

            async def through_driver(n: int) -> float:
                t0 = time.perf_counter()
                for k in range(n):
                    await driver.set(values[k % 2])
                return (time.perf_counter() - t0) / n

            def bare(n: int) -> float:
                t0 = time.perf_counter()
                for k in range(n):
                    inst.write(texts[k % 2])
                elapsed = (time.perf_counter() - t0) / n
                inst.query("@1 *OPC?")  # the bus has taken every line before the next path runs
                return elapsed

            paths: dict[str, Any] = {"driver": lambda n: runner.run(through_driver(n)), "bare": bare}
            names = list(paths)
            for r in range(rounds):
                for name in names[r % 2 :] + names[: r % 2]:
                    times[name].append(paths[name](sets))
            runner.run(driver.set(values[1]))
            held = sum(
                abs(float(v) - values[1][driver.cell_signal(8 * u + c + 1, "voltage_set")]) < 1e-6
                for u in range(UNITS)
                for c, v in enumerate(inst.query(f"@{u + 1} SOUR:VOLT? (@1:8)").split(","))
            )
        finally:
            runner.run(driver.close())
            inst.close()
    return times, texts[0], held


def _fault(device: str, reason: str) -> None:
    raise SystemExit(f"{device}: {reason}")


if __name__ == "__main__":
    main()
