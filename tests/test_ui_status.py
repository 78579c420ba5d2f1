"""The bench's status, the interlock reset and the results history as the browser station gets them
(bench/ui/status.py, bench/ui/history.py), against real runs, a real latch and a real lock."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.errors import LoadError
from bench.interlock import Interlock
from bench.lab import client
from bench.record.chain import line_hash
from bench.stationlock import hold_station
from bench.ui.catalog import check_serial, library
from bench.ui.history import run_history
from bench.ui.labview import lab_benches, submit_to_lab
from bench.ui.status import reset_interlock as ui_reset
from bench.ui.status import station_status
from tests.conftest import ROOT, bench
from tests.labkit import SHORT, Lab, lab_fixture, mosquitto_fixture, station_file  # noqa: F401  (fixtures)
from tests.report_support import short_sequence, station_copy

SUPPLY_ON = ROOT / "tests" / "sequences" / "supply_on.yaml"


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state folder of this test's own (latches, locks, interlock logs), for this process and the runs it starts."""
    folder = tmp_path / "state"
    monkeypatch.setenv("BENCH_STATE_DIR", str(folder))
    return folder


def _log(state: Path, station_id: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (state / f"{station_id}.interlock.jsonl").read_text().splitlines()]


def test_a_tripped_interlock_shows_with_its_reason_and_resets_as_the_command_line_does(
    tmp_path: Path, state: Path
) -> None:
    station = station_copy(
        tmp_path,
        replace={"\nid: sim\n": "\nid: ui-trip\n", "when: psu.voltage > 1005 V": "when: psu.voltage > 50 V"},
    )
    before = station_status(station)
    assert before["id"] == "ui-trip" and before["simulated"] is True and before["virtual_time"] is True
    assert before["interlock"] == {"tripped": False, "reason": None, "at": None, "run_id": None}
    r = bench("run", SUPPLY_ON, "--station", station, "--reports", tmp_path / "reports", "-q")
    assert r.rc == 4, r.out + r.err
    run_id = r.result()["run_id"]

    tripped = station_status(station)["interlock"]
    assert tripped["tripped"] is True and tripped["run_id"] == run_id
    assert "supply voltage above the supply's rating" in tripped["reason"] and tripped["at"].endswith("Z")

    with pytest.raises(LoadError, match="the reason must say why it is safe to run again"):
        ui_reset(station, "  ", "bob")
    assert station_status(station)["interlock"]["tripped"] is True  # an empty reason resets nothing
    outcome = ui_reset(station, "limit was a test setting", "bob")
    assert outcome.startswith("station 'ui-trip' reset (was tripped: supervisor limit") and "\n" not in outcome
    assert station_status(station)["interlock"]["tripped"] is False
    from_ui = _log(state, "ui-trip")[-1]

    # The same trip, reset from the command line: the same line in the same log, but for its time.
    Interlock("ui-trip").trip(tripped["reason"], run_id)
    cli = bench("reset-interlock", "--station", station, "--reason", "limit was a test setting", "--by", "bob")
    assert cli.rc == 0, cli.err
    assert cli.out.strip() == outcome  # the same words
    from_cli = _log(state, "ui-trip")[-1]
    for entry in (from_ui, from_cli):
        entry.pop("t_utc")
        entry.pop("prev")
        entry["was"].pop("t_utc")
    assert from_ui == from_cli
    assert from_ui["kind"] == "reset" and from_ui["by"] == "bob" and from_ui["was"]["run_id"] == run_id
    # The hash chain of the log holds across both writers.
    lines = (state / "ui-trip.interlock.jsonl").read_bytes().splitlines()
    assert [json.loads(line)["prev"] for line in lines[1:]] == [line_hash(line) for line in lines[:-1]]


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        yield srv.getsockname()[1]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_devices_are_probed_without_being_connected_and_left_alone_while_a_run_holds_them(
    tmp_path: Path, state: Path, listening: int
) -> None:
    closed = _closed_port()
    present = tmp_path / "ttyFAKE0"
    present.write_text("")
    station = tmp_path / "probe.yaml"
    station.write_text(
        f"""\
id: ui-probe
devices:
  psu: {{driver: ea_psb, config: {{transport: {{visa: "TCPIP::127.0.0.1::{listening}::SOCKET"}}}}}}
  pa: {{driver: wt_analyzer, config: {{transport: {{visa: "TCPIP0::127.0.0.1::{closed}::SOCKET"}}}}}}
  h2: {{driver: h2_sensor, config: {{transport: {{url: {present}}}}}}}
  h2x: {{driver: h2_sensor, config: {{transport: {{url: {tmp_path / "ttyNONE"}}}}}}}
  daq: {{driver: daq970a, config: {{transport: {{visa: "TCPIP::127.0.0.1::INSTR"}}}}}}
  bms: {{driver: can_dbc, config: {{can: {{interface: socketcand, host: 127.0.0.1, port: {listening}, channel: can0}}}}}}
  sim: {{driver: ea_psb, config: {{transport: {{inproc: psu}}}}}}
"""
    )
    st = station_status(station)
    states = {d["name"]: (d["state"], d["endpoint"]) for d in st["devices"]}
    assert states == {
        "psu": ("reachable", f"TCPIP::127.0.0.1::{listening}::SOCKET"),
        "pa": ("unreachable", f"TCPIP0::127.0.0.1::{closed}::SOCKET"),
        "h2": ("present", str(present)),
        "h2x": ("missing", str(tmp_path / "ttyNONE")),
        "daq": ("unchecked", "TCPIP::127.0.0.1::INSTR"),
        "bms": ("reachable", f"socketcand 127.0.0.1:{listening} can0"),
        "sim": ("simulated", "in-process psu"),
    }
    assert st["lock"] == {"held": False, "by": None}
    assert st["equipment"] == [] and st["simulated"] is False

    with hold_station("ui-probe", "run-42", "bench run test.yaml"):
        busy = station_status(station)
        assert busy["lock"]["held"] is True and "run run-42 (bench run test.yaml)" in busy["lock"]["by"]
        assert {d["name"]: d["state"] for d in busy["devices"]} == {
            "psu": "in_use",
            "pa": "in_use",
            "h2": "in_use",
            "h2x": "in_use",
            "daq": "in_use",
            "bms": "in_use",
            "sim": "simulated",
        }
    assert station_status(station)["lock"] == {"held": False, "by": None}


