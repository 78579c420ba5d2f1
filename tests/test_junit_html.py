"""JUnit XML and HTML renderers, fed a RunResult built here."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bench.record import write_junit, write_report_html
from bench.result import (
    DeviceIdentity,
    Measurement,
    Outcome,
    Parameter,
    RunResult,
    SafeStateReadback,
    StepResult,
    Verdict,
)

SEQ_ID = "R100-9G-OVERCHARGE"


def _step(index: int, name: str, outcome: Outcome, started: float, ended: float, **kw: str) -> StepResult:
    return StepResult(
        index=index,
        name=name,
        kind=kw.pop("kind", "set"),
        phase=kw.pop("phase", "steps"),
        line=10 + index,
        outcome=outcome,
        started=started,
        ended=ended,
        **kw,
    )


@pytest.fixture
def result() -> RunResult:
    return RunResult(
        run_id="0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        verdict=Verdict.FAIL,
        reason="cell_v_at_interrupt above limit <4.30 V> & contactors late",
        sequence={
            "id": SEQ_ID,
            "title": "Overcharge protection",
            "version": "1.0.0",
            "basis": {"standard": "UN R100 Rev.3", "clause": "6.7, Annex 9G"},
            "path": "sequences/r100/overcharge.yaml",
            "sha256": "ab" * 32,
        },
        station={"id": "sim", "path": "stations/sim.yaml", "sha256": "cd" * 32, "simulated": True},
        parameters=[
            Parameter(name="charge_current", value="60 A", default="50 A", overridden=True, doc=">= C/3"),
            Parameter(name="max_duration", value="12 h", default="12 h", overridden=False),
        ],
        faults=["bms.contactor_stuck_closed"],
        seed=1234,
        started_utc="2025-01-02T03:04:05Z",
        ended_utc="2025-01-02T03:05:05Z",
        sim_duration_s=3600.5,
        wall_duration_s=2.25,
        steps=[
            _step(1, "set", Outcome.PASS, 0.0, 0.001),
            _step(2, "wait_until", Outcome.FAIL, 0.001, 3600.0, kind="wait_until", message="timeout after 1 h"),
            _step(3, "measure", Outcome.ERROR, 3600.0, 3600.1, kind="measure", message="no sample \x1b[0m"),
            _step(4, "prompt <operator>", Outcome.SKIPPED, 3600.1, 3600.1, kind="prompt", message="skipped"),
            _step(5, "hold", Outcome.ABORTED, 3600.1, 3600.2, kind="hold", message="abort requested"),
            _step(6, "set", Outcome.PASS, 3600.2, 3600.5, phase="cleanup"),
        ],
        measurements=[
            Measurement(
                name="cell_v_at_interrupt",
                step="measure",
                value=4.3500001,
                unit="V",
                high=4.30,
                outcome=Outcome.FAIL,
                t=3599.999999,
                how="max of bms.cell_v_max since charge",
            ),
            Measurement(
                name="t_interrupt",
                step="wait_until",
                value=12.5,
                unit="s",
                low=0.0,
                high=30.0,
                outcome=Outcome.PASS,
                t=12.5,
                how="mark",
            ),
            Measurement(
                name="temp<max>&co",
                step="measure",
                value=None,
                unit="degC",
                outcome=Outcome.ERROR,
                t=3600.0,
                how="no value",
            ),
        ],
        marks={"t_interrupt": 12.5},
        devices=[
            DeviceIdentity(name="psu", driver="ea_psb", identity={"idn": "EA,PSB 10080-60,123,1.2"}),
            DeviceIdentity(name="bms", driver="can_dbc"),
        ],
        safe_state=[
            SafeStateReadback(device="psu", safe=True, detail="output off", t=3600.4),
            SafeStateReadback(device="bms", safe=False, detail="contactors CLOSED", t=3600.45),
        ],
        code_version="0.1.0+g1234abc",
    )


def _suite(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    return suite


def test_junit_counts_and_cases(result: RunResult, tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    write_junit(result, path)
    suite = _suite(path)
    cases = suite.findall("testcase")
    # 6 steps + 3 measurements + the run verdict
    assert len(cases) == 10
    assert suite.get("name") == SEQ_ID
    assert suite.get("tests") == "10"
    assert suite.get("failures") == "3"  # step 2, cell_v measurement, verdict
    assert suite.get("errors") == "3"  # step 3 ERROR, step 5 ABORTED, temp measurement
    assert suite.get("skipped") == "1"
    assert float(suite.get("time", "nan")) == pytest.approx(3600.5)
    assert {c.get("classname") for c in cases} == {SEQ_ID}

    names = [c.get("name") for c in cases]
    assert names[:6] == [
        "01 set",
        "02 wait_until",
        "03 measure",
        "04 prompt <operator>",
        "05 hold",
        "06 set [cleanup]",
    ]
    assert names[6:] == ["measure: cell_v_at_interrupt", "measure: t_interrupt", "measure: temp<max>&co", "verdict"]
    assert float(cases[1].get("time", "nan")) == pytest.approx(3599.999)

    failure = cases[1].find("failure")
    assert failure is not None and failure.get("message") == "timeout after 1 h"
    assert cases[2].find("error") is not None
    assert "\x1b" not in (cases[2].find("error").get("message") or "")  # type: ignore[union-attr]
    assert cases[3].find("skipped") is not None
    aborted = cases[4].find("error")
    assert aborted is not None and aborted.get("type") == "ABORTED"
    assert list(cases[0]) == [] and list(cases[5]) == []

    m_fail = cases[6].find("failure")
    assert m_fail is not None
    assert "4.3500001 V" in (m_fail.get("message") or "")
    assert "[-inf, 4.3] V" in (m_fail.get("message") or "")
    assert list(cases[7]) == []
    verdict = cases[9].find("failure")
    assert verdict is not None and "contactors late" in (verdict.get("message") or "")


def test_junit_properties(result: RunResult, tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    write_junit(result, path)
    props = {p.get("name"): p.get("value") for p in _suite(path).iter("property")}
    assert props["run_id"] == result.run_id
    assert props["verdict"] == "FAIL"
    assert props["reason"] == result.reason
    assert props["sequence_version"] == "1.0.0"
    assert props["seed"] == "1234"
    assert props["faults"] == "bms.contactor_stuck_closed"


def test_junit_passing_run_has_no_failures(result: RunResult, tmp_path: Path) -> None:
    passing = result.model_copy(
        update={
            "verdict": Verdict.PASS,
            "reason": "all limits met",
            "steps": [s.model_copy(update={"outcome": Outcome.PASS}) for s in result.steps],
            "measurements": [result.measurements[1]],
        }
    )
    path = tmp_path / "junit.xml"
    write_junit(passing, path)
    suite = _suite(path)
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == (
        "8",
        "0",
        "0",
        "0",
    )


def test_html_report_content(result: RunResult, tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    write_report_html(result, path)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert 'class="verdict FAIL">FAIL<' in text
    for m in result.measurements:
        assert f"<td>{m.name.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')}</td>" in text
    assert "temp&lt;max&gt;&amp;co" in text
    assert "temp<max>" not in text
    assert "prompt &lt;operator&gt;" in text
    assert "\x1b" not in text
    assert "above limit &lt;4.30 V&gt; &amp; contactors late" in text
    assert "4.3500001" in text
    assert "UN R100 Rev.3" in text and "6.7, Annex 9G" in text
    assert "EA,PSB 10080-60,123,1.2" in text
    assert "contactors CLOSED" in text and "NOT SAFE" in text
    assert "bms.contactor_stuck_closed" in text
    assert '<td class="overridden">charge_current</td>' in text
    assert "0.1.0+g1234abc" in text
    assert text.rstrip().endswith("</html>") and "End of report" in text
    # self-contained: nothing fetched from elsewhere
    for needle in ("http://", "https://", "src=", "<link", "<script"):
        assert needle not in text


def test_html_is_deterministic(result: RunResult, tmp_path: Path) -> None:
    a, b = tmp_path / "a.html", tmp_path / "b.html"
    write_report_html(result, a)
    write_report_html(RunResult.model_validate_json(result.model_dump_json()), b)
    assert a.read_bytes() == b.read_bytes()


def test_html_empty_sections(result: RunResult, tmp_path: Path) -> None:
    bare = result.model_copy(
        update={"steps": [], "measurements": [], "marks": {}, "faults": [], "safe_state": [], "parameters": []}
    )
    path = tmp_path / "report.html"
    write_report_html(bare, path)
    text = path.read_text(encoding="utf-8")
    assert "No measurements." in text and "No steps were run." in text


def _elementtree_junit(result: RunResult) -> bytes:
    """The document as ElementTree builds, indents and writes it: the form CI tools read, and the
    one the text writer of bench/record/junit.py must reproduce byte for byte."""
    from bench.record.junit import _limits, _num, _seconds, _x

    def child(case: ET.Element, outcome: Outcome | Verdict, message: str, text: str) -> None:
        tag = {"FAIL": "failure", "ERROR": "error", "ABORTED": "error", "SKIPPED": "skipped"}.get(str(outcome))
        if tag is not None:
            el = ET.SubElement(case, tag, {"message": _x(message), "type": str(outcome)})
            if text:
                el.text = _x(text)

    seq_id = str(result.sequence.get("id", "sequence"))
    root = ET.Element("testsuites", {"name": _x(seq_id)})
    suite = ET.SubElement(root, "testsuite", {"name": _x(seq_id)})
    props = ET.SubElement(suite, "properties")
    for key, value in (
        ("run_id", result.run_id),
        ("verdict", str(result.verdict)),
        ("reason", result.reason),
        ("sequence_version", str(result.sequence.get("version", ""))),
        ("seed", str(result.seed)),
        ("faults", ",".join(result.faults)),
        ("station", str(result.station.get("id", ""))),
        ("code_version", result.code_version),
    ):
        ET.SubElement(props, "property", {"name": key, "value": _x(value)})
    for s in result.steps:
        name = f"{s.index:02d} {s.name}" + (f" [{s.phase}]" if s.phase != "steps" else "")
        case = ET.SubElement(
            suite, "testcase", {"classname": _x(seq_id), "name": _x(name), "time": _seconds(s.ended - s.started)}
        )
        detail = f"{s.kind} step at line {s.line}, {s.phase}: {s.outcome}" + (f"\n{s.message}" if s.message else "")
        child(case, s.outcome, s.message or str(s.outcome), detail)
    for m in result.measurements:
        case = ET.SubElement(
            suite, "testcase", {"classname": _x(seq_id), "name": _x(f"measure: {m.name}"), "time": "0.000000"}
        )
        unit = f" {m.unit}" if m.unit else ""
        message = f"{m.name} = {_num(m.value)}{unit}, limits {_limits(m)}: {m.outcome}"
        child(case, m.outcome, message, f"{message}\nstep: {m.step}\nt: {m.t!r} s\nhow: {m.how}")
    verdict = ET.SubElement(
        suite, "testcase", {"classname": _x(seq_id), "name": "verdict", "time": _seconds(result.sim_duration_s)}
    )
    child(verdict, result.verdict, f"{result.verdict}: {result.reason}", result.reason)
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    for tag, attr in (("failure", "failures"), ("error", "errors"), ("skipped", "skipped")):
        suite.set(attr, str(sum(1 for c in cases if c.find(tag) is not None)))
    suite.set("time", _seconds(result.sim_duration_s))
    suite.set("timestamp", _x(result.started_utc))
    suite.set("hostname", _x(result.station.get("id", "")))
    for attr in ("tests", "failures", "errors", "skipped", "time"):
        root.set(attr, suite.get(attr, ""))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


@pytest.mark.parametrize("verdict", [Verdict.FAIL, Verdict.PASS, Verdict.ERROR, Verdict.ABORTED])
def test_junit_is_the_bytes_elementtree_writes(result: RunResult, tmp_path: Path, verdict: Verdict) -> None:
    tricky = "a & b < c > d \"q\" 's'\ttab\r\ncrlf \x00nul \ud800 ✓"
    result = result.model_copy(
        update={
            "verdict": verdict,
            "reason": "" if verdict == Verdict.ERROR else tricky,
            "sequence": {**result.sequence, "id": f"ID {tricky}"},
            "station": {**result.station, "id": tricky},
            "started_utc": tricky,
            "code_version": tricky,
            "steps": [*result.steps, _step(7, tricky, Outcome.FAIL, 1.0, 0.5, message=tricky)],
        }
    )
    path = tmp_path / "junit.xml"
    write_junit(result, path)
    assert path.read_bytes() == _elementtree_junit(result)
