"""Statistics (min, max, mean, max_moving_mean) of an expression of signals over a window or since
an instant: the expression is evaluated at every sample instant of its signals, the others held."""

from __future__ import annotations

import bisect
import re
import statistics
from pathlib import Path
from typing import Any

import pytest

from bench.plan import build_plan
from bench.result import Measurement, RunResult, Verdict
from bench.runner import Started, run_plan
from bench.stats import expression_samples
from tests.conftest import SIM_STATION, bench

PACK, ANALYZER = "bms.pack_voltage", "pa.voltage_1"
ERROR = f"{PACK} - {ANALYZER}"

SEQUENCE = f"""\
id: T-EXPR-STAT
title: statistics of an expression of two signals
version: 1.0.0
basis: {{standard: test, clause: expression statistics}}
requires: [psu, bms, pa]
steps:
  - name: discharge
    set: {{psu.voltage_set: 700 V, psu.current_set: 20 A, psu.output: ON, bms.cmd_contactors: CLOSE}}
  - wait: 2 s
  - measure: {{name: pack_voltage_error, expr: "{ERROR}", stat: mean, window: 10 s, min: -0.5 V, max: 0.5 V}}
  # Several statistics over one span: a named wait, and each measure 'since' it.
  - name: soak
    wait: 5 s
  - measure: {{name: error_max, expr: "{ERROR}", stat: max, since: soak}}
  - measure: {{name: error_min, expr: "{ERROR}", stat: min, since: soak}}
  - measure: {{name: error_mean, expr: "{ERROR}", stat: mean, since: soak, unit: mV}}
  - measure: {{name: error_moving, expr: "{ERROR}", stat: max_moving_mean, over: 1 s, since: soak}}
cleanup:
  - set: {{psu.output: OFF, bms.cmd_contactors: OPEN}}
"""

Samples = dict[str, list[tuple[float, float]]]


def _run(tmp_path: Path) -> tuple[RunResult, Samples, float]:
    """The result, every sample of the two signals as the test heard them (run time), and t0."""
    path = tmp_path / "expr_stat.yaml"
    path.write_text(SEQUENCE)
    plan = build_plan(path, SIM_STATION)
    heard: Samples = {PACK: [], ANALYZER: []}
    started: list[Started] = []

    def on_started(s: Started) -> None:
        started.append(s)
        s.run.bus.subscribe([PACK, ANALYZER], lambda n, v, t: heard[n].append((t, v)))

    result = run_plan(plan, tmp_path / "reports", full_report=False, on_started=on_started)
    assert result.verdict == Verdict.PASS, result.reason
    t0 = started[0].run.state.t0
    return result, {n: [(t - t0, v) for t, v in s] for n, s in heard.items()}, t0


def _errors(heard: Samples, start: float, end: float) -> list[float]:
    """pack - analyzer at every sample instant of either in [start, end], each signal held at its last sample.

    Both ends count (a sample stamped at the first or the last instant is in the span); the
    recorded times are rounded to 9 digits, hence the microsecond of slack.
    """
    instants = sorted({t for s in heard.values() for t, _ in s if start - 1e-6 <= t <= end + 1e-6})

    def held(name: str, at: float) -> float:
        times = [t for t, _ in heard[name]]
        return heard[name][bisect.bisect_right(times, at) - 1][1]

    return [held(PACK, t) - held(ANALYZER, t) for t in instants]


def _by_name(result: RunResult) -> dict[str, Measurement]:
    return {m.name: m for m in result.measurements}


def _instants(m: Measurement) -> int:
    return int(m.how.rsplit("(", 1)[1].split(" ", 1)[0])


@pytest.fixture(scope="module")
def expression_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunResult, Samples, float]:
    return _run(tmp_path_factory.mktemp("expr"))


def test_mean_of_an_expression_over_a_window_is_the_mean_at_its_sample_instants(
    expression_run: tuple[RunResult, Samples, float],
) -> None:
    result, heard, _ = expression_run
    m = _by_name(result)["pack_voltage_error"]
    end = m.t
    errors = _errors(heard, end - 10.0, end)
    # The union of both signals' sample times: the BMS every 100 ms, the analyzer polled every 200 ms.
    assert len(errors) == _instants(m) > 100
    assert len(errors) > len([t for t, _ in heard[PACK] if end - 10.0 <= t <= end])
    assert m.value == pytest.approx(statistics.fmean(errors), abs=1e-6)
    assert m.how.startswith(f"mean of ({ERROR}) over 10 s (")
    assert m.unit == "V" and m.outcome == "PASS" and m.value is not None and -0.5 < m.value < 0.5


