"""Every benchmark's smoke run, so that none of them rots, and `benchmarks/run_all.py` itself.

The benchmarks are found the way `make bench` finds them (benchmarks/run_all.py: every script of
benchmarks/ that reports through benchmarks/table.py), so a new one is covered without an edit
here. Each runs with --smoke (a short run that still makes every check of the full run) through
the same runner as `make bench`; its JSON rows must be well-formed: every field, finite
numbers, a ratio that is ours / baseline or its inverse. A figure is not held against its goal:
these are not timed tests.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from benchmarks.run_all import BEGIN, END, discover, needs_mosquitto, row_problems, run_one
from tests.conftest import ROOT
from tests.labkit import need_mosquitto

BENCHMARKS, OFF_THE_TABLE = discover()
# A smoke run takes seconds; the limit is for a machine loaded by the rest of the suite.
SMOKE_TIMEOUT = 240.0


def test_every_benchmark_is_on_the_table() -> None:
    names = {p.stem for p in BENCHMARKS}
    assert {"cyclic_jitter", "daq_scan", "scpi_roundtrip", "lab_mqtt", "lab_scale", "engine_steps"} <= names
    assert {"report_archive", "safe_state_latency", "ingest", "virtual_time", "startup", "report_render"} <= names
    assert {"results_db", "ui_latency", "cell_emulator_set"} <= names
    assert not names & {"table", "local_broker", "run_all"}
    # A script of benchmarks/ that does not report through benchmarks/table.py would be left out of
    # `make bench` and of these smoke runs.
    assert [p.name for p in OFF_THE_TABLE] == []


@pytest.mark.parametrize("script", BENCHMARKS, ids=[p.stem for p in BENCHMARKS])
def test_smoke_run_reports_well_formed_rows(script: Path) -> None:
    if needs_mosquitto(script):
        need_mosquitto()
    entry = run_one(script, smoke=True, timeout=SMOKE_TIMEOUT, echo=False)
    output = "\n".join(entry["output_tail"])
    assert not entry["error"], f"{script.name} --smoke: {entry['error']}\n{output}"
    assert entry["exit_code"] == 0
    assert entry["rows"], f"{script.name} --smoke reported no rows"
    for row in entry["rows"]:
        assert row_problems(row, script.stem, smoke=True) == []


def _row(**changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "benchmark": "x",
        "figure": "a cost",
        "ours": 2.0,
        "baseline": 4.0,
        "unit": "ms",
        "ratio": 0.5,
        "ratio_means": "ours / baseline",
        "goal": "",
        "met": None,
        "smoke": True,
    }
    return row | changes


def test_row_check_refuses_malformed_rows() -> None:
    assert row_problems(_row(), "x", smoke=True) == []
    assert row_problems(_row(ratio=2.0), "x", smoke=True) == []  # baseline / ours
    assert row_problems(_row(ratio=3.0), "x", smoke=True)
    assert row_problems(_row(ours=float("nan")), "x", smoke=True)
    assert row_problems(_row(baseline=0.0), "x", smoke=True)
    assert row_problems(_row(ours="2"), "x", smoke=True)
    assert row_problems(_row(figure=""), "x", smoke=True)
    assert row_problems(_row(), "y", smoke=True)
    assert row_problems(_row(met=True), "x", smoke=True)  # no goal, and a smoke run
    assert row_problems(_row(smoke=False), "x", smoke=True)
    incomplete = _row()
    del incomplete["unit"]
    assert row_problems(incomplete, "x", smoke=True) == ["field 'unit' missing"]


GOOD = """\
    import argparse, sys
    sys.path.insert(0, {root!r})
    from benchmarks.table import Row, add_arguments, emit
    ap = argparse.ArgumentParser()
    add_arguments(ap)
    args = ap.parse_args()
    emit([Row("good", "a cost", 2.0, 4.0, "ms", 0.5, "ours / baseline", "<= 3 ms", True)], args)
"""
MALFORMED = """\
    import argparse, json
    # on the protocol (benchmarks.table) in name, but its rows are written by hand, one field short
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    row = dict(benchmark="malformed", figure="a cost", ours=1.0, baseline=2.0, ratio=0.5)
    row.update(ratio_means="ours / baseline", goal="", met=None, smoke=False)
    open(args.json, "w").write(json.dumps([row]))
