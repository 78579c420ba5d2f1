"""An unknown signal, parameter, instant or state comes with the closest known name (issue 15).

A technician who writes ``bms.cell_voltage_max`` must learn it is ``bms.cell_v_max`` from the
error itself, without reading the DBC. Each case goes through ``bench validate`` / ``bench run``,
the way a technician meets it; the suggestion comes from one helper (bench/suggest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.suggest import did_you_mean
from tests.conftest import OVERCHARGE, bench

HEADER = """\
id: DYM
title: did you mean
version: 1.0.0
basis: {standard: test, clause: "0"}
requires: [psu, bms]
"""


def _validate(tmp_path: Path, body: str) -> str:
    seq = tmp_path / "seq.yaml"
    seq.write_text(HEADER + body, encoding="utf-8")
    r = bench("validate", seq)
    assert r.rc == 2, r.out + r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.err
    assert "Traceback" not in r.err
    return lines[0]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # The reviewer's own typo: a long name for a short one.
        ("steps:\n  - check: bms.cell_voltage_max < 4.2 V\n", "did you mean 'bms.cell_v_max'?"),
        ("steps:\n  - check: psu.voltag < 10 V\n", "did you mean 'psu.voltage'?"),
        # In a set, a wait and a display too: every site resolves names through one function.
        ("steps:\n  - set: {psu.curent_set: 1 A}\n", "did you mean 'psu.current_set'?"),
        ("display: [bms.soc_pct]\nsteps:\n  - wait: 1 s\n", "did you mean 'bms.soc'?"),
        # A device typo is suggested among the devices.
        ("steps:\n  - check: bsm.soc < 90 %\n", "did you mean 'bms'?"),
    ],
)
def test_unknown_signal_suggests_the_closest(tmp_path: Path, body: str, message: str) -> None:
    line = _validate(tmp_path, body)
    assert "unknown" in line and message in line, line


def test_unknown_state_suggests_the_closest(tmp_path: Path) -> None:
    line = _validate(tmp_path, "steps:\n  - check: bms.contactors == OPNE\n")
    assert "has no state 'OPNE'" in line and "did you mean 'OPEN'?" in line, line
    line = _validate(tmp_path, "steps:\n  - set: {bms.cmd_contactors: CLOSD}\n")
    assert "has no state 'CLOSD'" in line and "did you mean 'CLOSE" in line, line


def test_unknown_parameter_in_an_expression_suggests_the_closest(tmp_path: Path) -> None:
    body = "parameters:\n  v_max: {default: 4.2 V}\nsteps:\n  - check: bms.cell_v_max < $vmax\n"
    line = _validate(tmp_path, body)
    assert "unknown parameter '$vmax'" in line and "did you mean '$v_max'?" in line, line


def test_unknown_instant_suggests_the_closest(tmp_path: Path) -> None:
    body = "steps:\n  - wait_until: bms.soc > 1 %\n    timeout: 1 s\n    as: t_start\n  - wait: 1 s\n"
    body += "  - check: '@t_strat < 5 s'\n"
    line = _validate(tmp_path, body)
    assert "unknown instant '@t_strat'" in line and "did you mean '@t_start'?" in line, line
    # The span of a statistic names its start the same way.
    body = "steps:\n  - wait_until: bms.soc > 1 %\n    timeout: 1 s\n    as: t_start\n  - wait: 1 s\n"
    body += "  - measure: {name: v, signal: bms.pack_voltage, stat: max, since: '@t_strat'}\n"
    line = _validate(tmp_path, body)
    assert "unknown instant '@t_strat'" in line and "did you mean '@t_start'?" in line, line


def test_unknown_parameter_on_the_command_line_suggests_the_closest(tmp_path: Path) -> None:
    r = bench("run", OVERCHARGE, "--reports", tmp_path, "-p", "charge_curent=5 A")
    assert r.rc == 2, r.out + r.err
    assert len(r.err.strip().splitlines()) == 1, r.err
    assert "-p charge_curent: unknown parameter" in r.err and "did you mean 'charge_current'?" in r.err, r.err
    assert not any(tmp_path.iterdir()), "nothing may be run or recorded for bad input"


def test_nothing_close_suggests_nothing(tmp_path: Path) -> None:
    line = _validate(tmp_path, "steps:\n  - check: bms.zzzzzzzz_qqq < 1 V\n")
    assert "unknown signal 'bms.zzzzzzzz_qqq'" in line and "did you mean" not in line, line


def test_helper() -> None:
    assert did_you_mean("OPNE", ["OPEN", "CLOSED"]) == "; did you mean 'OPEN'?"
    # Case does not hide a match, and the candidate is given as it is spelled.
    assert did_you_mean("open", ["OPEN", "CLOSED"]) == "; did you mean 'OPEN'?"
    assert did_you_mean("xyz", ["OPEN", "CLOSED"]) == ""
    assert did_you_mean("t_strat", ["t_start"], prefix="@") == "; did you mean '@t_start'?"


@pytest.mark.parametrize(
    ("initial", "message"),
    [
        (
            "{cmd_contactor: OPEN}",
            "initial: 'cmd_contactor' is not a signal the bench sends; did you mean 'cmd_contactors'?",
        ),
        ("{cmd_contactors: OPNE}", "has no state 'OPNE' (states: OPEN, CLOSE); did you mean 'OPEN'?"),
    ],
)
def test_station_initial_value_suggests_the_closest(tmp_path: Path, initial: str, message: str) -> None:
    root = Path(__file__).resolve().parent.parent
    text = (root / "stations" / "sim.yaml").read_text(encoding="utf-8").replace("../dbc/", f"{root}/dbc/")
    assert "initial: {cmd_contactors: OPEN}" in text
    station = tmp_path / "station.yaml"
    station.write_text(text.replace("initial: {cmd_contactors: OPEN}", f"initial: {initial}"), encoding="utf-8")
    r = bench("validate", station)
    assert r.rc == 2, r.out + r.err
    assert len(r.err.strip().splitlines()) == 1 and message in r.err, r.err


def test_campaign_parameter_suggests_the_closest(tmp_path: Path) -> None:
    r = bench("campaign", OVERCHARGE, "--faults", "none", "--reports", tmp_path, "-p", "charge_curent=5 A")
    assert r.rc == 2, r.out + r.err
    assert "-p charge_curent: no sequence declares this parameter; did you mean 'charge_current'?" in r.err, r.err
    assert not any(tmp_path.iterdir()), "nothing may be run for bad input"
