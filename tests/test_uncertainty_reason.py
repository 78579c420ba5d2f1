"""An uncertainty that is "not evaluated" says why: which signal or instant lacks which register data."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest

from tests.conftest import bench

SEQUENCE = """\
id: T-U-REASON
title: why an uncertainty is not evaluated
version: 1.0.0
basis: {standard: test, clause: uncertainty}
requires: [psu, bms, pa]
decision_rule: guard_band
steps:
  - name: discharge
    set: {psu.voltage_set: 700 V, psu.current_set: 20 A, psu.output: ON, bms.cmd_contactors: CLOSE}
    as: t_command
  - name: pack seen
    wait_until: bms.pack_voltage > 100 V
    timeout: 5 s
    as: t_pack
  - name: supply seen
    wait_until: psu.voltage > 100 V
    timeout: 5 s
    as: t_supply
  - wait: 1 s
  - measure: {name: pack_voltage_error, expr: "bms.pack_voltage - pa.voltage_1", stat: mean, window: 2 s}
  - measure: {name: pack, signal: bms.pack_voltage}
  - measure: {name: analyzer_energy, signal: pa.energy_1}
  - measure: {name: contactors, signal: bms.contactors}
  - measure: {name: pack_to_supply, expr: "@t_supply - @t_pack", unit: ms}
  - measure: {name: since_command, expr: "@t_supply - @t_command", unit: ms}
  - measure: {name: supply_vs_analyzer, expr: "psu.voltage - pa.voltage_1"}
  - measure: {name: supply, signal: psu.voltage}
  - measure: {name: pack_in_range, signal: bms.pack_voltage, min: 100 V, max: 1000 V}
cleanup:
  - set: {psu.output: OFF, bms.cmd_contactors: OPEN}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, dict[str, Any]], str]:
    """The measurements of one run by name, and the text of its report."""
    tmp = tmp_path_factory.mktemp("ureason")
    seq = tmp / "u_reason.yaml"
    seq.write_text(SEQUENCE)
    done = bench("run", seq, "--reports", tmp, "-q")
    assert done.rc == 1, done.out + done.err  # pack_in_range: a guard band without U is not accepted
    measurements = {m["name"]: m for m in done.result()["measurements"]}
    return measurements, (done.run_dir() / "report.html").read_text()


def _text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


def _uncertainty_cell(report: str, name: str) -> str:
    """The text of the 'expanded uncertainty' cell in the results table's row of ``name``."""
    for row in re.findall(r"<tr>(.*?)</tr>", report, re.S):
        cells = [_text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        if len(cells) == 7 and cells[0] == name:
            return cells[2]
    raise AssertionError(f"no row of {name} in the results table")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (
            "pack_voltage_error",
            "bms.pack_voltage: no register entry (device bms is not in the equipment register, no signal_sources entry)",
        ),
        (
            "pack",
            "bms.pack_voltage: no register entry (device bms is not in the equipment register, no signal_sources entry)",
        ),
        ("analyzer_energy", "pa.energy_1: no register entry (SIM-PA-01 of device pa states no accuracy of energy_1"),
        ("contactors", "bms.contactors: its signal_sources entry states neither accuracy nor resolution"),
        (
            "pack_in_range",
            "bms.pack_voltage: no register entry (device bms is not in the equipment register, no signal_sources entry)",
        ),
        ("pack_to_supply", "@t_pack: the update period of bms.pack_voltage is unknown (no signal_sources entry)"),
        ("since_command", "@t_command is the instant a command went out by step 'discharge'"),
        ("supply_vs_analyzer", "an expression that combines signal values is not propagated"),
    ],
)
def test_not_evaluated_names_the_signal_and_what_is_missing(
    run: tuple[dict[str, dict[str, Any]], str], name: str, reason: str
) -> None:
    measurements, report = run
    m = measurements[name]
    assert m["uncertainty"] is None
    assert m["uncertainty_budget"] == [m["uncertainty_budget"][0]] and m["uncertainty_budget"][0].startswith(
        "not evaluated: "
    )
    assert reason in m["uncertainty_budget"][0], m["uncertainty_budget"]
    # The report's cell carries the reason, in the row of the measurement.
    cell = _uncertainty_cell(report, name)
    assert cell.startswith("not evaluated: ") and reason in cell, cell


def test_an_evaluated_uncertainty_keeps_its_budget(run: tuple[dict[str, dict[str, Any]], str]) -> None:
    measurements, report = run
    supply = measurements["supply"]
    assert supply["uncertainty"] is not None and supply["uncertainty"] > 0
    assert "SIM-PSU-01 accuracy" in supply["uncertainty_budget"][0]
    assert _uncertainty_cell(report, "supply") == f"{supply['uncertainty']:g}"
    budgets = _text(report.split("Uncertainty budgets", 1)[1].split("</ul>", 1)[0])
    assert "supply: SIM-PSU-01 accuracy" in budgets
    # Only an evaluated U is listed as a budget; an unknown one says why in its cell.
    assert "not evaluated" not in budgets


def test_a_guard_band_refused_for_want_of_u_says_why_u_is_unknown(run: tuple[dict[str, dict[str, Any]], str]) -> None:
    measurements, _ = run
    m = measurements["pack_in_range"]
    assert m["outcome"] == "FAIL"
    assert m["decision"] == (
        "guard band w = U (ILAC-G8:09/2019 4.2.2) required, but U is unknown: not accepted; U not evaluated: "
        "bms.pack_voltage: no register entry (device bms is not in the equipment register, no signal_sources entry)"
    )
