"""What a run's names and lines say agrees with what happened.

* an unnamed step of the steps and one of the cleanup get different default names;
* the verdict line of an unsafe end does not say that everything passed;
* the step stopped by a ``then: fail`` monitor is FAIL, like the verdict the monitor gives;
* an operator prompt nobody answers in time is ERROR, like one nobody can be asked;
* a value measured without limits is "recorded" on the console, not PASS: it has no verdict.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.plan import build_plan
from tests.conftest import ROOT, SIM_STATION, bench

HEAD = """id: TEST-WORDING
title: wording
version: 1.0.0
basis: {standard: test, clause: wording}
requires: [psu, bms]
"""


def write(tmp_path: Path, body: str, name: str = "seq.yaml") -> Path:
    path = tmp_path / name
    path.write_text(HEAD + body)
    return path


def events(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


def test_unnamed_steps_and_cleanup_steps_have_distinct_default_names(tmp_path: Path) -> None:
    seq = write(
        tmp_path,
        "steps:\n  - set: {psu.voltage_set: 10 V}\n  - wait: 1 s\ncleanup:\n  - set: {psu.output: OFF}\n  - wait: 1 s\n",
    )
    plan = build_plan(seq, SIM_STATION)
    assert [s.name for s in plan.steps] == ["01 set", "02 wait"]
    assert [s.name for s in plan.cleanup] == ["cleanup 01 set", "cleanup 02 wait"]


def test_the_verdict_line_of_an_unsafe_end_does_not_say_all_steps_passed(tmp_path: Path) -> None:
    seq = write(
        tmp_path,
        "steps:\n  - name: close the contactors\n    set: {bms.cmd_contactors: CLOSE}\n"
        "  - wait_until: bms.contactors == CLOSED\n    timeout: 5 s\n"
        "cleanup:\n  - set: {psu.output: OFF}\n",
    )
    r = bench("run", seq, "--reports", tmp_path, "--fault", "contactor_welded", "-q")
    result = r.result()
    assert r.rc == 5, r.out + r.err
    assert result["verdict"] == "ERROR" and result["unsafe_end"] is True
    assert "all steps passed" not in result["reason"], result["reason"]
    assert result["reason"].startswith("UNSAFE END: safe state not confirmed for bms"), result["reason"]
    verdict_line = next(line for line in r.out.splitlines() if line.startswith("ERROR "))
    assert "all steps passed" not in verdict_line and "UNSAFE END" in verdict_line, r.out


def test_a_then_fail_monitor_fails_the_step_it_stops(tmp_path: Path) -> None:
    seq = write(
        tmp_path,
        "monitors:\n  - name: supply voltage above 50 V\n    when: psu.voltage > 50 V\n    then: fail\n"
        "steps:\n  - name: supply on\n    set: {psu.voltage_set: 100 V, psu.current_set: 1 A, psu.output: ON}\n"
        "  - name: hold\n    wait: 1 min\n"
        "cleanup:\n  - name: supply off\n    set: {psu.output: OFF}\n",
    )
    r = bench("run", seq, "--reports", tmp_path)
    result = r.result()
    assert r.rc == 1, r.out + r.err
    assert result["verdict"] == "FAIL"
    outcomes = {s["name"]: s["outcome"] for s in result["steps"]}
    assert outcomes["hold"] == "FAIL", outcomes
    ended = [e for e in events(r.run_dir()) if e["kind"] == "step_ended" and e["step"] == "hold"]
    assert ended[0]["outcome"] == "FAIL"
    assert "ABORTED" not in r.out, r.out
    assert "    FAIL monitor 'supply voltage above 50 V' tripped" in r.out, r.out


def test_the_safety_doc_says_an_unanswered_prompt_is_error() -> None:
    text = (ROOT / "docs" / "safety.md").read_text()
    section = text.split("## Operator prompts", 1)[1].split("\n## ", 1)[0]
    assert "prompt without an answer fails" not in section
    assert "ERROR" in section and "17025" in section


def test_a_value_without_limits_is_recorded_not_passed_on_the_console(tmp_path: Path) -> None:
    seq = write(
        tmp_path,
        "steps:\n  - name: supply on\n    set: {psu.voltage_set: 10 V, psu.current_set: 1 A, psu.output: ON}\n"
        "  - wait: 1 s\n  - measure: {name: supply_voltage, signal: psu.voltage}\n"
        "  - measure: {name: supply_current, signal: psu.current, max: 2 A}\n"
        "cleanup:\n  - set: {psu.output: OFF}\n",
    )
    r = bench("run", seq, "--reports", tmp_path)
    assert r.rc == 0, r.out + r.err
    lines = {line.split()[1]: line.split()[0] for line in r.out.splitlines() if line.startswith("  ") and " = " in line}
    assert lines == {"supply_voltage": "recorded", "supply_current": "PASS"}, r.out
