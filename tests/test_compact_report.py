"""The report of a test at several points stays short and says what it measured, not more.

The example sequence (BMS pack voltage against the power analyzer at three SOC points) runs on
the simulated station; its PDF fits in a few pages, measurements without limits are "recorded"
(no verdict), the equipment table lists only the instruments the run used, and the budgets name
their units. A second run, on a station without a ``laboratory:`` section and with one recorded
instant, shows the NOT FOR ISSUE marking and the detail window around the instant.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from bench.plan import load_sequence
from tests.conftest import ROOT, Completed, bench
from tests.report_support import pdf_pages, plain_text, station_copy

EXAMPLE = ROOT / "examples" / "pack_voltage_accuracy_3soc.yaml"
MAX_PAGES = 6

# One recorded instant (@t_closed) early in a run of about 20 s.
MARKED_SEQUENCE = """\
id: TEST-REPORT-DETAIL
title: one recorded instant in a longer run
version: 0.1.0
basis: {standard: test, clause: reporting}
requires: [psu, bms]
display: [bms.contactors, psu.voltage]
record_interval: 1 s
steps:
  - name: close main contactors
    set: {bms.cmd_contactors: CLOSE}
  - name: contactors closed
    wait_until: bms.contactors == CLOSED
    timeout: 5 s
    as: t_closed
  - name: hold
    wait: 20 s
  - measure: {name: pack_voltage, signal: bms.pack_voltage, max: 1000 V}
cleanup:
  - name: open main contactors
    set: {bms.cmd_contactors: OPEN}
