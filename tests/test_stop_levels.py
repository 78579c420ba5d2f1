"""Stop levels, the supervisor and its latch, driver errors and operator prompts.

Every case ends with the rig's safe state read back: supply off, contactors open.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from simulators.faults import H2_SENSOR_DISCONNECTED_AFTER_S
from tests.conftest import ROOT, SIM_STATION, Completed, bench

SUPPLY_ON = ROOT / "tests" / "sequences" / "supply_on.yaml"
PROMPTS = ROOT / "tests" / "sequences" / "prompts.yaml"


def station_copy(tmp_path: Path, name: str, replace: dict[str, str]) -> Path:
    text = SIM_STATION.read_text().replace("../dbc/", f"{ROOT / 'dbc'}/")
    text = text.replace("id: sim\n", f"id: {name}\n")
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def events(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


def assert_safe(result: dict[str, Any]) -> None:
    assert {s["device"]: s["safe"] for s in result["safe_state"]} == {"psu": True, "bms": True}, result["safe_state"]


def test_supervisor_trip_is_an_emergency_stop_and_latches(tmp_path: Path) -> None:
    station = station_copy(tmp_path, "tight-limits", {"when: psu.voltage > 1005 V": "when: psu.voltage > 50 V"})
    r = bench("run", SUPPLY_ON, "--station", station, "--reports", tmp_path, "-q")
    result = r.result()
    assert r.rc == 4, r.out + r.err
    assert result["verdict"] == "ABORTED"
    assert "supervisor limit 'supply voltage above the supply's rating' tripped" in result["reason"]
    assert_safe(result)
    ev = events(r.run_dir())
    kinds = [e["kind"] for e in ev]
    assert kinds.index("supervisor_tripped") < kinds.index("emergency_stop") < kinds.index("safe_state")
    trip = next(e for e in ev if e["kind"] == "supervisor_tripped")
    assert trip["values"]["psu.voltage"] > 50
    # An emergency stop runs no cleanup steps: only the safe state of every device.
    assert not [e for e in ev if e["kind"] == "step_started" and e["phase"] == "cleanup"]

    # The latch holds across processes: the next run is refused and the refusal recorded.
    again = bench("run", SUPPLY_ON, "--station", station, "--reports", tmp_path, "-q", "-p", "voltage=10 V")
    assert again.rc == 6
    assert "station 'tight-limits' is tripped since" in again.err and len(again.err.strip().splitlines()) == 1
    log = Path(__import__("os").environ["BENCH_STATE_DIR"]) / "tight-limits.interlock.jsonl"
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["kind"] for e in entries][-2:] == ["tripped", "refused"]

    reset = bench("reset-interlock", "--station", station, "--reason", "limit was a test setting", "--by", "tester")
    assert reset.rc == 0, reset.err
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert entries[-1]["kind"] == "reset" and entries[-1]["reason"] == "limit was a test setting"
    ok = bench(
        "run", SUPPLY_ON, "--station", station, "--reports", tmp_path, "-q", "-p", "voltage=10 V", "-p", "hold=1 s"
    )
    assert ok.rc == 0, ok.out + ok.err


def _start(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[str], list[str]]:
    import os

    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "run", str(SUPPLY_ON), "--reports", str(tmp_path), "--realtime", *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
    )
    assert proc.stdout is not None
    seen: list[str] = []
    for line in proc.stdout:
        seen.append(line)
        if "hold: wait" in line:
            return proc, seen
    proc.kill()
    pytest.fail("run ended before the hold step: " + "".join(seen))


@pytest.mark.parametrize(
    ("signals", "kind", "reason"),
    [
        ([signal.SIGINT], "cleanup", "interrupted by operator (SIGINT)"),
        ([signal.SIGTERM], "cleanup", "interrupted by operator (SIGTERM)"),
        ([signal.SIGINT, signal.SIGINT], "emergency", "interrupted by operator (SIGINT)"),
    ],
    ids=["sigint", "sigterm", "sigint-twice"],
)
def test_signals(tmp_path: Path, signals: list[signal.Signals], kind: str, reason: str) -> None:
    proc, seen = _start(tmp_path)
    try:
        time.sleep(0.3)
        for sig in signals:
            proc.send_signal(sig)
            time.sleep(0.5)  # the second SIGINT lands during the cleanup's discharge wait
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = Completed(proc.returncode, "".join(seen) + rest, err)
    assert done.rc == 4, done.out + done.err
    assert "Traceback" not in done.out + done.err
    result = done.result()
    assert result["verdict"] == "ABORTED" and reason in result["reason"]
    assert_safe(result)
    ev = events(done.run_dir())
    cleanup_steps = [e for e in ev if e["kind"] == "step_started" and e["phase"] == "cleanup"]
    estops = [e for e in ev if e["kind"] == "emergency_stop"]
    if kind == "emergency":
        assert estops and "second SIGINT" in estops[0]["reason"]
        # The emergency stop cut the cleanup short: the discharge wait was cancelled.
        ended = [e for e in ev if e["kind"] == "step_ended" and e["step"] == "let the HV link discharge"]
        assert ended and ended[0]["outcome"] == "ABORTED"
    else:
        assert cleanup_steps and not estops


def test_instrument_error_ends_run_and_cleans_up(tmp_path: Path) -> None:
    # The driver allows 1500 V, the instrument (1000 V) refuses it with its own error.
    station = station_copy(tmp_path, "wide-driver", {"voltage_max: 1000 V": "voltage_max: 1500 V"})
    r = bench("run", SUPPLY_ON, "--station", station, "--reports", tmp_path, "-q", "-p", "voltage=1500 V")
    result = r.result()
    assert r.rc == 3
    assert result["verdict"] == "ERROR"
    assert 'psu: instrument error after setting voltage_set: -222,"Data out of range"' in result["reason"]
    assert_safe(result)
    ev = events(r.run_dir())
    assert [e for e in ev if e["kind"] == "step_started" and e["phase"] == "cleanup"]


def test_serial_disconnect_ends_run_and_cleans_up(tmp_path: Path) -> None:
    # The sensor's port itself goes away (end of stream), unlike h2_sensor_silent where the port
    # stays open and only the data stops: the driver must not wait for its silence timeout.
    text = SUPPLY_ON.read_text()
    assert "requires: [psu, bms]\n" in text
    sequence = tmp_path / "supply_on_h2.yaml"
    sequence.write_text(text.replace("requires: [psu, bms]\n", "requires: [psu, bms, h2]\n"))
    r = bench("run", sequence, "--fault", "h2_sensor_disconnected", "--reports", tmp_path, "-q")
    result = r.result()
    assert r.rc == 3, r.out + r.err
    assert "Traceback" not in r.out + r.err
    assert result["verdict"] == "ERROR"
    assert result["reason"] == "device h2: serial port inproc:h2 closed (end of stream)"
    assert_safe(result)
    ev = events(r.run_dir())
    fault = next(e for e in ev if e["kind"] == "device_fault")
    assert fault["device"] == "h2" and "closed" in fault["reason"]
    opened = next(e for e in ev if e["kind"] == "device_connected" and e["device"] == "h2")
    assert fault["t"] - opened["t"] == pytest.approx(H2_SENSOR_DISCONNECTED_AFTER_S, abs=0.01), "no silence timeout"
    outcomes = {(s["phase"], s["name"]): s["outcome"] for s in result["steps"]}
    assert outcomes[("steps", "hold")] == "ABORTED", "the run was on the supply when the link went"
    assert outcomes[("cleanup", "supply off")] == "PASS"
    assert outcomes[("cleanup", "let the HV link discharge")] == "PASS"
    kinds = [e["kind"] for e in ev]
    assert kinds.index("device_fault") < kinds.index("cleanup_started") < kinds.index("safe_state")


def test_prompts_from_answers_file(tmp_path: Path) -> None:
    answers = tmp_path / "answers.yaml"
    answers.write_text("confirm enclosure closed: yes\nambient temperature: 23.5 degC\n")
    r = bench("run", PROMPTS, "--reports", tmp_path, "-q", "--answers", answers)
    assert r.rc == 0, r.out + r.err
    result = r.result()
    meas = {m["name"]: m for m in result["measurements"]}
    assert meas["ambient temperature"]["value"] == 23.5 and meas["ambient temperature"]["unit"] == "degC"
    answered = [e for e in events(r.run_dir()) if e["kind"] == "prompt_answered"]
    assert [a["answer"] for a in answered] == ["yes", "23.5 degC"]
    assert all(str(answers) in a["source"] for a in answered)


def test_prompt_value_out_of_range_fails(tmp_path: Path) -> None:
    answers = tmp_path / "answers.yaml"
    answers.write_text("confirm enclosure closed: yes\nambient temperature: 40\n")
    r = bench("run", PROMPTS, "--reports", tmp_path, "-q", "--answers", answers)
    assert r.rc == 1
    assert "ambient temperature = 40 degC" in r.result()["reason"]


def test_prompt_without_answer_fails_clearly(tmp_path: Path) -> None:
    r = bench("run", PROMPTS, "--reports", tmp_path, "-q")
    result = r.result()
    assert r.rc == 3
    assert "prompt 'confirm enclosure closed' needs an answer" in result["reason"]
    assert "--answers" in result["reason"]
    assert_safe(result)
