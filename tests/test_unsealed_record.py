"""A run that never sealed its record (killed, crashed, power lost) is evidence, not garbage.

``bench verify`` checks the hash chain that is there and says how far it holds; a last line cut
off by the kill is a torn write, not tampering; ``bench report render`` renders the run as
INCOMPLETE. The real case is a ``bench run`` subprocess killed with SIGKILL mid-step; the crafted
folders cover the torn line, an edit inside an unsealed log and a deleted manifest.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.record import EventLog
from bench.record.chain import encode_line, line_hash
from tests.conftest import OVERCHARGE, ROOT, Completed, bench
from tests.report_support import plain_text, short_sequence, station_copy

N_EVENTS = 12


def crafted(tmp: Path, n: int = N_EVENTS) -> Path:
    """A run folder as the controller leaves it when killed: events, traffic, inputs, no manifest."""
    run = tmp / "0190a1b2-unsealed"
    (run / "inputs").mkdir(parents=True)
    log = EventLog(run / "events.jsonl")
    log.append(
        "run_started",
        0.0,
        run_id="0190a1b2-unsealed",
        started_utc="2026-12-02T10:00:00.000Z",
        sequence={"id": "R100-9G-OVERCHARGE", "version": "1.0.0", "title": "overcharge protection"},
        station={"id": "sim-bms-rig"},
        parameters={"charge_current": "60 A"},
    )
    for i in range(1, n - 1):
        log.append("step_started", float(i), step=f"step {i}")
    log.append("step_started", float(n), step="charge until the BMS interrupts")
    log.close()
    (run / "can.blf").write_bytes(b"LOGG" + bytes(200))
    return run


def lines(run: Path) -> list[bytes]:
    return (run / "events.jsonl").read_bytes().split(b"\n")[:-1]


def test_a_crafted_unsealed_run_reports_its_intact_chain(tmp_path: Path) -> None:
    run = crafted(tmp_path)
    r = bench("verify", run)
    assert r.rc == 1, r.out + r.err
    assert f"unsealed: {N_EVENTS} events, chain intact up to line {N_EVENTS}, last event" in r.out
    assert "step_started" in r.out and "charge until the BMS interrupts" in r.out
    assert "torn" not in r.out + r.err and "broken" not in r.err


def test_a_torn_last_line_is_a_torn_write_not_tampering(tmp_path: Path) -> None:
    run = crafted(tmp_path)
    with (run / "events.jsonl").open("ab") as f:
        f.write(b'{"seq":12,"t":13.0,"kind":"sample","sig')
    r = bench("verify", run)
    assert r.rc == 1
    assert f"unsealed: {N_EVENTS} events, chain intact up to line {N_EVENTS}" in r.out, r.out
    assert f"events.jsonl:{N_EVENTS + 1}: torn last line" in r.err, r.err
    assert "broken" not in r.err and "edited" not in r.err


def test_an_edit_inside_an_unsealed_log_is_still_found(tmp_path: Path) -> None:
    run = crafted(tmp_path)
    ls = lines(run)
    ls[4] = ls[4].replace(b"step 4", b"step X")
    (run / "events.jsonl").write_bytes(b"".join(line + b"\n" for line in ls))
    r = bench("verify", run)
    assert r.rc == 1
    assert f"unsealed: {N_EVENTS} events, chain intact up to line 4" in r.out, r.out
    assert "events.jsonl:5: hash chain broken between lines 5 and 6" in r.err, r.err


def test_a_signature_without_its_manifest_is_a_deleted_manifest(tmp_path: Path) -> None:
    run = crafted(tmp_path)
    (run / "manifest.sig").write_text("{}")
    r = bench("verify", run)
    assert r.rc == 1
    assert "manifest.json: missing, but manifest.sig is there" in r.err, r.err


def test_a_deleted_manifest_of_a_finished_run_is_named(tmp_path: Path) -> None:
    run = crafted(tmp_path)
    last_line = lines(run)[-1]
    ended = {"seq": json.loads(last_line)["seq"] + 1, "t": 20.0, "kind": "run_ended", "verdict": "PASS"}
    with (run / "events.jsonl").open("ab") as f:
        f.write(encode_line({**ended, "prev": line_hash(last_line)}) + b"\n")
    r = bench("verify", run)
    assert r.rc == 1
    assert f"unsealed: {N_EVENTS + 1} events, chain intact up to line {N_EVENTS + 1}, last event" in r.out, r.out
    assert "manifest.json: missing although the log ends with run_ended" in r.err, r.err


def test_a_folder_without_events_or_manifest(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    r = bench("verify", tmp_path / "empty")
    assert r.rc == 1 and "unsealed: no events.jsonl" in r.out + r.err, r.out + r.err


def test_render_shows_a_crafted_unsealed_run_as_incomplete(tmp_path: Path) -> None:
    run = crafted(tmp_path)
    with (run / "events.jsonl").open("ab") as f:
        f.write(b'{"seq":12,"t":13.0,"ki')
    out = tmp_path / "rendered"
    r = bench("report", "render", run, "-o", out, "--no-pdf")
    assert r.rc == 0, r.out + r.err
    html = (out / "report.html").read_text()
    text = plain_text(html)
    assert 'class="verdict INCOMPLETE"' in html
    assert "INCOMPLETE" in text and "never sealed" in text
    assert "R100-9G-OVERCHARGE" in text and "charge until the BMS interrupts" in text
    assert f"chain intact up to line {N_EVENTS}" in text and "torn last line" in text
    assert "PASS" not in text


# --- the real thing: a `bench run` killed with SIGKILL in the middle of a step -------------------


def _started_hold(run: Path) -> bool:
    return b'"kind":"step_started","step":"hold"' in (run / "events.jsonl").read_bytes()


def _traffic_on_disk(run: Path) -> bool:
    blf = run / "can.blf"
    return blf.is_file() and blf.stat().st_size > 0


# Two kills: in the middle of a 60 s wait on the wall clock (a quiet moment), and during the
# overcharge sequence in virtual time, where snapshots and CAN frames are written as fast as the
# machine can, once the first BLF container of traffic is on disk.
KILLS = {
    "mid-step": (["--realtime", "-p", "hold=60 s"], "short", _started_hold),
    "mid-overcharge": ([], "overcharge", _traffic_on_disk),
}


@pytest.fixture(scope="module", params=list(KILLS))
def killed_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("killed")
    reports = tmp / "reports"
    extra, which, ready = KILLS[request.param]
    sequence = short_sequence(tmp) if which == "short" else OVERCHARGE
    cmd = [
        sys.executable, "-m", "bench.cli", "run", str(sequence), "--station", str(station_copy(tmp)),
        "--reports", str(reports), "-q", *extra,
    ]  # fmt: skip
    env = {**os.environ, "BENCH_KEY_DIR": str(tmp / "no-key"), "BENCH_REPORT_PDF": "0"}
    with (tmp / "controller.log").open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            runs = [p for p in reports.glob("*") if (p / "events.jsonl").is_file()]
            if runs and ready(runs[0]):
                break
            time.sleep(0.02)
        assert proc.poll() is None, (tmp / "controller.log").read_text()
        if which == "short":
            time.sleep(1.0)  # in the middle of the 60 s hold
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    (run,) = reports.iterdir()
    assert not (run / "manifest.json").exists() and not (run / "result.json").exists()
    assert (run / "can.blf").is_file()
    return run


def test_verify_reports_a_sigkilled_run_as_unsealed(killed_run: Path) -> None:
    r = bench("verify", killed_run)
    assert r.rc == 1, r.out + r.err
    n = len(lines(killed_run))
    m = re.search(r"unsealed: (\d+) events, chain intact up to line (\d+), last event #(\d+) (\w+)", r.out)
    assert m, r.out + r.err
    assert int(m[1]) == int(m[2]) == n > 5
    last = json.loads(lines(killed_run)[-1])
    assert int(m[3]) == last["seq"] and m[4] == last["kind"]
    assert "broken" not in r.err and "manifest.json: missing" not in r.err


def test_render_shows_a_sigkilled_run_as_incomplete(killed_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "rendered"
    r: Completed = bench("report", "render", killed_run, "-o", out)
    assert r.rc == 0, r.out + r.err
    text = plain_text((out / "report.html").read_text())
    assert "INCOMPLETE" in text and "not finished" in text and "can.blf" in text
    assert (out / "report.pdf").stat().st_size > 1000
    assert not (killed_run / "report.html").exists(), "the record itself is not changed"


def test_an_unsealed_run_with_a_result_is_still_incomplete(tmp_path: Path) -> None:
    # Killed between writing result.json and sealing: the result is not sealed by anything.
    run = crafted(tmp_path)
    (run / "result.json").write_text(json.dumps({"run_id": "0190a1b2-unsealed", "verdict": "PASS"}))
    out = tmp_path / "rendered"
    r = bench("report", "render", run, "-o", out, "--no-pdf")
    assert r.rc == 0, r.out + r.err
    text = plain_text((out / "report.html").read_text())
    assert "INCOMPLETE" in text and "result.json present, but not sealed" in text
    assert "PASS" not in text
    amend = bench("report", "amend", run, "--reason", "typo", "--by", "A. Reviewer", "--no-pdf")
    assert amend.rc == 2 and len(amend.err.strip().splitlines()) == 1, amend.out + amend.err
    assert "unsealed" in amend.err and not (tmp_path / "0190a1b2-unsealed.A1").exists()