def test_calibration_due_dates_are_judged_today(tmp_path: Path, state: Path) -> None:
    station = station_copy(
        tmp_path,
        replace={"date: 2026-01-15, due: 2027-01-15": "date: 2020-01-15, due: 2021-01-15"},
    )
    eq = {e["asset_id"]: e for e in station_status(station)["equipment"]}
    assert eq["SIM-PSU-01"]["ok"] is False and eq["SIM-PSU-01"]["due"] == "2021-01-15"
    assert "calibration due 2021-01-15 has passed" in eq["SIM-PSU-01"]["text"]
    assert eq["SIM-PA-01"]["ok"] is True and eq["SIM-PA-01"]["device"] == "pa"
    assert eq["SIM-PA-01"]["model"] == "WT5000" and eq["SIM-PA-01"]["due"] == "2027-02-10"


def test_a_run_s_place_in_the_results_history(tmp_path: Path, state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "results.db"
    env = {"BENCH_RESULTS": f"sqlite:///{db}"}
    monkeypatch.setenv("BENCH_RESULTS", env["BENCH_RESULTS"])
    station = station_copy(tmp_path, replace={"\nid: sim\n": "\nid: ui-history\n"})
    seq = short_sequence(tmp_path)
    ids = []
    for _ in range(2):
        r = bench("run", seq, "--station", station, "--reports", tmp_path / "reports", "-q", env=env)
        assert r.rc == 0, r.out + r.err
        ids.append(r.result()["run_id"])

    h = run_history(station, run_id=ids[0])
    assert h["error"] is None and h["db"] == f"sqlite:///{db}"
    assert [r["run_id"] for r in h["runs"]] == ids[::-1]  # newest first
    run = h["run"]
    assert run["run_id"] == ids[0] and run["verdict"] == "PASS" and run["station_id"] == "ui-history"
    assert run["sequence_id"] == "TEST-REPORT-SHORT" and run["started_utc"].endswith("+00:00")
    assert Path(run["report"]).name in ("report.pdf", "report.html")
    # The DUT identified itself over UDS; the station's serial pattern takes what it reported.
    assert h["dut_serial"] == "BMS-SN-0000012345" and check_serial(station, h["dut_serial"]) is None
    assert [r["run_id"] for r in h["dut"]] == ids  # oldest first
    assert h["place"] == {"dut_index": 1, "dut_total": 2, "sequence_index": 1, "sequence_total": 2}
    assert run_history(station, run_id=ids[1])["place"] == {
        "dut_index": 2,
        "dut_total": 2,
        "sequence_index": 2,
        "sequence_total": 2,
    }
    assert [r["run_id"] for r in run_history(station, limit=1)["runs"]] == [ids[1]]
    unknown = run_history(station, run_id="no-such-run", dut_serial="SN-NEVER-SEEN")
    assert unknown["run"] is None and unknown["dut"] == [] and unknown["place"] is None and unknown["error"] is None


def test_a_database_that_cannot_answer_is_one_line_not_an_exception(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("BENCH_RESULTS", f"sqlite:///{blocker}/results.db")  # a file where a folder must be
    h = run_history(station_copy(tmp_path), run_id="x")
    assert h["error"] is not None and "\n" not in h["error"] and h["error"].startswith("results database sqlite:///")
    assert h["runs"] == [] and h["run"] is None


def test_the_lab_s_benches_and_a_job_submitted_to_one(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BENCH_BROKER", raising=False)
    assert asyncio.run(lab_benches()) == []  # a station on its own: no lab, no error
    short = next(e for e in library(station_file(lab.folder, "ui-station")) if e.path == SHORT.resolve())
    with pytest.raises(LoadError, match="BENCH_BROKER is not set"):
        asyncio.run(submit_to_lab(short, {}, None, "alice"))

    lab.start_agent("bench-a")
    lab.wait_online(["bench-a"])
    monkeypatch.setenv("BENCH_BROKER", lab.broker.url())
    (bench_a,) = asyncio.run(lab_benches())
    assert bench_a["name"] == "bench-a" and bench_a["online"] is True and bench_a["state"] == "idle"
    assert (bench_a["station"], bench_a["dut"], bench_a["sequences"]) == ("bench-a", "BMS-SIM", 1)
    assert bench_a["lease"] is None and "psu" in bench_a["devices"]

    job = asyncio.run(submit_to_lab(short, {"hold": "1 s"}, "bench-a", "alice"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        snap = asyncio.run(client.snapshot(lab.broker.broker()))
        if job in snap.results:
            break
        time.sleep(0.5)
    assert snap.results[job].verdict == "PASS"
    sent = snap.jobs[job]
    assert sent.submitter == "alice" and sent.require == {"bench": "bench-a"} and sent.params == {"hold": "1 s"}
    assert (sent.sequence.id, sent.sequence.sha256) == (short.id, short.sha256)
    # A sequence no online bench has is refused at once, in one line.
    other = dataclasses.replace(short, sha256="0" * 64)
    with pytest.raises(LoadError, match="no online bench has it in its library"):
        asyncio.run(submit_to_lab(other, {}, None, "alice"))
