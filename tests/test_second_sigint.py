"""A second SIGINT or SIGTERM ends `bench run` promptly in every stage, the record stage too.

The record and report are written after the safe state was commanded and read back. That work
is synchronous (a long PDF takes many seconds), so the event loop's signal handlers cannot run
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
from pathlib import Path

import pytest

from tests.conftest import ROOT

STEPS = 400  # enough rows that the report and its PDF take many seconds to write


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


def start(sequence: Path, reports: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "run", str(sequence), "--reports", str(reports)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", "BENCH_REPORT_PDF": "1"},
    )


@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM], ids=["sigint-sigint", "sigint-sigterm"])
def test_second_signal_while_the_record_is_written_ends_at_once(tmp_path: Path, second: signal.Signals) -> None:
    pytest.importorskip("weasyprint", reason="the long record stage is the PDF rendering")
    sequence = long_report_sequence(tmp_path / "long_record_stage.yaml")
    reports = tmp_path / "reports"
    proc = start(sequence, reports)
    assert proc.stdout is not None
    seen: list[str] = []
    safe_lines = 0
    try:
        for line in proc.stdout:
            seen.append(line)
            if "safe state psu: safe" in line or "safe state bms: safe" in line:
                safe_lines += 1
                if safe_lines == 2:
                    break
        else:
            pytest.fail("the run ended before its safe state: " + "".join(seen))
        time.sleep(1.0)  # well inside the record stage, which takes many seconds here
        assert proc.poll() is None, "the record stage was too short for this test"
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(second)
        sent = time.monotonic()
        rest, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(seen) + rest
    assert proc.returncode == 4, out + err
    assert took < 3.0, f"the process took {took:.1f} s to end after the second signal"
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "while the record was being written" in lines[0], err
    (run,) = [p for p in reports.iterdir() if p.is_dir()]
    # Cut short in the record stage: never sealed, and the safe state is in the record before it.
    assert not (run / "manifest.json").exists()
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    safe = {e["device"]: e["safe"] for e in events if e["kind"] == "safe_state"}
    assert safe == {"psu": True, "bms": True}, safe


def test_second_sigterm_is_an_emergency_stop(tmp_path: Path) -> None:
    # A SIGTERM counts like a SIGINT: the second one, here landing in the cleanup's discharge
    # wait, is an emergency stop that cuts the cleanup short.
    supply_on = ROOT / "tests" / "sequences" / "supply_on.yaml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "run", str(supply_on), "--reports", str(tmp_path), "--realtime"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", "BENCH_REPORT_PDF": "0"},
    )
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if "hold: wait" in line:
                break
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        rest, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(seen) + rest
    assert proc.returncode == 4, out + err
    assert took < 5.0, f"{took:.1f} s after the second SIGTERM"
    assert "Traceback" not in out + err
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    estops = [e for e in events if e["kind"] == "emergency_stop"]
    assert estops and "second SIGTERM" in estops[0]["reason"], [e["kind"] for e in events]
    safe = {e["device"]: e["safe"] for e in events if e["kind"] == "safe_state"}
    assert safe == {"psu": True, "bms": True}, safe
    assert (run / "manifest.json").is_file()
