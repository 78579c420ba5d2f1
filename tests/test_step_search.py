"""The ``search`` step: a trip point found by bisection and by a stepped ramp, on the simulated station.

The stimulus is the fault box's resistor Ro between HV+ and chassis; the conditions are the
simulated BMS's isolation warning (not latched) and isolation fault (latched until cleared).
Their thresholds follow from the station's configuration: the BMS warns when Ri in parallel
with Ro falls below 100 Ohm/V of the pack's maximum working voltage, and latches its fault below
50 Ohm/V.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from bench.plan import build_plan
from bench.result import Verdict
from bench.runner import Started, run_plan
from simulators.bms_firmware import BmsParams
from simulators.pack import CHEMISTRIES
from tests.conftest import ROOT, SIM_STATION, bench
from tests.report_support import plain_text, station_copy
from tests.served import dump_yaml, load_yaml, sim_serve, write_stations
from tests.test_bad_inputs import assert_one_line

SEQUENCE = ROOT / "tests" / "sequences" / "search_isolation.yaml"
WARNING_STEP = "isolation warning threshold"
FAULT_STEP = "isolation fault threshold"


def _ro_threshold_kohm(level: str) -> float:
    """The Ro at which Ri || Ro reaches the BMS's isolation threshold ``level`` (warning or error)."""
    plant = YAML(typ="safe").load(SIM_STATION.read_text(encoding="utf-8"))["simulators"][0]["config"]
    u_max = plant["cells"] * CHEMISTRIES[plant["chemistry"].upper()].charge_voltage_per_cell_v
    threshold = plant["bms"][f"iso_{level}_ohm_per_v"] * u_max / 1000.0
    ri = next(f.default for f in dataclasses.fields(BmsParams) if f.name == "iso_resistance_kohm")
    assert isinstance(ri, float)
    return 1.0 / (1.0 / threshold - 1.0 / ri)


def _events(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text(encoding="utf-8").splitlines()]


def _probes(events: list[dict[str, Any]], step: str) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] == "search_probe" and e["step"] == step]


def _variant(tmp_path: Path, replace: dict[str, str], name: str = "search.yaml") -> Path:
    text = SEQUENCE.read_text(encoding="utf-8")
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _ended(events: list[dict[str, Any]], step: str) -> dict[str, Any]:
    return next(e for e in events if e["kind"] == "step_ended" and e["step"] == step)


def _sets_during(events: list[dict[str, Any]], step: str, device: str) -> list[dict[str, float]]:
    """What every command to ``device`` while ``step`` ran read back, in order."""
    start = next(i for i, e in enumerate(events) if e["kind"] == "step_started" and e["step"] == step)
    end = events.index(_ended(events, step))
    return [e["readback"] for e in events[start:end] if e["kind"] == "set" and e["device"] == device]


def _ro_sets_during(events: list[dict[str, Any]], step: str) -> list[float]:
    """The Ro read back by every command of the fault box while ``step`` ran, in order."""
    return [r["iso_ro"] for r in _sets_during(events, step, "fib")]