def test_several_statistics_since_one_named_wait_share_its_span(
    expression_run: tuple[RunResult, Samples, float],
) -> None:
    result, heard, _ = expression_run
    by = _by_name(result)
    soak = next(s for s in result.steps if s.name == "soak")
    spans = {by[n].t for n in ("error_max", "error_min", "error_mean", "error_moving")}
    assert len(spans) == 1, spans  # taken at one instant: no time passes between the measures
    errors = _errors(heard, soak.started, spans.pop())
    assert {_instants(by[n]) for n in ("error_max", "error_min", "error_mean", "error_moving")} == {len(errors)}
    assert by["error_max"].value == pytest.approx(max(errors), abs=1e-6)
    assert by["error_min"].value == pytest.approx(min(errors), abs=1e-6)
    assert by["error_mean"].value == pytest.approx(1000 * statistics.fmean(errors), abs=1e-3)
    assert by["error_mean"].unit == "mV"
    assert min(errors) < max(errors)  # the expression varies over the span: the statistics differ
    moving = by["error_moving"].value
    assert moving is not None and min(errors) <= moving <= max(errors)
    assert "highest 1 s moving mean of" in by["error_moving"].how


def test_expression_samples_hold_each_signal_at_the_union_of_sample_times() -> None:
    def diff(v: dict[str, float]) -> float | None:
        return v["a"] - v["b"] if "a" in v and "b" in v else None

    values, unknown = expression_samples(
        diff,
        {"b": 1.0},  # held from before the span
        [(2.0, "a", 30.0), (0.0, "a", 10.0), (0.5, "b", 2.0), (2.0, "b", 3.0), (1.0, "a", 20.0)],
    )
    # At 2.0 both samples apply before the expression is evaluated (one instant, not two).
    assert values == [(0.0, 9.0), (0.5, 8.0), (1.0, 18.0), (2.0, 27.0)] and unknown == 0
    # A signal never sampled yet: that instant has no value and is counted, not invented.
    values, unknown = expression_samples(diff, {}, [(0.0, "a", 10.0), (1.0, "b", 2.0)])
    assert values == [(1.0, 8.0)] and unknown == 1


HEAD = """\
id: T-EXPR-BAD
title: bad statistics of expressions
version: 1.0.0
basis: {standard: test, clause: expression statistics}
requires: [psu, bms, pa]
steps:
"""


@pytest.mark.parametrize(
    ("measure", "message"),
    [
        (
            '{name: e, expr: "bms.pack_voltag - pa.voltage_1", stat: mean, window: 10 s}',
            "unknown signal 'bms.pack_voltag'",
        ),
        ('{name: e, expr: "bms.pack_voltage - pa.voltage_1", stat: mean}', "needs a 'window' or 'since'"),
        ('{name: e, expr: "bms.pack_voltage - pa.voltage_1", stat: mean, window: 0 s}', "longer than zero"),
        ('{name: e, expr: "bms.pack_voltage - pa.voltage_1", stat: max, window: 40 d}', "at most 30 days"),
        (
            '{name: e, expr: "bms.pack_voltage - pa.voltage_1", stat: max_moving_mean, over: 20 s, window: 10 s}',
            "the moving window (20 s) is longer than the window it moves in (10 s)",
        ),
        ('{name: e, expr: "2 V * 3", stat: mean, window: 10 s}', "needs an expression that reads signals"),
        ('{name: e, expr: "bms.pack_voltage - pa.voltage_1", stat: mean, since: nowhere}', "neither an @instant"),
        ('{name: e, expr: "bms.contactors", stat: mean, window: 1 s}', "is a state signal; only 'value'"),
    ],
)
def test_bad_statistics_of_expressions_are_one_line_errors(tmp_path: Path, measure: str, message: str) -> None:
    seq = tmp_path / "bad.yaml"
    seq.write_text(HEAD + f"  - measure: {measure}\n")
    run = bench("validate", seq)
    assert run.rc == 2, run.out
    lines: list[Any] = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], run.err


def test_an_expression_without_a_value_in_its_span_is_an_error_that_says_why(tmp_path: Path) -> None:
    seq = tmp_path / "zero.yaml"
    seq.write_text(
        HEAD.replace("T-EXPR-BAD", "T-EXPR-ZERO")
        + "  - set: {psu.voltage_set: 700 V, psu.current_set: 20 A, psu.output: ON}\n"
        + '  - measure: {name: r, expr: "bms.pack_voltage / (psu.voltage_set - psu.voltage_set)",'
        + " stat: mean, window: 1 s}\n"
        + "  - measure: {name: after, signal: psu.voltage}\n"
    )
    run = bench("run", seq, "--reports", tmp_path, "-q")
    assert run.rc == 3, run.out + run.err
    result = run.result()
    assert result["verdict"] == "ERROR"
    assert re.search(
        r"cannot measure mean of \(bms.pack_voltage / \(psu.voltage_set - psu.voltage_set\)\) over 1 s: "
        r"no value at any of its \d+ sample instants \(division by zero\)",
        result["reason"],
    ), result["reason"]
    assert result["measurements"] == []  # nothing is invented, and the steps end there
    assert {r["device"]: r["safe"] for r in result["safe_state"]} == {"psu": True, "bms": True}
