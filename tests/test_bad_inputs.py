"""Every bad input gives one line with file:line, exit code 2, and no traceback."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from tests.conftest import OVERCHARGE, Completed, bench

BAD = sorted((Path(__file__).parent / "bad").glob("*.yaml"))


def _header_text(path: Path) -> str:
    # Some cases are deliberately not UTF-8; their header is still readable.
    raw = path.read_bytes()
    return raw.decode("utf-16") if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else raw.decode("latin-1")


def _expect(path: Path) -> tuple[str, int]:
    text = _header_text(path)
    message = re.search(r"^# expect: (.*)$", text, re.M)
    line = re.search(r"^# expect-line: (\d+)$", text, re.M)
    assert message and line, f"{path.name} lacks its expectation header"
    return message.group(1), int(line.group(1))


def test_corpus_is_large_enough() -> None:
    assert len(BAD) >= 60


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_file_gives_one_line_with_place(path: Path) -> None:
    message, line = _expect(path)
    r = bench("validate", path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)
    assert_one_line(r, path.name, line, message)


def assert_one_line(r: Completed, name: str, line: int, message: str) -> None:
    """Exit 2 and one line ``error: <file>:<line>: ...`` on stderr, shown as it is (no markup, no emoji)."""
    assert r.rc == 2, r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    assert "Traceback" not in r.err + r.out
    assert not CONTROL.search(r.err + r.out), repr(r.err)
    assert re.match(rf"^error: \S*{re.escape(name)}:{line}: ", lines[0]), lines[0]
    assert message in lines[0]


# Terminal control characters (escape sequences among them); a tab would be harmless.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "charge_current=5 V"], "-p charge_current=5 V: wrong unit, expected A"),
        (["-p", "no_such=1"], "-p no_such: unknown parameter of R100-9G-OVERCHARGE"),
        (["-p", "charge_current"], "-p charge_current: expected name=value"),
        (["-p", "charge_current=0.2 A"], "below the minimum 1 A"),
        # Absurd numbers, other digits and bare numbers for a value in % (issue 11, items 5 and 5c).
        (["-p", "observation=1e400 s"], "-p observation=1e400 s: 1e400 is out of range"),
        (["-p", "observation=1e11 s"], "a duration must be at most 30 days"),
        (["-p", "max_reaction=" + "9" * 5000 + " s"], "is too long"),
        (["-p", "charge_current=١٢٠ A"], "write numbers with the digits 0-9"),
        (["-p", "soc_max=65"], "-p soc_max=65: wrong unit, expected %"),
        (["--fault", "no_such_fault"], "unknown fault 'no_such_fault'"),
        (["--station", "stations/missing.yaml"], "stations/missing.yaml:1: station file not found"),
    ],
)
def test_bad_run_options(args: list[str], message: str, reports: Path) -> None:
    r = bench("run", OVERCHARGE, "--reports", reports, *args)
    assert r.rc == 2, r.err + r.out
    assert len(r.err.strip().splitlines()) == 1
    assert message in r.err
    assert not any(reports.iterdir()), "nothing may be run or recorded for bad input"


def test_missing_sequence_file() -> None:
    r = bench("validate", "sequences/none.yaml")
    assert r.rc == 2
    assert "sequences/none.yaml:1: sequence file not found" in r.err


def test_schema_is_json_schema(tmp_path: Path) -> None:
    import json

    out = tmp_path / "schema.json"
    r = bench("schema", "-o", out)
    assert r.rc == 0, r.err
    schema = json.loads(out.read_text())
    assert schema["type"] == "object"
    assert {"id", "steps", "monitors", "parameters", "cleanup"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False


_HEAD = 'id: BAD-gen\ntitle: generated\nversion: 1.0.0\nbasis: {standard: test, clause: "0"}\nrequires: [psu, bms]\n'


@pytest.mark.parametrize(
    ("name", "content", "line", "message"),
    [
        # Too large to keep in tests/bad/: written here, checked the same way.
        ("too_large.yaml", _HEAD + "steps:\n" + "  - wait: 1 s\n" * 100_000, 1, "sequence file is larger than 1 MB"),
        ("nested_20000.yaml", _HEAD + "display: " + "[" * 20_000 + "]" * 20_000 + "\nsteps: []\n", 6, "nested deeper"),
        ("station_too_large.yaml", "id: big\n" + "# padding\n" * 120_000, 1, "file is larger than 1 MB"),
    ],
)
def test_generated_bad_file(tmp_path: Path, name: str, content: str, line: int, message: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert_one_line(bench("validate", path), name, line, message)


def test_division_by_zero_at_run_time_is_named() -> None:
    """A divisor that becomes zero while running leaves the value unknown and says why."""
    from bench.expr import Env, Scope, SignalInfo, compile_condition
    from bench.units import parse_unit

    volt = parse_unit("V")
    scope = Scope({"a.v": SignalInfo("a.v", volt), "a.n": SignalInfo("a.n", parse_unit(""))}, {})
    cond = compile_condition("a.v / a.n > 1 V", scope)
    env = Env({"a.v": 5.0, "a.n": 0.0}, {})
    assert cond.fn(env) is None
    assert env.why_unknown == "division by zero"


def test_uncertainty_from_a_parameter_counts_and_parameters_are_shown(tmp_path: Path, reports: Path) -> None:
    """`uncertainty: $u` was accepted by validate and then ignored by the run (issue 11, item 5c)."""
    seq = tmp_path / "u.yaml"
    seq.write_text(
        _HEAD.replace("BAD-gen", "U-PARAM")
        + "decision_rule: guard_band\nparameters:\n  u_v: 12 mV\n  voltage: 100 V\n"
        + "steps:\n  - set: {psu.voltage_set: $voltage, psu.current_set: 1 A, psu.output: ON}\n"
        + "  - wait_until: psu.voltage > 90 V\n    timeout: 5 s\n"
        + "  - measure: {name: v, signal: psu.voltage, min: 98 V, max: 102 V, uncertainty: $u_v}\n"
        + "cleanup:\n  - name: off\n    set: {psu.output: OFF}\n  - wait: 3 s\n"
    )
    r = bench("run", seq, "--reports", reports, "-p", "voltage=101 V")
    assert r.rc == 0, r.out + r.err
    (m,) = r.result()["measurements"]
    assert m["uncertainty"] == pytest.approx(0.012), m
    assert "stated in the sequence: U = 12 mV" in m["uncertainty_budget"][0]
    assert "parameters: u_v = 12 mV, voltage = 101 V (set with -p)" in r.out, r.out


def test_errors_and_run_lines_are_shown_as_they_are(capsys: pytest.CaptureFixture[str]) -> None:
    """An error's ``file:100:`` stays a line number, ``[red]`` stays text, and no escape sequence passes."""
    from types import SimpleNamespace

    from bench.console import Console, RunView, stderr_console

    stderr_console().print("error: seq.yaml:100: step '[red]x' :fire: \x1b[2J\x1b]0;owned\x07 \u202eevil")
    err = capsys.readouterr().err
    assert err.startswith("error: seq.yaml:100: step '[red]x' :fire: \\x1b[2J\\x1b]0;owned\\x07 \\u202eevil"), err
    assert not CONTROL.search(err) and "\u202e" not in err

    out = io.StringIO()
    run = SimpleNamespace(listeners=[], state=SimpleNamespace(phase="load"))
    view = RunView(run, Console(file=out, highlight=False, width=200), live=False)  # type: ignore[arg-type]
    view.on_event("step_started", 0.0, {"phase": "steps", "step": ":100: [bold]x", "text": "set bms.\x1b[31mcmd = ON"})
    view.on_event("device_fault", 1.0, {"reason": "BMS_\x1b]0;owned\x07Status: [/] lost"})
    text = out.getvalue()
    assert "0:00:00  [steps] :100: [bold]x: set bms.\\x1b[31mcmd = ON" in text, text
    assert "device fault: BMS_\\x1b]0;owned\\x07Status: [/] lost" in text, text
    assert not CONTROL.search(text)