def test_the_trip_points_are_found_within_the_resolution(tmp_path: Path) -> None:
    r = bench("run", SEQUENCE, "--reports", tmp_path / "reports", "-q")
    assert r.rc == 0, r.out + r.err
    measured = {m["name"]: m for m in r.result()["measurements"]}
    warning, fault = _ro_threshold_kohm("warning"), _ro_threshold_kohm("error")

    # Bisection: the last interval is at most the resolution wide, and the threshold lies in it.
    m = measured["iso_warning_ro"]
    assert m["unit"] == "kOhm" and m["outcome"] == "PASS"
    assert abs(m["value"] - warning) <= 0.25
    events = _events(r.run_dir())
    probes = _probes(events, WARNING_STEP)
    # Every probe agrees with the threshold: the warning held below it and never above it.
    assert [p["met"] for p in probes] == [p["value"] < warning for p in probes]
    assert [p["value"] for p in probes[:2]] == [200.0, 50.0]  # the bracket, safe end first
    last_false = min(p["value"] for p in probes if not p["met"])
    first_true = max(p["value"] for p in probes if p["met"])
    assert 0 < last_false - first_true <= 0.5
    assert m["value"] == pytest.approx((last_false + first_true) / 2)
    assert len(probes) == 2 + math.ceil(math.log2(150 / 0.5))
    for p in probes:
        assert p["commanded_t"] <= (p["sample_t"] or p["commanded_t"]) <= p["t"]
        assert p["t"] - p["commanded_t"] <= 2.5 + 0.2  # the dwell, and the supply's command time
    # The uncertainty holds the search's half-width (rectangular) at least; Ro has no register entry.
    assert m["uncertainty"] >= 2 * (last_false - first_true) / 2 / math.sqrt(3)
    assert m["uncertainty_budget"][0].startswith(f"search interval {first_true:g} kOhm .. {last_false:g} kOhm")
    assert "fib.iso_ro itself: not included" in m["uncertainty_budget"][1]

    # Stepped ramp: from the safe end down by 1 kOhm, to the first value where the fault latched.
    m = measured["iso_fault_ro"]
    probes = _probes(events, FAULT_STEP)
    assert [p["value"] for p in probes] == [50.0 - i for i in range(len(probes))]
    assert [p["met"] for p in probes] == [False] * (len(probes) - 1) + [True]
    assert probes[-1]["value"] < fault <= probes[-2]["value"]
    assert m["value"] == pytest.approx(probes[-1]["value"] + 0.5) and abs(m["value"] - fault) <= 1.0
    # The latched fault was cleared (CLEAR, then IDLE) before the step ended, and Ro removed.
    assert _sets_during(events, FAULT_STEP, "bms") == [{"cmd_clear_faults": 1.0}, {"cmd_clear_faults": 0.0}]
    assert _ro_sets_during(events, FAULT_STEP)[-1] == 0.0

    # The report shows both probe tables, a row per probe, in the order probed; the search's limits
    # are stated against the origin the search declares.
    text = plain_text((r.run_dir() / "report.html").read_text(encoding="utf-8"))
    assert "conforms to the item specification (the isolation monitor's warning threshold" in text
    for step in (WARNING_STEP, FAULT_STEP):
        assert f'Probe points of search "{step}"' in text
        table = text.split(f'Probe points of search "{step}"', 1)[1]
        rows = re.findall(r" (\d+) (\d+(?:\.\d+)?) (true|false) ", table)
        assert [(int(n), float(v), c == "true") for n, v, c in rows][: len(_probes(events, step))] == [
            (p["probe"], pytest.approx(p["value"], rel=1e-5), p["met"]) for p in _probes(events, step)
        ]


def test_a_rising_search_restores_to_its_safe_end(tmp_path: Path) -> None:
    # The warning clears as Ro rises: 'up' from 50 kOhm, where it is active, by a stepped ramp of 5 kOhm.
    # No 'restore:': after each probe where it had cleared, Ro goes back to the safe end, 50 kOhm.
    path = _variant(
        tmp_path,
        {
            "  - name: isolation warning threshold\n": "  - set: {fib.iso_ro: 50 kohm}\n"
            "  - wait_until: bms.warn_isolation == ACTIVE\n    timeout: 3 s\n"
            "  - name: isolation warning threshold\n",
            "until: bms.warn_isolation == ACTIVE\n      method: bisection": "until: bms.warn_isolation == OK\n"
            "      method: ramp",
            "direction: down": "direction: up",
            "resolution: $resolution": "resolution: 5 kohm",
            "      restore: 0 kohm\n      min: 78 kohm": "      min: 78 kohm",
        },
    )
    r = bench("run", path, "--reports", tmp_path / "reports", "-q")
    assert r.rc == 0, r.out + r.err
    events = _events(r.run_dir())
    probes = _probes(events, WARNING_STEP)
    warning = _ro_threshold_kohm("warning")
    assert [p["value"] for p in probes] == [50.0 + 5 * i for i in range(len(probes))]
    assert [p["met"] for p in probes] == [p["value"] > warning for p in probes]
    assert probes[-1]["met"] and not probes[-2]["met"]
    m = next(m for m in r.result()["measurements"] if m["name"] == "iso_warning_ro")
    assert abs(m["value"] - warning) <= 2.5
    assert _ro_sets_during(events, WARNING_STEP)[-1] == 50.0