"""
FAILING = """\
    import sys
    # benchmarks.table is not imported yet: the script fails before
    print("measuring")
    sys.exit("error: the instrument is gone")
"""


def test_run_all_keeps_the_table_when_a_script_fails(tmp_path: Path) -> None:
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    (folder / "good.py").write_text(textwrap.dedent(GOOD.format(root=str(ROOT))))
    (folder / "failing.py").write_text(textwrap.dedent(FAILING))
    (folder / "malformed.py").write_text(textwrap.dedent(MALFORMED))
    (folder / "older.py").write_text("print('no --json here')\n")
    (folder / "table.py").write_text("# a helper, not a benchmark: benchmarks.table\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"# Benchmarks\n\n## Last table\n\n{BEGIN}\nold table\n{END}\n\nolder paragraphs\n")
    out = tmp_path / "latest.json"
    argv = [sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--folder", str(folder), "--quiet"]
    r = subprocess.run([*argv, "--out", str(out), "--readme", str(readme)], capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "error: 2 benchmark(s) failed: failing.py, malformed.py"
    assert "Traceback" not in r.stderr
    table = json.loads(out.read_text())
    assert [e["script"] for e in table["scripts"]] == ["failing.py", "good.py", "malformed.py"]
    assert table["not_on_the_table"] == ["older.py"]
    failing, good, malformed = table["rows"]
    assert failing == {"benchmark": "failing", "error": "exit 1: error: the instrument is gone"}
    assert malformed == {"benchmark": "malformed", "error": "row 1: field 'unit' missing"}
    assert good["ours"] == 2.0 and good["met"] is True and good["smoke"] is False
    assert table["machine"]["cores"] >= 1 and len(table["load_average_end"]) == 3
    text = readme.read_text()
    assert "old table" not in text and text.endswith(f"{END}\n\nolder paragraphs\n")
    assert "| failing | **failed**: exit 1: error: the instrument is gone |" in text
    assert "| good | a cost | 2 | 4 | ms | 0.5 | ours / baseline | <= 3 ms | yes |" in text
    assert "Not on the table (no `--json` yet): older.py." in text
    assert text.startswith("# Benchmarks\n\n## Last table\n\n" + BEGIN + "\nFull run of ")
    assert "| good | a cost |" in r.stdout

    only = subprocess.run([*argv, "--smoke", "--only", "good"], capture_output=True, text=True)
    assert only.returncode == 0, only.stderr
    assert "| good | a cost | 2 | 4 | ms | 0.5 | ours / baseline | <= 3 ms |  |" in only.stdout
    assert "failing" not in only.stdout and "malformed" not in only.stdout
    assert "Smoke run of some benchmarks of " in only.stdout

    refused = subprocess.run([*argv, "--only", "nothing"], capture_output=True, text=True)
    assert refused.returncode == 1
    assert refused.stderr.strip() == "error: no benchmark named nothing (known: failing, good, malformed)"


HANGING = """\
    import subprocess, sys, time
    sys.path.insert(0, {root!r})
    import benchmarks.table  # on the protocol
    # A child that would outlive a script stopped alone: its pid for the test.
    child = subprocess.Popen(["sleep", "600"])
    open({pid_file!r}, "w").write(str(child.pid))
    print("waiting for an instrument that never answers", flush=True)
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; its new parent reaps it


def test_run_all_stops_a_script_that_hangs_with_what_it_started(tmp_path: Path) -> None:
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    pid_file = tmp_path / "child.pid"
    (folder / "hanging.py").write_text(textwrap.dedent(HANGING.format(root=str(ROOT), pid_file=str(pid_file))))
    argv = [sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--folder", str(folder), "--quiet"]
    r = subprocess.run([*argv, "--smoke", "--timeout", "8"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "| hanging | **failed**: timed out after 8 s |" in r.stdout
    assert r.stderr.strip().splitlines()[-1] == "error: 1 benchmark(s) failed: hanging.py"
    child = int(pid_file.read_text())
    assert not _alive(child), "the script's child outlived it"

    # Stopped from outside (a CI timeout): the script and its child are stopped, the table printed.
    pid_file.unlink()
    proc = subprocess.Popen([*argv, "--smoke"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline and proc.poll() is None, "the script did not start"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "| hanging | **failed**: interrupted |" in out
    assert "Traceback" not in err
    assert not _alive(int(pid_file.read_text())), "the script's child outlived the interrupted run"
