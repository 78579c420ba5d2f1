"""Every bad input gives one line with file:line, exit code 2, and no traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import OVERCHARGE, bench

BAD = sorted((Path(__file__).parent / "bad").glob("*.yaml"))


def _expect(path: Path) -> tuple[str, int]:
    text = path.read_text()
    message = re.search(r"^# expect: (.*)$", text, re.M)
    line = re.search(r"^# expect-line: (\d+)$", text, re.M)
    assert message and line, f"{path.name} lacks its expectation header"
    return message.group(1), int(line.group(1))


def test_corpus_is_large_enough() -> None:
    assert len(BAD) >= 15


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_file_gives_one_line_with_place(path: Path) -> None:
    message, line = _expect(path)
    r = bench("validate", path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)
    assert r.rc == 2, r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    assert "Traceback" not in r.err + r.out
    assert re.match(rf"^error: \S*{re.escape(path.name)}:{line}: ", lines[0]), lines[0]
    assert message in lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "charge_current=5 V"], "-p charge_current=5 V: wrong unit, expected A"),
        (["-p", "no_such=1"], "-p no_such: unknown parameter of R100-9G-OVERCHARGE"),
        (["-p", "charge_current"], "-p charge_current: expected name=value"),
        (["-p", "charge_current=0.2 A"], "below the minimum 1 A"),
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