def test_the_stimulus_uncertainty_from_the_register_is_combined(tmp_path: Path) -> None:
    station = station_copy(tmp_path, append="  fib.iso_ro: {accuracy: 0.3 kOhm, source: fault box resistor decade}\n")
    r = bench("run", SEQUENCE, "--station", station, "--reports", tmp_path / "reports", "-q")
    assert r.rc == 0, r.out + r.err
    m = next(m for m in r.result()["measurements"] if m["name"] == "iso_fault_ro")
    # Half of the 1 kOhm step and the 0.3 kOhm accuracy, both rectangular, in quadrature; U = 2 u_c to two digits.
    u_c = math.hypot(0.5 / math.sqrt(3), 0.3 / math.sqrt(3))
    assert 2 * u_c <= m["uncertainty"] <= 2 * u_c * 1.1
    assert any("fib.iso_ro accuracy ±0.3 kOhm" in line for line in m["uncertainty_budget"])


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        (
            {"bracket: {low: 50 kohm, high: 200 kohm}": "bracket: {low: 100 kohm, high: 200 kohm}"},
            "bracket not verified: 'bms.warn_isolation == ACTIVE' does not hold at the far end, fib.iso_ro = 100 kOhm",
        ),
        (
            {"bracket: {low: 50 kohm, high: 200 kohm}": "bracket: {low: 20 kohm, high: 60 kohm}"},
            "bracket not verified: 'bms.warn_isolation == ACTIVE' already holds at the safe end, fib.iso_ro = 60 kOhm",
        ),
        (
            {
                "method: bisection": "method: ramp",
                "bracket: {low: 50 kohm, high: 200 kohm}": "bracket: {low: 100 kohm, high: 200 kohm}",
                "resolution: $resolution": "resolution: 25 kohm",
            },
            "'bms.warn_isolation == ACTIVE' never held from fib.iso_ro = 200 kOhm to 100 kOhm in steps of 25 kOhm",
        ),
    ],
    ids=["far-end-false", "safe-end-true", "ramp-never-true"],
)
def test_a_bracket_that_does_not_hold_fails_and_restores(tmp_path: Path, replace: dict[str, str], message: str) -> None:
    r = bench("run", _variant(tmp_path, replace), "--reports", tmp_path / "reports", "-q")
    assert r.rc == 1, r.out + r.err
    result = r.result()
    assert result["verdict"] == "FAIL"
    step = next(s for s in result["steps"] if s["name"] == WARNING_STEP)
    assert step["outcome"] == "FAIL" and message in step["message"]
    assert "iso_warning_ro" not in {m["name"] for m in result["measurements"]}
    events = _events(r.run_dir())
    assert _ro_sets_during(events, WARNING_STEP)[-1] == 0.0  # the restore value, before the step ended
    # A failed search lets the steps go on, as a failed measure does: the second search still ran.
    assert _probes(events, FAULT_STEP)


def test_the_dut_fault_leaves_the_bracket_unverified(tmp_path: Path) -> None:
    r = bench("run", SEQUENCE, "--reports", tmp_path / "reports", "-q", "--fault", "iso_warning_disabled")
    assert r.rc == 1, r.out + r.err
    step = next(s for s in r.result()["steps"] if s["name"] == WARNING_STEP)
    assert step["outcome"] == "FAIL" and "does not hold at the far end, fib.iso_ro = 50 kOhm" in step["message"]


