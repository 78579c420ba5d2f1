"""Ramp steps, set instants and the moving-average statistic of the sequence language."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.stats import max_moving_mean
from tests.conftest import bench

HEAD = """\
id: T-RAMP
title: ramp
version: 1.0.0
basis: {standard: test, clause: ramp}
requires: [psu, bms]
steps:
"""


def _run(tmp_path: Path, steps: str) -> tuple[int, dict[str, float], str]:
    seq = tmp_path / "ramp.yaml"
    seq.write_text(HEAD + steps)
    run = bench("run", seq, "--reports", tmp_path, "-q")
    if run.rc == 2:
        return run.rc, {}, run.err
    result = run.result()
    return run.rc, {m["name"]: m["value"] for m in result["measurements"]}, result["reason"]


def test_ramp_reaches_its_end_at_its_rate(tmp_path: Path) -> None:
    rc, meas, reason = _run(
        tmp_path,
        """\
  - name: start
    set: {psu.output: OFF}
    as: t0
  - name: up
    ramp: {signals: [psu.voltage_set], from: 100 V, to: 200 V, rate: 50 V/s, interval: 200 ms}
  - name: end
    set: {psu.output: OFF}
    as: t1
  - measure: {name: took, expr: "@t1 - @t0", unit: s}
  - measure: {name: reached, signal: psu.voltage_set, unit: V, min: 199.99 V, max: 200.01 V}
""",
    )
    assert rc == 0, reason
    assert 2.0 <= meas["took"] <= 2.3  # 100 V at 50 V/s, plus the read-backs


def test_ramp_stops_when_until_holds_and_marks_the_sample(tmp_path: Path) -> None:
    rc, meas, reason = _run(
        tmp_path,
        """\
  - name: start
    set: {psu.voltage_set: 300 V}
    as: t0
  - name: down
    ramp: {signals: [psu.voltage_set], to: 100 V, rate: 20 V/s}
    until: psu.voltage_set < 250 V
    as: t_low
  - measure: {name: at, signal: psu.voltage_set, unit: V}
  - measure: {name: after, expr: "@t_low - @t0", unit: s}
""",
    )
    assert rc == 0, reason
    assert 248.0 <= meas["at"] < 250.0  # from the present value (300 V) in 2 V steps, stopped on the first below
    assert 2.5 <= meas["after"] <= 2.7


def test_ramp_that_ends_without_its_condition_fails(tmp_path: Path) -> None:
    rc, _, reason = _run(
        tmp_path,
        """\
  - name: up
    ramp: {signals: [psu.voltage_set], from: 0 V, to: 10 V, rate: 10 V/s}
    until: psu.voltage_set > 20 V
""",
    )
    assert rc == 1
    assert "ramp ended at psu.voltage_set = 10 V without psu.voltage_set > 20 V" in reason


@pytest.mark.parametrize(
    ("ramp", "message"),
    [
        ("{signals: [psu.voltage_set], from: 0 V, to: 10 V, rate: 10 A/s}", "the rate of psu.voltage_set"),
        ("{signals: [psu.voltage], from: 0 V, to: 10 V, rate: 1 V/s}", "cannot be ramped"),
        ("{signals: [psu.voltage_set], from: 0 V, to: 10 V, rate: -1 V/s}", "the rate must be above zero"),
        ("{signals: [psu.voltage_set, psu.current_set], to: 10 V, rate: 1 V/s}", "is not in the unit of"),
        ("{signals: [psu.voltage_set], to: 2000 V, rate: 1 V/s}", "out of range"),
    ],
)
def test_bad_ramps_are_refused_at_load(tmp_path: Path, ramp: str, message: str) -> None:
    rc, _, err = _run(tmp_path, f"  - ramp: {ramp}\n")
    assert rc == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_as_on_a_ramp_needs_until(tmp_path: Path) -> None:
    rc, _, err = _run(tmp_path, "  - ramp: {signals: [psu.voltage_set], to: 10 V, rate: 1 V/s}\n    as: t\n")
    assert rc == 2 and "has no 'until'" in err


def test_max_moving_mean_holds_each_sample_until_the_next() -> None:
    # 10 for one second in the middle of zeros: the best 2 s window holds half of it.
    samples = [(0.0, 0.0), (1.0, 10.0), (2.0, 0.0), (3.0, 0.0), (4.0, 0.0)]
    assert max_moving_mean(samples, 2.0) == pytest.approx(5.0)
    assert max_moving_mean(samples, 1.0) == pytest.approx(10.0)
    # A constant is its own mean whatever the window; irregular sample times weigh by duration.
    assert max_moving_mean([(0.0, 3.0), (0.1, 3.0), (2.5, 3.0)], 3.0) == pytest.approx(3.0)
    assert max_moving_mean([(0.0, 0.0), (2.9, 6.0), (3.0, 0.0)], 3.0) == pytest.approx(0.2)
