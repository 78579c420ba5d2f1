"""A report that cannot be completely written is said, marked and given its own exit code.

The record (events, traffic, result.json, manifest) is complete and verifies; the 17025 report
or its PDF is not. The run's verdict stays PASS, result.json and the run_ended event mark the
report degraded, stderr carries one warning line naming what failed, and `bench run` exits 8.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.console import run_exit_code
from bench.plan import build_plan
from bench.result import Verdict
from bench.runner import run_plan
from tests.conftest import ROOT, SIM_STATION

SUPPLY_ON = ROOT / "tests" / "sequences" / "supply_on.yaml"


def events(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


def test_pdf_that_fails_marks_the_report_degraded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.report.render as render

    def full_disk(html_text: str, target: Path) -> Path:
        target.write_bytes(b"%PDF-1.7\n")  # begun, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(render, "write_pdf", full_disk)
    monkeypatch.setenv("BENCH_REPORT_PDF", "1")
    plan = build_plan(SUPPLY_ON, SIM_STATION, {"hold": "1 s"})
    result = run_plan(plan, tmp_path)
    assert result.verdict == Verdict.PASS, result.reason
    assert result.report_degraded is not None and "pdf: OSError" in result.report_degraded
    assert "No space left on device" in result.report_degraded
    assert run_exit_code(result) == 8
    run = tmp_path / result.run_id
    on_disk = json.loads((run / "result.json").read_text())
    assert on_disk["verdict"] == "PASS" and on_disk["report_degraded"] == result.report_degraded
    ended = [e for e in events(run) if e["kind"] == "run_ended"]
    assert ended[0]["report_degraded"] is True and "pdf" in ended[0]["render_error"]
    assert not (run / "report.pdf").exists(), "a half-written PDF must not be left looking like a report"
    assert json.loads((run / "manifest.json").read_text())["report_degraded"] == result.report_degraded
    assert (run / "report.html").is_file()


def test_exit_codes_of_a_finished_run() -> None:
    from bench.result import RunResult

    base = RunResult.model_construct(verdict=Verdict.PASS, unsafe_end=False, report_degraded=None)
    assert run_exit_code(base) == 0
    assert run_exit_code(base.model_copy(update={"report_degraded": "pdf: x"})) == 8
    # Another verdict keeps its own code; an unsafe end outranks everything.
    assert run_exit_code(base.model_copy(update={"verdict": Verdict.FAIL, "report_degraded": "pdf: x"})) == 1
    assert run_exit_code(base.model_copy(update={"verdict": Verdict.ERROR, "unsafe_end": True})) == 5
    assert run_exit_code(base.model_copy(update={"verdict": Verdict.ABORTED})) == 4


def _small_files() -> None:
    # Every file this process writes is capped at 24 KiB: the record's files fit, the PDF does
    # not. SIGXFSZ ignored turns the cap into an ordinary failed write (EFBIG).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (24 * 1024, 24 * 1024))


def test_bench_run_says_report_degraded_and_exits_8(tmp_path: Path) -> None:
    pytest.importorskip("weasyprint", reason="the PDF renderer is needed to fail while writing the PDF")
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cli", "run", str(SUPPLY_ON), "-p", "hold=1 s", "--reports", str(tmp_path), "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", "BENCH_REPORT_PDF": "1"},
        preexec_fn=_small_files,
    )
    out, err = proc.stdout, proc.stderr
    assert proc.returncode == 8, out + err
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: report degraded: pdf: OSError"), err
    assert "File too large" in lines[0]
    assert "PASS" in out
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    result = json.loads((run / "result.json").read_text())
    assert result["verdict"] == "PASS" and "pdf: OSError" in result["report_degraded"]
    # The record itself is complete and sealed.
    verified = subprocess.run(
        [sys.executable, "-m", "bench.cli", "verify", str(run)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