def test_a_latched_condition_without_reset_is_an_error(tmp_path: Path) -> None:
    # Without its reset, the isolation fault stays latched after Ro is removed: no next probe can be made.
    reset = (
        "      reset:\n        - wait: 1.5 s\n        - set: {bms.cmd_clear_faults: CLEAR}\n"
        "        - wait: 300 ms\n        - set: {bms.cmd_clear_faults: IDLE}\n"
    )
    r = bench("run", _variant(tmp_path, {reset: ""}), "--reports", tmp_path / "reports", "-q")
    assert r.rc == 3, r.out + r.err
    step = next(s for s in r.result()["steps"] if s["name"] == FAULT_STEP)
    assert step["outcome"] == "ERROR"
    assert step["message"].startswith(
        "'bms.fault_isolation == ACTIVE' still holds 3 s after fib.iso_ro was restored to 0 kOhm "
        "(a condition that latches needs 'reset:') (bms.fault_isolation = ACTIVE)"
    )
    events = _events(r.run_dir())
    assert [p["met"] for p in _probes(events, FAULT_STEP)][-1] is True
    assert _ro_sets_during(events, FAULT_STEP)[-1] == 0.0


def _run_stopped(tmp_path: Path, stop: str) -> tuple[list[dict[str, Any]], Any]:
    """The search sequence, stopped by ``stop`` (abort or emergency) 1 s into the dwell of the 4th probe."""
    plan = build_plan(SEQUENCE, SIM_STATION)
    started: list[Started] = []

    def on_probe(kind: str, t: float, fields: dict[str, Any]) -> None:
        if kind == "search_probe" and fields["probe"] == 3:
            run = started[0].run
            if stop == "abort":
                asyncio.get_running_loop().call_later(1.0, run.request_stop, Verdict.ABORTED, "stopped by the test")
            else:
                asyncio.get_running_loop().call_later(1.0, run.emergency_stop, "emergency stop by the test")

    result = run_plan(plan, tmp_path / "reports", full_report=False, on_started=started.append, listeners=[on_probe])
    return _events(tmp_path / "reports" / result.run_id), result


def test_an_abort_mid_search_restores_the_stimulus(tmp_path: Path) -> None:
    events, result = _run_stopped(tmp_path, "abort")
    assert result.verdict == Verdict.ABORTED
    ended = _ended(events, WARNING_STEP)
    assert ended["outcome"] == "ABORTED" and ended["message"] == "stopped by the test"
    assert len(_probes(events, WARNING_STEP)) == 3
    # The 4th probe's value was commanded, then the stop came in its dwell: Ro back to its restore value.
    sets = _ro_sets_during(events, WARNING_STEP)
    assert sets[-2] == 87.5 and sets[-1] == 0.0
    before_end = events[: events.index(ended)]
    restore = max(i for i, e in enumerate(before_end) if e["kind"] == "set" and e["requested"] == {"iso_ro": 0.0})
    assert restore > events.index(_probes(events, WARNING_STEP)[-1])
    assert not _probes(events, FAULT_STEP)


def test_an_emergency_stop_leaves_the_stimulus_to_the_safe_state(tmp_path: Path) -> None:
    events, result = _run_stopped(tmp_path, "emergency")
    assert result.verdict == Verdict.ABORTED
    estop = next(i for i, e in enumerate(events) if e["kind"] == "emergency_stop")
    # Nothing but the safe state commands the fault box after the emergency stop (all its channels at once).
    after = [e["requested"] for e in events[estop:] if e["kind"] == "set" and e["device"] == "fib"]
    assert after and all(len(r) > 1 and r["iso_ro"] == 0.0 for r in after)
    assert {s.device: s.safe for s in result.safe_state}["fib"]


