"""A second SIGINT or SIGTERM ends `bench run` promptly in every stage, the record stage too.

The record and report are written after the safe state was commanded and read back. That work
is synchronous (a long report takes seconds), so the event loop's signal handlers cannot run
during it; a second stop signal there must still end the process at once (exit 4), leaving the
record unsealed but the rig safe.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, start_bench

STEPS = 400  # many rows in the report

# The renderer of the 17025 HTML made slow in the bench process (a real one is fast, and its PDF
# comes after the seal): the record stage then lasts long enough to be signalled in. It says when
# it starts, so that the test signals inside the record stage however loaded the machine is.
RENDERING = "slow renderer: rendering the report"
SLOW_RENDERER = f"""\
import time
import bench.report.render as render

_build_html = render.build_html


def slow_build_html(*args, **kwargs):
    print({RENDERING!r}, flush=True)
    time.sleep(20)
    return _build_html(*args, **kwargs)


render.build_html = slow_build_html
"""


def long_report_sequence(path: Path) -> Path:
    head = """\
id: TEST-LONG-RECORD-STAGE
title: supply on, many checks, a long report to write
version: 1.0.0
basis: {standard: test, clause: record stage}
requires: [psu, bms]
steps:
  - name: supply on
    set: {psu.voltage_set: 100 V, psu.current_set: 1 A, psu.output: ON}
  - name: output voltage up
    wait_until: psu.voltage > 90 V
    timeout: 5 s
"""
    checks = "".join(f"  - name: contactors still open {i}\n    check: bms.contactors == OPEN\n" for i in range(STEPS))
    path.write_text(head + checks)
    return path


def start(*args: str | Path, pdf: bool) -> subprocess.Popen[str]:
    return start_bench("run", *args, env={"BENCH_REPORT_PDF": "1" if pdf else "0"})


def signal_twice(
    proc: subprocess.Popen[str],
    ready: Callable[[list[str]], bool],
    settle: float,
    second: signal.Signals,
    gap: float,
    first: signal.Signals = signal.SIGINT,
) -> tuple[str, str, float]:
    """Read the run's output until ``ready(lines so far)``, wait ``settle``, send ``first``, wait
    ``gap``, send ``second``. Returns all of stdout, stderr, and the seconds from the second
    signal to the end of the process."""
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if ready(seen):
                break
        else:
            pytest.fail("the run ended before the point where the test signals it: " + "".join(seen))
        time.sleep(settle)
        assert proc.poll() is None, "the run was over before the first signal"
        proc.send_signal(first)
        time.sleep(gap)
        proc.send_signal(second)
        sent = time.monotonic()
        rest, err = proc.communicate(timeout=60)
        return "".join(seen) + rest, err, time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def events_of(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM], ids=["sigint-sigint", "sigint-sigterm"])
def test_second_signal_while_the_record_is_written_ends_at_once(tmp_path: Path, second: signal.Signals) -> None:
    sequence = long_report_sequence(tmp_path / "long_record_stage.yaml")
    reports = tmp_path / "reports"
    slow = tmp_path / "slow_renderer"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(SLOW_RENDERER)
    path = os.pathsep.join(filter(None, [str(slow), os.environ.get("PYTHONPATH")]))
    proc = start_bench("run", sequence, "--reports", reports, env={"BENCH_REPORT_PDF": "1", "PYTHONPATH": path})

    def rendering(seen: list[str]) -> bool:
        return RENDERING in seen[-1]

    # Inside the record stage, which takes 20 s here (after the safe state: the test below checks).
    out, err, took = signal_twice(proc, rendering, 0.5, second, gap=0.3)
    assert proc.returncode == 4, out + err
    assert took < 3.0, f"the process took {took:.1f} s to end after the second signal"
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "while the record was being written" in lines[0], err
    (run,) = [p for p in reports.iterdir() if p.is_dir()]
    # Cut short in the record stage: never sealed, and the safe state is in the record before it.
    assert not (run / "manifest.json").exists()
    safe = {e["device"]: e["safe"] for e in events_of(run) if e["kind"] == "safe_state"}
    assert safe == {"psu": True, "bms": True}, safe


def test_second_sigterm_is_an_emergency_stop(tmp_path: Path) -> None:
    # A SIGTERM counts like a SIGINT: the second one, here landing in the cleanup's discharge
    # wait, is an emergency stop that cuts the cleanup short.
    supply_on = ROOT / "tests" / "sequences" / "supply_on.yaml"
    proc = start(supply_on, "--reports", tmp_path, "--realtime", pdf=False)
    out, err, took = signal_twice(
        proc, lambda seen: "hold: wait" in seen[-1], 0.3, signal.SIGTERM, gap=0.5, first=signal.SIGTERM
    )
    assert proc.returncode == 4, out + err
    # The emergency_stop event below proves the cut; the clock only guards against a hang (a loaded
    # 2-core machine has taken 6.5 s to write the record and end).
    assert took < 12.0, f"{took:.1f} s after the second SIGTERM"
    assert "Traceback" not in out + err
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    events = events_of(run)
    estops = [e for e in events if e["kind"] == "emergency_stop"]
    assert estops and "second SIGTERM" in estops[0]["reason"], [e["kind"] for e in events]
    safe = {e["device"]: e["safe"] for e in events if e["kind"] == "safe_state"}
    assert safe == {"psu": True, "bms": True}, safe
    assert (run / "manifest.json").is_file()


FINALIZER_SCRIPT = """
import os, signal, time
from bench.stopping import StopLevels

class Finalised:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)  # the second signal lands in a finalizer: Python drops its exception
        time.sleep(0.05)

levels = StopLevels(None, None)
with levels.signals_while_recording():
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.05)
    obj = Finalised()
    del obj
    time.sleep(10)  # the rest of a long record stage
print("the record stage went on")
"""


def test_a_second_signal_whose_exception_a_finalizer_drops_still_ends_the_process() -> None:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", FINALIZER_SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    took = time.monotonic() - started
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "the record stage went on" not in proc.stdout
    assert took < 8.0, f"{took:.1f} s"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("emergency stop: SIGINT while the record"), proc.stderr
