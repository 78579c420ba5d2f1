"""CPU cost of one DAQ poll of the default station: four simulated DAQ970A mainframes scanning
192 cell taps and 16 thermocouples (``READ?`` on each), and the driver parsing the four replies.

The engine polls the DAQ once a simulated second, so this cost is paid about 7000 times in the
overcharge sequence. The pack moves between polls so that every scan computes fresh values.
Baseline in the same run: the same mainframes with every cell tap a plain callable (one
``Pack.cell_voltage`` call per channel, as before the taps were read in one pass); both must
reply the same text. Process CPU time, not wall time: the figure holds on a loaded machine.

    .venv/bin/python benchmarks/daq_scan.py [--polls 2000] [--smoke] [--json FILE]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.table import Row, add_arguments, emit  # noqa: E402
from drivers.daq970a import _readings, scan_list  # noqa: E402
from simulators.daq import Daq970a, DaqSpec, Tap, pack_wiring  # noqa: E402
from simulators.pack import Pack, PackParams  # noqa: E402

SMOKE_POLLS = 50


def mainframes(pack: Pack, taps: bool) -> list[Daq970a]:
    """The default station's mainframes, wired as the bms_pack plant wires them (``taps``: the cells
    read in one pass), configured as the driver configures them."""

    def source(kind: str, index: int) -> Callable[[], float]:
        if kind == "cell":
            return Tap(pack.cell_voltages, index) if taps else lambda: pack.cell_voltage(index)
        return lambda: pack.sensor_temp(index)

    rng = random.Random(5)
    out = []
    for wiring in pack_wiring(pack.n, pack.p.temp_sensors):
        daq = Daq970a(
            DaqSpec(), {ch: source(k, i) for ch, (k, i) in wiring.items()}, random.Random(rng.getrandbits(64))
        )
        cells = [ch for ch, (kind, _) in wiring.items() if kind == "cell"]
        tcs = [ch for ch, (kind, _) in wiring.items() if kind == "tc"]
        daq.scpi("FORM:READ:CHAN ON")
        daq.scpi(f"CONF:VOLT:DC 10,{scan_list(cells)}")
        if tcs:
            daq.scpi(f"CONF:TEMP TC,K,{scan_list(tcs)}")
        daq.scpi(f"ROUT:SCAN {scan_list(cells + tcs)}")
        out.append(daq)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polls", type=int, default=2000)
    add_arguments(parser)
    args = parser.parse_args()
    if args.smoke:
        args.polls = SMOKE_POLLS
    per = 1e3 / args.polls
    replies: dict[bool, list[str]] = {}
    simulator_ms: dict[bool, float] = {}
    for taps in (False, True):
        pack = Pack(PackParams(), random.Random(1))
        pack.current_a = 60.0
        daqs = mainframes(pack, taps)
        out = replies[taps] = []
        t0 = time.process_time()
        for _ in range(args.polls):
            pack.s += 0.001
            out += [daq.scpi("READ?") or "" for daq in daqs]
        t1 = time.process_time()
        for reply in out:
            _readings(reply, "mainframe")
        t2 = time.process_time()
        simulator_ms[taps] = (t1 - t0) * per
        label = "taps read in one pass" if taps else "one call per channel (baseline)"
        print(f"{label}: simulator {(t1 - t0) * per:.3f} ms CPU per poll (4 mainframes, 208 channels),", end=" ")
        print(f"driver parse {(t2 - t1) * per:.3f} ms")
    if replies[True] != replies[False]:
        sys.exit("error: the two wirings read differently")
    ours, baseline = simulator_ms[True], simulator_ms[False]
    figure = "simulated DAQ poll, 4 mainframes, 208 channels (CPU)"
    row = Row("daq_scan", figure, ours, baseline, "ms/poll", ours / baseline, "ours / one call per cell tap")
    emit([row], args)


if __name__ == "__main__":
    main()