# -- load-time errors: one line with the file, the line and the field ------------------------------


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("{low: 50 kohm, high", "{low: 50 V, high", "search.bracket.low: the value of fib.iso_ro (kOhm) must be"),
        (
            "{low: 50 kohm, high: 200 kohm}",
            "{low: 200 kohm, high: 50 kohm}",
            "search.bracket.low: the bracket is reversed or empty: low 200 kOhm is not below high 50 kOhm",
        ),
        ("resolution: $resolution", "resolution: 0 kohm", "search.resolution: the resolution must be above zero"),
        ("resolution: $resolution", "resolution: -1 kohm", "search.resolution: the resolution must be above zero"),
        (
            "resolution: $resolution",
            "resolution: 151 kohm",
            "search.resolution: the resolution (151 kOhm) is larger than the bracket (150 kOhm)",
        ),
        (
            "resolution: $resolution",
            "resolution: 0.5 s",
            "search.resolution: the resolution must be a resistance, got a time",
        ),
        (
            "signal: fib.iso_ro\n      until: bms.warn",
            "signal: fib.iso_rx\n      until: bms.warn",
            "search.signal: unknown signal 'fib.iso_rx'; did you mean 'fib.iso_ro'?",
        ),
        (
            "signal: fib.iso_ro\n      until: bms.warn",
            "signal: bms.iso_resistance\n      until: bms.warn",
            "search.signal: 'bms.iso_resistance' cannot be searched (not a commanded quantity",
        ),
        ("dwell: $dwell", "dwell: 0 s", "search.dwell: the dwell must be longer than zero"),
        ("restore: 0 kohm", "restore: 0 V", "search.restore: the value of fib.iso_ro (kOhm) must be"),
        ("min: 78 kohm", "min: 78 V", "search.min: the 'min' limit must be a resistance, got a voltage"),
        ("direction: down", "direction: sideways", "search.direction: Input should be 'up' or 'down'"),
        (
            "until: bms.warn_isolation == ACTIVE",
            "until: bms.warn_isolation",
            "search.until: 'bms.warn_isolation' is not a condition",
        ),
    ],
)
def test_a_bad_search_is_one_line_at_validate(tmp_path: Path, old: str, new: str, message: str) -> None:
    path = _variant(tmp_path, {old: new})
    assert_one_line(bench("validate", path), path.name, _line_of(path, new.split("\n")[0]), message)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "- wait: 1.5 s",
            "- {wait: 1.5 s, set: {bms.cmd_clear_faults: CLEAR}}",
            "search.reset[0]: a reset action is one of 'set: {signal: value}' or 'wait: duration'",
        ),
        ("- wait: 1.5 s", "- wait: 1.5 V", "search.reset[0].wait:"),
        ("{bms.cmd_clear_faults: CLEAR}", "{bms.cmd_clear_faults: NOW}", "bms.cmd_clear_faults has no state 'NOW'"),
        ("{bms.cmd_clear_faults: CLEAR}", "{bms.iso_resistance: 1 kohm}", "cannot be set (it is measured"),
    ],
)
def test_a_bad_reset_action_is_one_line_at_validate(tmp_path: Path, old: str, new: str, message: str) -> None:
    path = _variant(tmp_path, {old: new})
    assert_one_line(bench("validate", path), path.name, _line_of(path, new), message)


def _line_of(path: Path, text: str) -> int:
    """The number of the first line of ``path`` that holds ``text``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, 1) if text.strip() in line)


def test_a_search_over_the_served_transports(tmp_path: Path) -> None:
    # The fault box on TCP SCPI and the BMS through socketcand, on the wall clock: the dwell is real time.
    stations = write_stations(tmp_path / "stations")
    served = load_yaml(stations.served)
    fib = load_yaml(SIM_STATION)["devices"]["fib"]
    fib["config"]["transport"] = {"visa": stations.visa("fib"), "timeout": "2 s"}
    served["devices"]["fib"] = fib
    dump_yaml(served, stations.served)
    text = SEQUENCE.read_text(encoding="utf-8")
    text = text[: text.index("  - name: isolation fault threshold")] + text[text.index("cleanup:") :]
    text = text.replace("{low: 50 kohm, high: 200 kohm}", "{low: 70 kohm, high: 100 kohm}")
    path = tmp_path / "served_search.yaml"
    path.write_text(text.replace("resolution: $resolution", "resolution: 4 kohm"), encoding="utf-8")
    with sim_serve(stations.served):
        r = bench("run", path, "--station", stations.served, "--reports", tmp_path / "reports", timeout=90)
    assert r.rc == 0, r.out + r.err
    m = next(m for m in r.result()["measurements"] if m["name"] == "iso_warning_ro")
    assert abs(m["value"] - _ro_threshold_kohm("warning")) <= 2.0
    probes = _probes(_events(r.run_dir()), WARNING_STEP)
    assert len(probes) == 2 + math.ceil(math.log2(30 / 4))
    assert [p["met"] for p in probes] == [p["value"] < _ro_threshold_kohm("warning") for p in probes]
