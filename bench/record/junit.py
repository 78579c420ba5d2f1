"""JUnit XML for CI (GitLab, Jenkins), rendered from a run's ``RunResult``.

One ``<testsuite>`` per run: a ``<testcase>`` per step, one per measurement, and one for the
run verdict, so that a run that failed or aborted outside any step (a monitor, the supervisor)
can never show up green in CI.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from bench.result import Measurement, Outcome, RunResult, StepResult, Verdict

# Characters XML 1.0 forbids even when escaped; device strings can carry them (ESC, NUL), and
# a single one makes CI reject the whole report.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _x(text: object) -> str:
    return _XML_ILLEGAL.sub("\ufffd", str(text))


def _seconds(value: float) -> str:
    return f"{value:.6f}" if math.isfinite(value) and value > 0 else "0.000000"


def _num(value: float | None) -> str:
    """Shortest exact form, so the value shown is the value judged (no rounding onto a limit)."""
    return "none" if value is None else repr(value)


def _limits(m: Measurement) -> str:
    low = "-inf" if m.low is None else repr(m.low)
    high = "+inf" if m.high is None else repr(m.high)
    unit = f" {m.unit}" if m.unit else ""
    return f"[{low}, {high}]{unit}"


def _outcome_child(case: ET.Element, outcome: Outcome | Verdict, message: str, text: str) -> None:
    if outcome in (Outcome.FAIL, Verdict.FAIL):
        tag = "failure"
    elif outcome in (Outcome.ERROR, Outcome.ABORTED, Verdict.ERROR, Verdict.ABORTED):
        tag = "error"
    elif outcome == Outcome.SKIPPED:
        tag = "skipped"
    else:
        return
    el = ET.SubElement(case, tag, {"message": _x(message), "type": str(outcome)})
    if text:
        el.text = _x(text)


def _step_case(suite: ET.Element, classname: str, step: StepResult) -> None:
    name = f"{step.index:02d} {step.name}"
    if step.phase != "steps":
        # Cleanup steps share names with sequence steps ("set"); keep them apart in CI views.
        name += f" [{step.phase}]"
    case = ET.SubElement(
        suite,
        "testcase",
        {"classname": _x(classname), "name": _x(name), "time": _seconds(step.ended - step.started)},
    )
    message = step.message or str(step.outcome)
    detail = f"{step.kind} step at line {step.line}, {step.phase}: {step.outcome}"
    if step.message:
        detail += f"\n{step.message}"
    _outcome_child(case, step.outcome, message, detail)


def _measurement_case(suite: ET.Element, classname: str, m: Measurement) -> None:
    case = ET.SubElement(
        suite, "testcase", {"classname": _x(classname), "name": _x(f"measure: {m.name}"), "time": "0.000000"}
    )
    unit = f" {m.unit}" if m.unit else ""
    message = f"{m.name} = {_num(m.value)}{unit}, limits {_limits(m)}: {m.outcome}"
    detail = f"{message}\nstep: {m.step}\nt: {m.t!r} s\nhow: {m.how}"
    _outcome_child(case, m.outcome, message, detail)


def build_junit(result: RunResult) -> ET.Element:
    """The ``<testsuites>`` element for ``result`` (exposed for tests and other writers)."""
    seq_id = str(result.sequence.get("id", "sequence"))
    root = ET.Element("testsuites", {"name": _x(seq_id)})
    suite = ET.SubElement(root, "testsuite", {"name": _x(seq_id)})

    props = ET.SubElement(suite, "properties")
    faults = ",".join(result.faults)
    for key, value in (
        ("run_id", result.run_id),
        ("verdict", str(result.verdict)),
        ("reason", result.reason),
        ("sequence_version", str(result.sequence.get("version", ""))),
        ("seed", str(result.seed)),
        ("faults", faults),
        ("station", str(result.station.get("id", ""))),
        ("code_version", result.code_version),
    ):
        ET.SubElement(props, "property", {"name": key, "value": _x(value)})

    for step in result.steps:
        _step_case(suite, seq_id, step)
    for m in result.measurements:
        _measurement_case(suite, seq_id, m)
    verdict_case = ET.SubElement(
        suite,
        "testcase",
        {"classname": _x(seq_id), "name": "verdict", "time": _seconds(result.sim_duration_s)},
    )
    _outcome_child(verdict_case, result.verdict, f"{result.verdict}: {result.reason}", result.reason)

    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
    suite.set("errors", str(sum(1 for c in cases if c.find("error") is not None)))
    suite.set("skipped", str(sum(1 for c in cases if c.find("skipped") is not None)))
    suite.set("time", _seconds(result.sim_duration_s))
    suite.set("timestamp", _x(result.started_utc))
    suite.set("hostname", _x(result.station.get("id", "")))
    for attr in ("tests", "failures", "errors", "skipped", "time"):
        root.set(attr, suite.get(attr, ""))
    return root


def write_junit(result: RunResult, path: Path) -> None:
    """Write the JUnit XML report for ``result`` to ``path`` (UTF-8, deterministic)."""
    root = build_junit(result)
    ET.indent(root)
    tree = ET.ElementTree(root)
    with open(path, "wb") as f:
        tree.write(f, encoding="utf-8", xml_declaration=True)
        f.write(b"\n")
