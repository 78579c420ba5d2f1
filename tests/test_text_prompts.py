"""Text prompts: a serial number or a remark is recorded as it is written, and never judged.

A small sequence runs end to end on stations/sim.yaml, answered from a file and, on the wall
clock, by a person at a terminal (a pseudo-terminal here). The answer appears verbatim (leading
zeros kept) in the report's identification, in result.json and in the events; it is no
measurement and gets no PASS. An answer its pattern refuses is one error line before anything
moves (answers file), or is asked again (terminal).
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, bench
from tests.report_support import plain_text

SEQUENCE = """id: TEST-TEXT-PROMPTS
title: text prompts
version: 1.0.0
basis: {standard: test, clause: text prompts}
requires: [psu, bms]
steps:
  - name: DUT serial number
    prompt:
      text: DUT serial number (10 digits, from the type plate)
      answer: text
      pattern: "^[0-9]{10}$"
      record: identification
      timeout: TIMEOUT
  - name: remarks on receipt
    prompt:
      text: Remarks on the item as received
      answer: text
      record: remark
      timeout: TIMEOUT
  - name: confirm enclosure closed
    prompt:
      text: Confirm the enclosure is closed
      timeout: TIMEOUT
cleanup:
  - set: {psu.output: OFF}
"""

SERIAL = "0000012345"


def sequence(tmp_path: Path, timeout: str = "30 min") -> Path:
    path = tmp_path / "text_prompts.yaml"
    path.write_text(SEQUENCE.replace("TIMEOUT", timeout))
    return path


def answers(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "answers.yaml"
    path.write_text(text)
    return path


def events(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


def test_a_serial_number_from_an_answers_file_is_identification_verbatim(tmp_path: Path) -> None:
    file = answers(
        tmp_path,
        f"DUT serial number: {SERIAL}\nremarks on receipt: packaging dented, item intact\n"
        "confirm enclosure closed: yes\n",
    )
    r = bench("run", sequence(tmp_path), "--reports", tmp_path, "--answers", file)
    assert r.rc == 0, r.out + r.err
    result = r.result()
    assert result["verdict"] == "PASS"
    entries = [(x["step"], x["answer"], x["record"]) for x in result["operator_entries"]]
    assert entries == [
        ("DUT serial number", SERIAL, "identification"),
        ("remarks on receipt", "packaging dented, item intact", "remark"),
    ]
    assert all(str(file) in x["source"] for x in result["operator_entries"])
    # Never a measurement, never judged.
    assert result["measurements"] == []
    assert "= 12345" not in r.out and "PASS DUT serial" not in r.out, r.out
    answered = {e["step"]: e for e in events(r.run_dir()) if e["kind"] == "prompt_answered"}
    assert answered["DUT serial number"]["answer"] == SERIAL
    assert answered["DUT serial number"]["record"] == "identification"
    assert answered["remarks on receipt"]["record"] == "remark"
    assert "record" not in answered["confirm enclosure closed"]

    html = plain_text((r.run_dir() / "report.html").read_text())
    item = html.split("3. Item tested", 1)[1].split("4. Test conditions", 1)[0]
    assert f"Identification (entered by the operator) DUT serial number (10 digits, from the type plate): {SERIAL}" in (
        item
    ), item
    assert "Remarks of the operator Remarks on the item as received: packaging dented, item intact" in item, item
    results = html.split("6. Results", 1)[1].split("8. Deviations", 1)[0]
    assert SERIAL not in results and "12345" not in results and "serial" not in results, results


def test_an_answer_the_pattern_refuses_is_one_error_line_before_anything_moves(tmp_path: Path) -> None:
    file = answers(tmp_path, "confirm enclosure closed: yes\nDUT serial number: 12345\nremarks on receipt: none\n")
    reports = tmp_path / "reports"
    r = bench("run", sequence(tmp_path), "--reports", reports, "--answers", file, "-q")
    assert r.rc == 2, r.out + r.err
    assert r.err.strip().splitlines() == [
        "error: "
        f"{file}:2: DUT serial number: not an answer to prompt 'DUT serial number': "
        "'12345' does not match the pattern ^[0-9]{10}$"
    ], r.err
    assert "Traceback" not in r.err
    assert not reports.exists() or not any(reports.iterdir()), "no run was started"


def test_an_answer_to_no_prompt_step_is_refused(tmp_path: Path) -> None:
    file = answers(tmp_path, f"DUT serial numbr: {SERIAL}\n")
    r = bench("run", sequence(tmp_path), "--reports", tmp_path / "reports", "--answers", file, "-q")
    assert r.rc == 2, r.out + r.err
    assert f"{file}:1: DUT serial numbr: the sequence has no prompt step 'DUT serial numbr'" in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1, r.err


def test_a_text_prompt_needs_to_say_where_it_is_recorded(tmp_path: Path) -> None:
    path = sequence(tmp_path)
    path.write_text(path.read_text().replace("      record: remark\n", ""))
    r = bench("validate", path)
    assert r.rc == 2, r.out + r.err
    assert "steps[1].prompt.record: a text answer needs 'record: identification' or 'record: remark'" in r.err


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        (
            ("Confirm the enclosure is closed\n", "Confirm the enclosure is closed\n      pattern: x\n"),
            "steps[2].prompt.pattern: 'pattern' needs 'answer: text' (this prompt has 'answer: confirm')",
        ),
        (('"^[0-9]{10}$"', '"^[0-9{10}$"'), "steps[0].prompt.pattern: not a valid regular expression: "),
        (("record: remark", "record: remarks"), "steps[1].prompt.record: "),
    ],
)
def test_a_text_prompt_that_cannot_work_is_refused_at_load(
    tmp_path: Path, replace: tuple[str, str], message: str
) -> None:
    path = tmp_path / "text_prompts.yaml"
    assert replace[0] in SEQUENCE
    path.write_text(SEQUENCE.replace(*replace).replace("TIMEOUT", "1 min"))
    r = bench("validate", path)
    assert r.rc == 2, r.out + r.err
    assert message in r.err and len(r.err.strip().splitlines()) == 1, r.err


class Terminal:
    """``bench run`` on a pseudo-terminal: what a person at the bench sees and types."""

    def __init__(self, *args: str | Path) -> None:
        self.fd, child = pty.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.cli", *map(str, args)],
            cwd=ROOT,
            stdin=child,
            stdout=child,
            stderr=child,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
        )
        os.close(child)
        self.seen = ""
        self.open = True

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        # A test that failed half-way leaves neither the process nor the terminal behind.
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.close()

    def close(self) -> None:
        if self.open:
            self.open = False
            os.close(self.fd)

    def read_until(self, text: str, timeout: float = 60) -> str:
        end = time.monotonic() + timeout
        while text not in self.seen:
            left = end - time.monotonic()
            assert left > 0, f"no {text!r} within {timeout} s:\n{self.seen}"
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    self.seen += os.read(self.fd, 4096).decode(errors="replace")
                except OSError:  # the process ended and closed the terminal
                    break
        assert text in self.seen, f"no {text!r}:\n{self.seen}"
        return self.seen

    def type(self, line: str) -> None:
        os.write(self.fd, (line + "\n").encode())

    def finish(self, timeout: float = 120) -> int:
        """The exit code, the terminal read to its end meanwhile (a full terminal would block the run)."""
        try:
            self.read_until("run folder: ", timeout)
            rc = self.proc.wait(timeout)  # the summary is the last output: nothing more can block it
            while select.select([self.fd], [], [], 0.5)[0]:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # the process ended and closed the terminal
                    break
                if not chunk:
                    break
                self.seen += chunk.decode(errors="replace")
            return rc
        finally:
            self.close()

    def run_dir(self) -> Path:
        line = next(x for x in self.seen.splitlines() if x.startswith("run folder: "))
        return Path(line.removeprefix("run folder: ").strip())


def test_at_the_bench_a_refused_serial_number_is_asked_again(tmp_path: Path) -> None:
    # With the live panel: its stop keys are off while an answer is typed (the 'e' of "yes"
    # would otherwise be an emergency stop).
    with Terminal("run", sequence(tmp_path), "--reports", tmp_path, "--realtime") as term:
        term.read_until("DUT serial number (10 digits, from the type plate)")
        term.type("12345")
        term.read_until("not taken: '12345' does not match the pattern ^[0-9]{10}$")
        term.type(SERIAL)
        term.read_until(SERIAL)  # echoed: the terminal reads lines, not single keys, while asked
        term.read_until("Remarks on the item as received")
        term.type("label partly torn")
        term.read_until("Confirm the enclosure is closed")
        term.type("yes")
        rc = term.finish()
    assert rc == 0, term.seen
    result = json.loads((term.run_dir() / "result.json").read_text())
    assert [(x["answer"], x["source"]) for x in result["operator_entries"]] == [
        (SERIAL, "operator at the bench"),
        ("label partly torn", "operator at the bench"),
    ]
    assert result["measurements"] == []


def test_at_the_bench_a_prompt_nobody_answers_in_time_is_error(tmp_path: Path) -> None:
    with Terminal("run", sequence(tmp_path, timeout="2 s"), "--reports", tmp_path, "--realtime", "-q") as term:
        term.read_until("DUT serial number (10 digits, from the type plate)")
        rc = term.finish()
    assert rc == 3, term.seen
    result = json.loads((term.run_dir() / "result.json").read_text())
    assert result["verdict"] == "ERROR"
    assert result["reason"] == "step 'DUT serial number': no answer within 2 s", result["reason"]
    assert result["operator_entries"] == []


def test_the_stop_keys_work_again_once_the_operator_has_answered(tmp_path: Path) -> None:
    path = tmp_path / "confirm_then_wait.yaml"
    path.write_text(
        SEQUENCE.split("steps:", 1)[0]
        + "steps:\n  - name: confirm enclosure closed\n    prompt: {text: Confirm the enclosure is closed}\n"
        "  - name: hold\n    wait: 1 h\ncleanup:\n  - set: {psu.output: OFF}\n"
    )
    with Terminal("run", path, "--reports", tmp_path, "--realtime") as term:
        term.read_until("Confirm the enclosure is closed")
        term.type("yes")
        term.read_until("hold")  # the live panel shows the next step
        os.write(term.fd, b"a")
        rc = term.finish(60)
    assert rc == 4, term.seen
    result = json.loads((term.run_dir() / "result.json").read_text())
    assert result["reason"] == "aborted by operator (key a)", result["reason"]
