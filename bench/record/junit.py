"""JUnit XML for CI (GitLab, Jenkins), rendered from a run's ``RunResult``.

One ``<testsuite>`` per run: a ``<testcase>`` per step, one per measurement, and one for the
run verdict, so that a run that failed or aborted outside any step (a monitor, the supervisor)
can never show up green in CI.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from xml.sax.saxutils import escape

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


# The outcomes that CI counts, and the element that says so (a PASS has none).
_CHILD = {
    Outcome.FAIL: "failure",
    Outcome.ERROR: "error",
    Outcome.ABORTED: "error",
    Outcome.SKIPPED: "skipped",
    Verdict.FAIL: "failure",
    Verdict.ERROR: "error",
    Verdict.ABORTED: "error",
}


# ElementTree's escaping of an attribute value (CR, LF and TAB as references), so the file is
# the one it wrote; the standard library's escape does the three markup characters first.
_ATTR_ENTITIES = {'"': "&quot;", "\r": "&#13;", "\n": "&#10;", "\t": "&#09;"}


def _attr(text: str) -> str:
    return escape(text, _ATTR_ENTITIES)


def _cdata(text: str) -> str:
    return escape(text)


def _case(attrs: str, outcome: Outcome | Verdict, message: str, text: str) -> tuple[str, str | None]:
    """One ``<testcase>`` (its attributes already written), indented; and the tag of its outcome child."""
    tag = _CHILD.get(outcome)
    if tag is None:
        return f"    <testcase{attrs} />\n", None
    child = f'<{tag} message="{_attr(_x(message))}" type="{_attr(str(outcome))}"'
    child += f">{_cdata(_x(text))}</{tag}>" if text else " />"
    return f"    <testcase{attrs}>\n      {child}\n    </testcase>\n", tag


def _step_case(classname: str, step: StepResult) -> tuple[str, str | None]:
    name = f"{step.index:02d} {step.name}"
    if step.phase != "steps":
        # Cleanup steps share names with sequence steps ("set"); keep them apart in CI views.
        name += f" [{step.phase}]"
    attrs = f' classname="{classname}" name="{_attr(_x(name))}" time="{_seconds(step.ended - step.started)}"'
    message = step.message or str(step.outcome)
    detail = f"{step.kind} step at line {step.line}, {step.phase}: {step.outcome}"
    if step.message:
        detail += f"\n{step.message}"
    return _case(attrs, step.outcome, message, detail)


def _measurement_case(classname: str, m: Measurement) -> tuple[str, str | None]:
    attrs = f' classname="{classname}" name="{_attr(_x(f"measure: {m.name}"))}" time="0.000000"'
    unit = f" {m.unit}" if m.unit else ""
    message = f"{m.name} = {_num(m.value)}{unit}, limits {_limits(m)}: {m.outcome}"
    detail = f"{message}\nstep: {m.step}\nt: {m.t!r} s\nhow: {m.how}"
    return _case(attrs, m.outcome, message, detail)


def render_junit(result: RunResult) -> str:
    """The JUnit XML document for ``result``, as text.

    Written as text rather than built as an ElementTree and serialised: the same bytes
    (tests/test_junit_html.py holds them to ElementTree's), at a fifth of the cost, which for a
    long sequence was a measurable part of the engine's cost per step.
    """
    seq_id = str(result.sequence.get("id", "sequence"))
    classname = _attr(_x(seq_id))
    cases = [_step_case(classname, step) for step in result.steps]
    cases += [_measurement_case(classname, m) for m in result.measurements]
    cases.append(
        _case(
            f' classname="{classname}" name="verdict" time="{_seconds(result.sim_duration_s)}"',
            result.verdict,
            f"{result.verdict}: {result.reason}",
            result.reason,
        )
    )
    tags = [tag for _, tag in cases]
    counts = (
        f' tests="{len(cases)}" failures="{tags.count("failure")}" errors="{tags.count("error")}"'
        f' skipped="{tags.count("skipped")}" time="{_seconds(result.sim_duration_s)}"'
    )
    properties = (
        ("run_id", result.run_id),
        ("verdict", str(result.verdict)),
        ("reason", result.reason),
        ("sequence_version", str(result.sequence.get("version", ""))),
        ("seed", str(result.seed)),
        ("faults", ",".join(result.faults)),
        ("station", str(result.station.get("id", ""))),
        ("code_version", result.code_version),
    )
    head = [
        "<?xml version='1.0' encoding='utf-8'?>\n",
        f'<testsuites name="{classname}"{counts}>\n',
        f'  <testsuite name="{classname}"{counts} timestamp="{_attr(_x(result.started_utc))}"'
        f' hostname="{_attr(_x(str(result.station.get("id", ""))))}">\n',
        "    <properties>\n",
        *(f'      <property name="{key}" value="{_attr(_x(value))}" />\n' for key, value in properties),
        "    </properties>\n",
    ]
    return "".join([*head, *(text for text, _ in cases), "  </testsuite>\n</testsuites>\n"])


def write_junit(result: RunResult, path: Path) -> None:
    """Write the JUnit XML report for ``result`` to ``path`` (UTF-8, deterministic)."""
    with open(path, "wb") as f:
        f.write(render_junit(result).encode("utf-8"))
