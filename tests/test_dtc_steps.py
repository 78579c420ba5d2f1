"""UDS DTCs in the sequence language, the record and the report (docs/dtc.md, docs/sequences.md).

Through the real CLI on the simulated station: the BMS's firmware stores P0AA1-00 when a closed
contactor that is welded is commanded open; a sequence clears the memory, finds the DTC
confirmed, clears it and finds nothing stored. Every run reads the DTCs at its start and its end
into the record (``dtcs_read``), ``result.json`` and the report's table.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from bench.dtcs import record_dtcs
from bench.errors import DeviceError
from tests.conftest import ROOT, Completed, bench

WELDED_SEQUENCE = ROOT / "tests" / "sequences" / "bms_dtc_welded.yaml"
MESSAGE_LOST = ROOT / "sequences" / "iso26262" / "bms_message_lost.yaml"


def _steps(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in result["steps"] if s["phase"] == "steps"}


def _events(run: Completed, kind: str) -> list[dict[str, Any]]:
    lines = (run.run_dir() / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["kind"] == kind]


@pytest.fixture(scope="module")
def welded(tmp_path_factory: pytest.TempPathFactory) -> Completed:
    reports = tmp_path_factory.mktemp("reports")
    return bench("run", WELDED_SEQUENCE, "--fault", "contactor_welded", "--reports", reports)


def test_welded_contactor_dtc_is_found_confirmed_and_cleared(welded: Completed) -> None:
    result = welded.result()
    steps = _steps(result)
    assert all(s["outcome"] == "PASS" for s in steps.values()), steps
    assert steps["weld stored and confirmed, nothing else"]["message"] == "bms: P0AA1-00 status 0xAF"
    assert steps["nothing stored after the clear"]["message"] == "bms: no DTC stored"
    # The contactor is still welded: the safe state cannot be confirmed, whatever the DTC steps found.
    assert welded.rc == 5 and result["verdict"] == "ERROR" and "UNSAFE END" in result["reason"]


def test_dtcs_at_start_and_end_are_in_the_record_and_the_report(welded: Completed) -> None:
    reads = welded.result()["dtcs"]
    assert [(r["device"], r["at"], r["dtcs"], r["error"]) for r in reads] == [
        ("bms", "start", [], None),
        ("bms", "end", [], None),  # cleared during the run, and no open command on a closed contactor since
    ]
    assert [(e["device"], e["at"], e["dtcs"]) for e in _events(welded, "dtcs_read")] == [
        ("bms", "start", []),
        ("bms", "end", []),
    ]
    report = (welded.run_dir() / "report.html").read_text()
    assert "<h3>Diagnostic trouble codes</h3>" in report
    assert "<tr><td>bms</td><td>start</td><td>0.002</td><td>none</td>" in report


def test_without_the_fault_the_weld_dtc_is_missing_and_the_step_fails(tmp_path: Path) -> None:
    run = bench("run", WELDED_SEQUENCE, "--reports", tmp_path)
    assert run.rc == 1, run.out + run.err
    step = _steps(run.result())["weld stored and confirmed, nothing else"]
    assert step["outcome"] == "FAIL"
    assert step["message"] == "bms: P0AA1-00 is not stored after 3 s"


def test_a_dtc_stored_during_a_run_is_in_the_end_read_and_the_report(tmp_path: Path) -> None:
    run = bench("run", MESSAGE_LOST, "--reports", tmp_path)
    assert run.rc == 0, run.out + run.err
    start, end = run.result()["dtcs"]
    assert (start["at"], start["dtcs"]) == ("start", [])
    assert end["at"] == "end"
    assert [(d["code"], "confirmedDTC" in d["flags"]) for d in end["dtcs"]] == [("U0293-00", True)]
    report = (run.run_dir() / "report.html").read_text()
    assert "<td>U0293-00</td><td>0xAF</td><td>testFailed, testFailedThisOperationCycle, pendingDTC" in report


class _Driver:
    """A DTC memory that cannot be read: the record says so and the run goes on."""

    name = "bms"
    supports_dtcs = True

    async def read_dtcs(self, status_mask: int) -> list[Any]:
        raise DeviceError("bms", "read DTCs by status mask 0x2F: negative response 0x22 (ConditionsNotCorrect)")


def test_a_failed_read_is_recorded_and_raises_nothing() -> None:
    events: list[tuple[str, dict[str, Any]]] = []

    class Ctx:
        def __init__(self) -> None:
            self.connected = ["bms"]
            self.plan = type("P", (), {"drivers": {"bms": _Driver()}})()
            self.dtc_reads: list[Any] = []

        def now(self) -> float:
            return asyncio.get_running_loop().time()

        def rel(self, t: float) -> float:
            return 0.0

        def event(self, kind: str, **fields: Any) -> None:
            events.append((kind, fields))

    ctx = Ctx()
    asyncio.run(record_dtcs(ctx, "end"))  # type: ignore[arg-type]
    assert ctx.dtc_reads[0].error == "bms: read DTCs by status mask 0x2F: negative response 0x22 (ConditionsNotCorrect)"
    assert events == [("dtcs_read", {"device": "bms", "at": "end", "error": ctx.dtc_reads[0].error})]