"""


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Completed:
    tmp = tmp_path_factory.mktemp("compact")
    r = bench("run", EXAMPLE, "--reports", tmp / "reports", "-q", timeout=300)
    assert r.rc == 0, r.out + r.err
    return r


@pytest.fixture(scope="module")
def no_lab(tmp_path_factory: pytest.TempPathFactory) -> Completed:
    tmp = tmp_path_factory.mktemp("nolab")
    station = station_copy(tmp)
    text = station.read_text(encoding="utf-8")
    without = re.sub(r"^laboratory:\n(?:[ #].*\n|\n)*", "", text, flags=re.M)
    assert not re.search(r"^laboratory:", without, flags=re.M) and "\nequipment:" in without
    station.write_text(without, encoding="utf-8")
    sequence = tmp / "marked.yaml"
    sequence.write_text(MARKED_SEQUENCE, encoding="utf-8")
    r = bench("run", sequence, "--station", station, "--reports", tmp / "reports", "-q", timeout=300)
    assert r.rc == 0, r.out + r.err
    return r


def _html(run: Completed) -> str:
    return (run.run_dir() / "report.html").read_text(encoding="utf-8")


def _row(html: str, first_cell: str) -> str:
    """The table row whose first cell is ``first_cell`` (whole, as HTML)."""
    found = re.findall(r"<tr><td>(?:<[^>]+>)?" + re.escape(first_cell) + r"(?:<[^>]+>)?</td>.*?</tr>", html)
    assert len(found) == 1, (first_cell, found)
    return str(found[0])


def test_the_three_point_example_passes_in_a_compact_pdf(example: Completed) -> None:
    assert example.result()["verdict"] == "PASS"
    pages = pdf_pages(example.run_dir() / "report.pdf")
    assert len(pages) <= MAX_PAGES, f"{len(pages)} pages"
    # Still every page identified, and nothing marked as not for issue: sim.yaml states its laboratory.
    assert all("page " in p and f"TR-{example.result()['run_id']}" in p for p in pages)
    assert "NOT FOR ISSUE" not in " ".join(pages)


def test_measurements_without_limits_are_recorded_without_a_verdict(example: Completed) -> None:
    html = _html(example)
    for point in ("low", "mid", "high"):
        row = _row(html, f"analyzer_voltage_{point}_soc")
        assert "recorded" in row and "PASS" not in row and "conforms" not in row, row
        # The steps table: number, phase, step name, outcome.
        steps_row = re.search(
            rf"<tr><td>\d+</td><td>steps</td><td>measure analyzer_voltage_{point}_soc</td>.*?</tr>", html
        )
        assert steps_row and "recorded" in steps_row[0] and "PASS" not in steps_row[0], steps_row
        limited = _row(html, f"bms_minus_analyzer_{point}_soc")
        assert "PASS" in limited, limited


def test_only_the_instruments_the_run_used_are_listed(example: Completed) -> None:
    used = {q["asset_id"] for q in example.result()["equipment"]}
    assert used == {"SIM-PSU-01", "SIM-PA-01"}, used
    text = plain_text(_html(example))
    assert "SIM-PSU-01" in text and "SIM-PA-01" in text
    for unused in ("SIM-H2-01", "SIM-DAQ-01", "SIM-DAQ-04"):
        assert unused not in text


def test_budget_values_state_their_unit(example: Completed) -> None:
    analyzer = next(m for m in example.result()["measurements"] if m["name"] == "analyzer_voltage_low_soc")
    assert analyzer["uncertainty_budget"], analyzer
    for line in analyzer["uncertainty_budget"]:
        assert re.search(r"u(?:_c)? = [0-9.e+-]+ V\b", line), line
    assert re.search(r"SIM-PA-01 accuracy .*: u = [0-9.]+ V", plain_text(_html(example)))


def test_instrument_trace_states_its_resolution_and_unit(example: Completed, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.report import plots, render
    from bench.result import RunResult

    figures: list[Any] = []

    def keep(fig: Any) -> str:
        figures.append(fig)
        return "png"

    monkeypatch.setattr(plots, "png_base64", keep)
    d = example.run_dir()
    result = RunResult.model_validate_json((d / "result.json").read_text(encoding="utf-8"))
    # Rendered later from the record (the sequence read from its copy), and by the run itself (the
    # sequence it loaded): the same figure.
    _, loaded = load_sequence(EXAMPLE)
    for sequence in (None, loaded):
        figures.clear()
        render._plots(d, result, render.load_events(d), sequence)
        whole = figures[0]
        by_label = {ax.get_ylabel().split("\n")[0]: ax for ax in whole.axes}
        assert list(by_label) == ["bms.pack_voltage", "pa.voltage_1", "bms.soc"]  # the sequence's display order
        analyzer = by_label["pa.voltage_1"]
        assert analyzer.get_ylabel() == "pa.voltage_1\n[V]"
        assert any("recorded every 200 ms (record_interval)" in t.get_text() for t in analyzer.texts)
        assert not by_label["bms.pack_voltage"].texts, "a CAN trace is plotted at its own rate: no note"


def test_without_a_laboratory_the_report_is_marked_not_for_issue(no_lab: Completed) -> None:
    html = _html(no_lab)
    assert re.search(r"<title>[^<]*NOT FOR ISSUE</title>", html)
    assert re.search(r"<h1>Test Report — NOT FOR ISSUE</h1>", html)
    text = plain_text(html)
    for item in ("7.8.2.1 b) name and address of the laboratory", "7.8.2.1 c) location where the tests"):
        assert item in text
    identification = text.split("1. Identification", 1)[1].split("2. Method", 1)[0]
    for clause in ("7.8.2.1 b) Laboratory", "7.8.2.1 c) Location of the tests"):
        cell = identification.split(clause, 1)[1][:80]
        assert cell.strip().startswith("MISSING (mandatory)") and "not applicable" not in cell, cell
    pages = pdf_pages(no_lab.run_dir() / "report.pdf")
    assert all("NOT FOR ISSUE" in p for p in pages), [i for i, p in enumerate(pages, 1) if "NOT FOR ISSUE" not in p]


def test_the_detail_window_spans_two_seconds_either_side(no_lab: Completed) -> None:
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", _html(no_lab))
    details = [c for c in captions if c.startswith("Detail")]
    assert len(details) == 1, captions
    found = re.fullmatch(r"Detail: @t_closed, up to 2 s either side \(([0-9.]+) s to ([0-9.]+) s\)", details[0])
    assert found, details[0]
    events = (no_lab.run_dir() / "events.jsonl").read_text(encoding="utf-8").splitlines()
    closed = next(json.loads(e) for e in events if '"mark":"t_closed"' in e)
    t = closed["sample_t"]
    # The instant is 0.4 s into the run: the window starts at the start of the run, not before it.
    assert 0 < t < 2.0
    assert (float(found[1]), float(found[2])) == (0.0, pytest.approx(t + 2.0, abs=1e-3))
