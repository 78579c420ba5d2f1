"""A report that cannot be completely written is said and marked; the run's verdict is not touched.

The record (events, traffic, result.json, manifest) is complete and verifies. A 17025 HTML or MF4
copy that fails is part of the record: result.json and run_ended mark the report degraded and a
PASS exits 8. The PDF is typeset after the seal: one that fails changes nothing in the record or
the exit code; report-pdf.json names what failed and stderr carries one warning line.
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

from bench.console import run_exit_code, run_problem
from bench.plan import build_plan
from bench.result import Verdict
from bench.runner import run_plan
from tests.conftest import ROOT, SIM_STATION

SUPPLY_ON = ROOT / "tests" / "sequences" / "supply_on.yaml"


def events(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


def full_disk(html_text: str, target: Path) -> Path:
    target.write_bytes(b"%PDF-1.7\n")  # begun, then the disk is full
    raise OSError(errno.ENOSPC, "No space left on device")


def typesetter_fails(html_text: str, target: Path) -> Path:
    raise RuntimeError("typesetter: layout did not converge")


@pytest.mark.parametrize(
    ("writer", "error"),
    [(full_disk, "pdf: OSError: [Errno 28] No space left on device"), (typesetter_fails, "pdf: RuntimeError: ")],
    ids=["full-disk", "typesetter-raises"],
)
def test_pdf_that_fails_is_an_error_of_the_report_not_of_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: Any, error: str
) -> None:
    import bench.report.render as render
    from bench.record.verify import verify_run

    sealed: list[dict[str, Any]] = []

    def after_the_seal(html_text: str, target: Path) -> Path:
        # What the record says at the moment the PDF is typeset: it must already be final.
        run = target.parent
        sealed.append({"manifest": (run / "manifest.json").is_file(), "problems": verify_run(run)})
        return writer(html_text, target)

    monkeypatch.setattr(render, "write_pdf", after_the_seal)
    monkeypatch.setenv("BENCH_REPORT_PDF", "1")
    plan = build_plan(SUPPLY_ON, SIM_STATION, {"hold": "1 s"})
    result = run_plan(plan, tmp_path)
    assert sealed == [{"manifest": True, "problems": []}], "the PDF was typeset before the record was sealed"
    assert result.verdict == Verdict.PASS, result.reason
    assert result.report_degraded is None and run_exit_code(result) == 0
    run = tmp_path / result.run_id
    on_disk = json.loads((run / "result.json").read_text())
    assert on_disk["verdict"] == "PASS" and on_disk["report_degraded"] is None
    ended = [e for e in events(run) if e["kind"] == "run_ended"]
    assert "render_error" not in ended[0] and "report_degraded" not in ended[0]
    assert "report_degraded" not in json.loads((run / "manifest.json").read_text())
    assert not (run / "report.pdf").exists(), "a half-written PDF must not be left looking like a report"
    seal = json.loads((run / "report-pdf.json").read_text())
    assert seal["file"] is None and seal["error"].startswith(error), seal
    assert (run / "report.html").is_file()
    assert verify_run(run) == [], "the record must still verify, with the PDF's error beside it"
    warning = run_problem(result, str(run))
    assert warning is not None and warning.startswith(f"warning: report.pdf not written: {error}")


def test_a_17025_html_that_fails_marks_the_report_degraded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.report.render as render

    def renderer_fails(run_dir: Path, **kwargs: Any) -> str:
        raise ValueError("a table the renderer cannot lay out")

    monkeypatch.setattr(render, "build_html", renderer_fails)
    monkeypatch.setenv("BENCH_REPORT_PDF", "1")
    result = run_plan(build_plan(SUPPLY_ON, SIM_STATION, {"hold": "1 s"}), tmp_path)
    assert result.verdict == Verdict.PASS, result.reason
    assert result.report_degraded == "report: ValueError: a table the renderer cannot lay out"
    assert run_exit_code(result) == 8
    run = tmp_path / result.run_id
    assert json.loads((run / "result.json").read_text())["report_degraded"] == result.report_degraded
    assert json.loads((run / "manifest.json").read_text())["report_degraded"] == result.report_degraded
    # The plain report stands in, and no PDF is typeset from it.
    assert (run / "report.html").is_file() and not (run / "report.pdf").exists()
    assert not (run / "report-pdf.json").exists()


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


def test_bench_run_with_a_pdf_too_large_says_so_and_keeps_its_exit_code(tmp_path: Path) -> None:
    pytest.importorskip("typst", reason="the typesetter is needed to fail while writing the PDF")
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cli", "run", str(SUPPLY_ON), "-p", "hold=1 s", "--reports", str(tmp_path), "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        # A results database and outbox of its own: the cap keeps the run out of any SQLite file.
        env={
            **os.environ,
            "COLUMNS": "200",
            "BENCH_REPORT_PDF": "1",
            "XDG_DATA_HOME": str(tmp_path / "data"),
            "BENCH_RESULTS": f"sqlite:///{tmp_path / 'data' / 'results.db'}",
        },
        preexec_fn=_small_files,
    )
    out, err = proc.stdout, proc.stderr
    assert proc.returncode == 0, out + err
    assert "Traceback" not in out + err
    # The same cap fails the results database's writes: the run is queued, with a line of its own
    # (docs/results.md), and neither changes the exit code.
    queued, lines = [], []
    for line in err.strip().splitlines():
        (queued if line.startswith("warning: results database unreachable") else lines).append(line)
    assert len(queued) == 1 and "run queued" in queued[0], err
    assert len(lines) == 1 and lines[0].startswith("warning: report.pdf not written: pdf: OSError"), err
    assert "File too large" in lines[0]
    assert "PASS" in out
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir() and p.name != "data"]
    result = json.loads((run / "result.json").read_text())
    assert result["verdict"] == "PASS" and result["report_degraded"] is None
    assert not (run / "report.pdf").exists()
    assert "File too large" in json.loads((run / "report-pdf.json").read_text())["error"]
    # The record itself is complete and sealed.
    verified = subprocess.run(
        [sys.executable, "-m", "bench.cli", "verify", str(run)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
