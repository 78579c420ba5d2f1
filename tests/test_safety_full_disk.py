"""A full disk never skips the safe state (issue: the event log's ENOSPC escaped the cleanup).

The safe state does not depend on any write succeeding: it is commanded and read back first,
recorded where possible, and the run ends ERROR naming the write failure (exit 3), one line on
stderr, no traceback. Two ways of filling the disk: a fault-injected event log (fast, in
process) and a real small file system as ``--reports``.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.plan import build_plan
from bench.record.chain import EventLog
from bench.result import Verdict
from bench.runner import Started, run_plan
from tests.conftest import ROOT, SIM_STATION

# Supply on, no cleanup steps: only the station's safe state can turn it off again. The display
# signals are recorded every 100 ms, so a long hold fills a small disk while the supply is on.
SUPPLY_ON_NO_CLEANUP = """\
id: TEST-SUPPLY-ON-NO-CLEANUP
title: supply on, a long hold, no cleanup steps
version: 1.0.0
basis: {standard: test, clause: full disk}
requires: [psu, bms]
parameters:
  hold: 1 h
display: [psu.voltage, psu.current, psu.output, bms.contactors, bms.cell_v_max]
record_interval: 100 ms
steps:
  - name: supply on
    set: {psu.voltage_set: 100 V, psu.current_set: 1 A, psu.output: ON}
  - name: output voltage up
    wait_until: psu.voltage > 90 V
    timeout: 5 s
  - name: hold
    wait: $hold
"""


@pytest.fixture
def sequence(tmp_path: Path) -> Path:
    path = tmp_path / "supply_on_no_cleanup.yaml"
    path.write_text(SUPPLY_ON_NO_CLEANUP)
    return path


def _psu_safe(readback: list[Any]) -> bool:
    return any(s.device == "psu" and s.safe and "psu.output = OFF" in s.detail for s in readback)


@pytest.mark.parametrize("failing_from", ["cleanup_started", "step_started"])
def test_event_log_full_still_commands_and_reads_back_the_safe_state(
    tmp_path: Path, sequence: Path, monkeypatch: pytest.MonkeyPatch, failing_from: str
) -> None:
    real_append = EventLog.append_fields
    full: list[bool] = []

    # Every line of the log goes through append_fields (append passes its fields on to it).
    def append_fields(self: EventLog, kind: str, t: float, fields: dict[str, Any]) -> str:
        if kind == failing_from:
            full.append(True)
        if full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_append(self, kind, t, fields)

    monkeypatch.setattr(EventLog, "append_fields", append_fields)
    started: list[Started] = []
    plan = build_plan(sequence, SIM_STATION, {"hold": "2 min"})
    result = run_plan(plan, tmp_path / "reports", full_report=False, on_started=started.append)
    assert full, "the fault was never injected"
    assert result.verdict == Verdict.ERROR
    assert "record could not be written" in result.reason and "No space left on device" in result.reason
    assert _psu_safe(result.safe_state), result.safe_state
    assert not result.unsafe_end
    if failing_from == "step_started":
        # The steps were stopped when the record failed: the hour of holding was not held.
        outcomes = {s.name: s.outcome.value for s in result.steps if s.phase == "steps"}
        assert outcomes.get("hold") != "PASS" and result.sim_duration_s < 60, (outcomes, result.sim_duration_s)
    engine = started[0].run
    assert {s.device for s in engine.safe_readbacks} == {"psu", "bms"}
    # Devices were closed and the plants stopped: nothing of the in-process rig is left running.
    assert engine.state.phase == "done"
    assert engine.rec is not None and engine.rec.write_error is not None
    assert engine.rec.events_lost > 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: room for the inputs and the recorder's reserve, not for an hour of snapshots."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot make a small file system")
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_full_disk_as_reports_folder_ends_with_the_supply_off(small_disk: Path, sequence: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cli", "run", str(sequence), "--reports", str(small_disk), "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    out, err = proc.stdout, proc.stderr
    assert proc.returncode == 3, out + err
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "record could not be written" in lines[0] and "No space left" in lines[0], err
    # The summary on the console: the safe state was commanded and read back on both devices.
    assert re.search(r"safe state read back: (psu safe, bms safe|bms safe, psu safe)\n", out), out
    # The steps were stopped when the record failed, not an hour of holding later.
    assert "simulated 1:00:00" not in out, out
    assert "ERROR" in out and "record could not be written" in out
    # The space the recorder set aside at the start holds the end of the record: the failure,
    # the safe-state read-back, the result and the manifest, on a disk that is otherwise full.
    (run_dir,) = [p for p in small_disk.iterdir() if p.is_dir()]
    text = (run_dir / "events.jsonl").read_bytes()
    assert text.endswith(b"\n"), "a torn last line"
    events = [json.loads(line) for line in text.splitlines()]
    kinds = [e["kind"] for e in events]
    assert "record_write_failed" in kinds and "No space left" in events[kinds.index("record_write_failed")]["error"]
    safe = {e["device"]: (e["safe"], e["values"]) for e in events if e["kind"] == "safe_state"}
    assert safe["psu"][0] is True and safe["psu"][1]["psu.output"] == "OFF", safe
    assert safe["bms"][0] is True, safe
    ended = events[-1]
    assert ended["kind"] == "run_ended" and ended["verdict"] == "ERROR" and ended["events_lost"] >= 0
    result = json.loads((run_dir / "result.json").read_text())
    assert result["verdict"] == "ERROR" and "No space left" in result["record_error"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert "No space left" in manifest["record_error"] and manifest["verdict"] == "ERROR"
    assert not (run_dir / ".reserve").exists()


def test_disk_too_full_to_begin_the_record_refuses_the_run(tmp_path: Path) -> None:
    mount = tmp_path / "tiny-disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24k", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.strip()}")
    try:
        supply_on = ROOT / "tests" / "sequences" / "supply_on.yaml"
        proc = subprocess.run(
            [sys.executable, "-m", "bench.cli", "run", str(supply_on), "--reports", str(mount), "-q"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        subprocess.run(["umount", str(mount)], check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr and "internal error" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0] and "nothing was run" in lines[0], proc.stderr


def test_a_manifest_that_cannot_be_written_ends_error_not_an_internal_error(
    tmp_path: Path, sequence: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first failed write can be the manifest itself, after the event log was closed."""
    import bench.runrecord

    def full(*args: Any, **kwargs: Any) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bench.runrecord, "write_manifest", full)
    plan = build_plan(sequence, SIM_STATION, {"hold": "1 s"})
    result = run_plan(plan, tmp_path / "reports", full_report=False)
    assert result.verdict == Verdict.ERROR
    assert "record could not be written: manifest.json" in result.reason, result.reason
    assert _psu_safe(result.safe_state), result.safe_state
