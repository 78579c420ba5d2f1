"""Report and archive time: the reference run, and one hour of full CAN traffic.

    .venv/bin/python benchmarks/report_archive.py [--minutes 60] [--rate 4000] [--baseline 100000]
        [--smoke] [--json FILE]

1. Runs ``sequences/r100/overcharge.yaml`` on the simulated station (2 h simulated) through the
   CLI and times, on its record: BLF -> MF4, the HTML report with plots, the PDF.
2. Writes ``--minutes`` of saturated 500 kbit/s traffic (``--rate`` frames/s of bms.dbc
   messages, 8-byte classic frames) through python-can's ``BLFWriter`` (the live path), converts
   it to MF4 with ``bench.record.mf4.blf_to_mf4`` and measures the rate against python-can's
   ``MF4Writer`` on the first ``--baseline`` frames of the same traffic (it is ~60 x slower, so the
   whole hour would take many minutes), then decodes the MF4 with asammdf and renders the report
   of the reference run with that hour of traffic as its archive.

Numbers are wall-clock times of one pass on a noisy shared machine; expect +-20 %.

--smoke: the short lab sequence (tests/lab/short.yaml, 1 s hold) instead of the 2 h reference
run (its PDF rendered by the step that times it, not by `bench run` too), 3 s of traffic and 2000
frames of baseline; the same steps.

Measured 2026-11-27 (2-core VM, CPython 3.11, load ~2 from other jobs):

    reference run: `bench run` 20.1 s process start to exit (engine 14.8 s of it);
        BLF -> MF4 0.57 s, HTML report with plots 1.41 s, PDF 1.72 s (378 646 frames)
    60 min at 4000 frames/s: BLFWriter 14.4 M frames in 45.5 s (316 k/s incl. Message creation)
        BLF -> MF4 11.7 s = 1 230 k frames/s (MF4 2.4 MB, BLF 106 MB)
        python-can MF4Writer, 100 k frames: 7.7 k frames/s -> ratio 159 x (goal >= 10 x)
        asammdf extract_bus_logging of the hour: 20.4 s
        report of a run with that archive: HTML with plots 6.1 s, PDF 1.6 s
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.table import Row, add_arguments, emit  # noqa: E402

REFERENCE = ROOT / "sequences/r100/overcharge.yaml"
SMOKE_SEQUENCE = ROOT / "tests/lab/short.yaml"
GOAL = 10.0  # BLF -> MF4 against python-can's MF4Writer


def _run_reference(tmp: Path, sequence: Path, params: list[str], pdf: bool) -> tuple[Path, float]:
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cli", "run", str(sequence), *params, "--reports", str(tmp), "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        # Its own station lock and interlock: a run of the developer's on the same station is not refused.
        env={
            **os.environ,
            "BENCH_KEY_DIR": str(tmp / "nokey"),
            "BENCH_STATE_DIR": str(tmp / "state"),
            **({} if pdf else {"BENCH_REPORT_PDF": "0"}),
        },
    )
    wall = time.perf_counter() - t
    folders = [
        line.removeprefix("run folder: ") for line in proc.stdout.splitlines() if line.startswith("run folder: ")
    ]
    if not folders:
        last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        sys.exit(f"error: `bench run {sequence.name}` wrote no run folder (exit {proc.returncode}): {last}")
    folder = folders[0]
    print(proc.stdout.strip().splitlines()[-2])
    return Path(folder), wall


def _traffic(path: Path, minutes: float, rate: int) -> tuple[int, float]:
    import can
    import cantools

    db = cantools.database.load_file(str(ROOT / "dbc/bms.dbc"))
    assert isinstance(db, cantools.database.can.Database)
    frames = []
    for m in db.messages:
        buf = bytearray(m.length)
        for i in range(len(buf)):
            buf[i] = (m.frame_id * 7 + i * 13) & 0xFF
        frames.append((m.frame_id, bytes(buf)))
    n = int(minutes * 60 * rate)
    t = time.perf_counter()
    w = can.BLFWriter(str(path))
    t0 = 1_700_000_000.0
    dt = 1.0 / rate
    for i in range(n):
        fid, data = frames[i % len(frames)]
        # A counter in the last byte: traffic that changes, like a real bus (and compresses like one).
        payload = data[:7] + bytes([i & 0xFF])
        w.on_message_received(
            can.Message(timestamp=t0 + i * dt, arbitration_id=fid, data=payload, is_extended_id=False, channel=0)
        )
    w.stop()
    return n, time.perf_counter() - t


def _baseline(blf: Path, count: int, target: Path) -> float:
    import can

    msgs = []
    with can.BLFReader(str(blf)) as r:
        for m in r:
            msgs.append(m)
            if len(msgs) >= count:
                break
    t = time.perf_counter()
    w = can.MF4Writer(str(target), database=str(ROOT / "dbc/bms.dbc"))
    for m in msgs:
        w.on_message_received(m)
    w.stop()
    return len(msgs) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--rate", type=int, default=4000, help="frames/s (500 kbit/s saturated, 8-byte frames: ~4000)")
    ap.add_argument("--baseline", type=int, default=100_000, help="frames for python-can's MF4Writer")
    add_arguments(ap)
    args = ap.parse_args()
    sequence, params = REFERENCE, []
    if args.smoke:
        args.minutes, args.baseline = 0.05, 2000
        sequence, params = SMOKE_SEQUENCE, ["-p", "hold=1 s"]
    # Before python-can: the bench switches python-can's MF4 back-end off unless asammdf is already
    # imported (bench/__init__.py), and python-can's MF4Writer is the baseline here.
    import asammdf  # noqa: F401

    from bench.record.mf4 import blf_to_mf4, read_blf
    from bench.report.render import build_html, write_pdf

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        title = "R100 overcharge, 2 h simulated" if sequence == REFERENCE else f"{sequence.name} (smoke)"
        print(f"== reference run: {title} ==")
        # The smoke run's own PDF is left to the step below that times it.
        run, wall = _run_reference(tmp / "reports", sequence, params, pdf=not args.smoke)
        frames = len(read_blf(run / "can.blf"))
        t = time.perf_counter()
        blf_to_mf4(run / "can.blf", tmp / "ref.mf4", [run / "inputs/bms.dbc"])
        mf4_s = time.perf_counter() - t
        t = time.perf_counter()
        text = build_html(run)
        html_s = time.perf_counter() - t
        t = time.perf_counter()
        write_pdf(text, tmp / "ref.pdf")
        pdf_s = time.perf_counter() - t
        print(f"whole `bench run` (process start to exit): {wall:.2f} s, {frames} frames")
        print(f"  BLF -> MF4 {mf4_s:.2f} s | HTML report with plots {html_s:.2f} s | PDF {pdf_s:.2f} s")

        print(f"== {args.minutes:g} min of full CAN traffic at {args.rate} frames/s ==")
        blf = tmp / "full.blf"
        n, gen_s = _traffic(blf, args.minutes, args.rate)
        print(
            f"live path, python-can BLFWriter: {n} frames in {gen_s:.1f} s ({n / gen_s / 1e3:.0f} k frames/s, incl. Message creation)"
        )
        t = time.perf_counter()
        written = blf_to_mf4(blf, tmp / "full.mf4", [ROOT / "dbc/bms.dbc"])
        conv_s = time.perf_counter() - t
        ours = written / conv_s
        base = _baseline(blf, args.baseline, tmp / "baseline.mf4")
        print(
            f"BLF -> MF4 (bench.record.mf4): {written} frames in {conv_s:.1f} s = {ours / 1e3:.0f} k frames/s; "
            f"MF4 {(tmp / 'full.mf4').stat().st_size / 1e6:.1f} MB, BLF {blf.stat().st_size / 1e6:.1f} MB"
        )
        print(
            f"python-can MF4Writer ({args.baseline} frames): {base / 1e3:.1f} k frames/s -> ratio {ours / base:.0f} x (goal >= 10 x)"
        )
        from asammdf import MDF

        t = time.perf_counter()
        with MDF(str(tmp / "full.mf4")) as mdf:
            dec = mdf.extract_bus_logging(database_files={"CAN": [(str(ROOT / "dbc/bms.dbc"), 0)]})
            dec.close()
        print(f"asammdf extract_bus_logging of the {args.minutes:g} min: {time.perf_counter() - t:.1f} s")
        # The reference run's report again, with the hour of traffic as its raw record to plot from.
        shutil.copyfile(blf, run / "can.blf")
        shutil.copyfile(tmp / "full.mf4", run / "can.mf4")
        t = time.perf_counter()
        text = build_html(run)
        html_s = time.perf_counter() - t
        t = time.perf_counter()
        write_pdf(text, tmp / "full.pdf")
        print(f"report of a run with that archive: HTML with plots {html_s:.1f} s, PDF {time.perf_counter() - t:.1f} s")
        figure = f"BLF -> MF4 archive ({args.rate} frames/s of bms.dbc traffic)"
        means = "ours / python-can MF4Writer"
        emit(
            [
                Row(
                    "report_archive",
                    figure,
                    ours / 1e3,
                    base / 1e3,
                    "k frames/s",
                    ours / base,
                    means,
                    f">= {GOAL:g}",
                    ours / base >= GOAL,
                )
            ],
            args,
        )


if __name__ == "__main__":
    main()
