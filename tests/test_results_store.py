"""The results database on SQLite and on a real PostgreSQL, with the same test bodies.

Every run is indexed at its end through the one run path, with its measurements, steps,
equipment and the item's identity; a run is written once whatever the retries; `bench db import`
verifies each folder first and refuses a tampered one; a database that goes down in the middle of
a batch of runs loses none of them: they queue, and `bench db sync` (or the next run) catches up to
exactly the number of run folders. Databases come from tests/pg.py.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from bench.plan import build_plan
from bench.result import Verdict
from bench.results.rows import RunTags, from_run_folder
from bench.results.schema import DtcTable, EquipmentTable, MeasurementTable, RunTable, StepTable
from bench.results.store import RunConflict, open_store, shown_url
from bench.runner import run_plan
from tests import pg
from tests.conftest import ROOT, SIM_STATION, bench
from tests.pg import ResultsDb
from tests.rofs import read_only_folder

# The databases every test here runs on: SQLite and a throw-away PostgreSQL cluster (tests/pg.py).
pg_cluster, results_db, results_url = pg.pg_cluster, pg.results_db, pg.results_url

CELL_STATION = ROOT / "stations" / "sim-cells.yaml"
OPEN_WIRE = ROOT / "sequences" / "cell" / "open_wire.yaml"

# On sim.yaml: the BMS reports its serial and software over UDS; the part number is entered.
IDENTIFIED = """\
id: TEST-RESULTS-DUT
title: a short run that identifies its item
version: 2.1.0
basis: {standard: test, clause: results}
requires: [psu, bms]
steps:
  - name: part number
    prompt: {text: DUT part number from the type plate, answer: text, record: identification, timeout: 5 s}
  - name: supply off
    set: {psu.output: OFF}
  - measure: {name: supply_voltage, signal: psu.voltage, max: 1000 V, uncertainty: 0.5 V}
"""
PART_NUMBER = "0 986 A00 123"


@pytest.fixture
def outbox_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's data folder (its outbox), for its runs in this process and in subprocesses."""
    home = tmp_path / "data"
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    return home / "hil-bench" / "results-outbox"


@pytest.fixture
def db_env(results_url: str, outbox_home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("BENCH_RESULTS", results_url)
    return results_url


def count(url: str) -> int:
    with open_store(url) as store:
        return store.count_runs()


def rows(url: str, table: Any, run_id: str) -> list[Any]:
    with open_store(url) as store, store.engine.connect() as conn:
        return list(conn.execute(select(table).where(table.run_id == run_id)))


def cell_run(reports: Path) -> Any:
    return run_plan(build_plan(OPEN_WIRE, CELL_STATION), reports, full_report=False)


def folders(reports: Path) -> list[Path]:
    return sorted(p for p in reports.iterdir() if (p / "manifest.json").is_file())


def test_bench_run_is_indexed_at_its_end(db_env: str, tmp_path: Path) -> None:
    r = bench("run", OPEN_WIRE, "--station", CELL_STATION, "--reports", tmp_path / "reports", "-q")
    assert r.rc == 0, r.out + r.err
    assert f"indexed in {shown_url(db_env)}" in r.out.splitlines(), r.out
    result = r.result()
    run_id = result["run_id"]
    (run,) = rows(db_env, RunTable, run_id)
    assert (run.sequence_id, run.sequence_version, run.station_id, run.bench_id) == (
        "CELL-OPEN-WIRE",
        result["sequence"]["version"],
        "sim-cells",
        "sim-cells",
    )
    assert (run.verdict, run.exit_code, run.unsafe_end, run.clock) == ("PASS", 0, False, "virtual")
    assert run.sequence_sha256 == result["sequence"]["sha256"]
    assert run.parameters == {p["name"]: p["value"] for p in result["parameters"]}
    assert Path(run.folder) == r.run_dir().resolve()
    assert run.started_utc.tzinfo is not None and run.started_utc.isoformat().startswith(result["started_utc"][:19])
    assert run.campaign_id is None and run.fault is None
    (m,) = rows(db_env, MeasurementTable, run_id)
    want = result["measurements"][0]
    assert (m.name, m.value, m.unit, m.low, m.high, m.outcome) == (
        want["name"],
        want["value"],
        want["unit"],
        want["low"],
        want["high"],
        want["outcome"],
    )
    assert m.decision == want["decision"] and m.decision
    steps = rows(db_env, StepTable, run_id)
    assert [(s.phase, s.index, s.name, s.outcome) for s in sorted(steps, key=lambda s: s.id)] == [
        (s["phase"], s["index"], s["name"], s["outcome"]) for s in result["steps"]
    ]
    equipment = rows(db_env, EquipmentTable, run_id)
    assert sorted(e.asset_id for e in equipment) == sorted(e["asset_id"] for e in result["equipment"])
    assert all(e.due is not None and e.in_calibration for e in equipment)


def test_the_operator_is_in_the_record_the_report_and_the_database(db_env: str, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    r = bench("run", OPEN_WIRE, "--station", CELL_STATION, "--reports", reports, "-q", "--operator", "Jane Doe")
    assert r.rc == 0, r.out + r.err
    result = r.result()
    assert result["operator"] == "Jane Doe"
    assert "Jane Doe" in (reports / result["run_id"] / "report.html").read_text()
    (run,) = rows(db_env, RunTable, result["run_id"])
    assert run.operator == "Jane Doe"
    # Imported again from its folder (the record is the truth), the operator is the same.
    assert from_run_folder(reports / result["run_id"]).operator == "Jane Doe"
    # Without --operator: the login name the run went under.
    unnamed = cell_run(tmp_path / "reports2")
    assert unnamed.operator == getpass.getuser()
    (run,) = rows(db_env, RunTable, unnamed.run_id)
    assert run.operator == getpass.getuser()


def test_the_item_and_what_was_entered_are_indexed(db_env: str, tmp_path: Path) -> None:
    seq = tmp_path / "identified.yaml"
    seq.write_text(IDENTIFIED)
    answers = tmp_path / "answers.yaml"
    answers.write_text(f'part number: "{PART_NUMBER}"\n')
    result = run_plan(build_plan(seq, SIM_STATION), tmp_path / "reports", answers=answers, full_report=False)
    assert result.verdict is Verdict.PASS, result.reason
    (run,) = rows(db_env, RunTable, result.run_id)
    bms = next(d.identity for d in result.devices if d.name == "bms")
    # From the item over UDS, and from the operator what UDS does not give.
    assert (run.dut_serial, run.dut_sw_version) == (bms["ecu_serial"], bms["software_version"])
    assert run.dut_part_number == PART_NUMBER
    assert run.dut_hw_version is None
    (m,) = rows(db_env, MeasurementTable, result.run_id)
    assert m.uncertainty == result.measurements[0].uncertainty and m.uncertainty is not None
    assert rows(db_env, DtcTable, result.run_id) == []  # the sequence read none


def test_a_run_is_written_once(db_env: str, tmp_path: Path) -> None:
    result = cell_run(tmp_path / "reports")
    row = from_run_folder(tmp_path / "reports" / result.run_id)
    with open_store(db_env) as store:
        assert store.index(row) == "same"  # the run's end indexed it already
        assert store.index_many([row, row]) == ["same", "same"]
        assert store.count_runs() == 1
        other = dataclasses.replace(row, manifest_sha256="0" * 64, verdict="FAIL")
        with pytest.raises(RunConflict, match=f"run {row.run_id} .* already indexed with another manifest"):
            store.index(other)
        assert store.count_runs() == 1
    (run,) = rows(db_env, RunTable, row.run_id)
    assert (run.manifest_sha256, run.verdict) == (row.manifest_sha256, "PASS")
    assert len(rows(db_env, StepTable, row.run_id)) == len(result.steps)


def test_import_verifies_and_a_second_import_changes_nothing(results_url: str, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    # Written while this test's database is not the one the runs go to (the suite's own is).
    for _ in range(2):
        assert cell_run(reports).verdict is Verdict.PASS
    tampered_dir = tmp_path / "tampered"
    first = folders(reports)[0]
    shutil.copytree(first, tampered_dir / first.name)
    good = folders(reports)
    result_json = tampered_dir / first.name / "result.json"
    data = json.loads(result_json.read_text())
    data["verdict"] = "FAIL"
    result_json.write_text(json.dumps(data))

    r = bench("db", "import", tampered_dir, "--db", results_url)
    assert r.rc == 1, r.out + r.err
    assert r.err.strip().splitlines() == [
        f"{tampered_dir / first.name}: refused, the record does not verify: result.json: content changed (sha256 mismatch)"
    ]
    assert "0 added" in r.out and count(results_url) == 0

    # An amended report's folder beside the runs is sealed too, but it is no run: not imported.
    assert bench("report", "amend", good[0], "--reason", "item description", "--by", "QM").rc == 0
    r = bench("db", "import", reports, "--db", results_url)
    assert r.rc == 0, r.out + r.err
    assert r.out.strip() == f"2 run folder(s) into {shown_url(results_url)}: 2 added, 0 already indexed"
    r = bench("db", "import", good[1], "--db", results_url)
    assert r.rc == 0, r.out + r.err
    assert "0 added, 1 already indexed" in r.out
    assert count(results_url) == 2
    # The tampered copy has the same run id as an indexed run: still refused, the row untouched.
    assert bench("db", "import", tampered_dir, "--db", results_url).rc == 1
    assert [r.verdict for r in rows(results_url, RunTable, first.name)] == ["PASS"]


def test_database_down_in_the_middle_of_a_batch_loses_no_run(
    results_db: ResultsDb, db_env: str, outbox_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reports = tmp_path / "reports"
    for _ in range(2):
        assert cell_run(reports).verdict is Verdict.PASS
    assert count(db_env) == 2
    results_db.down()
    capsys.readouterr()
    queued = [cell_run(reports) for _ in range(3)]
    # Each run ends as it would have, with one warning line, and waits in the outbox.
    assert [r.verdict for r in queued] == [Verdict.PASS] * 3
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 3, warnings
    assert all(w.startswith("warning: results database unreachable (") for w in warnings), warnings
    assert all(w.endswith("): run queued, 'bench db sync' catches up") for w in warnings), warnings
    assert sorted(p.name for p in outbox_home.iterdir()) == sorted(r.run_id for r in queued)
    results_db.up()

    r = bench("db", "sync")
    assert r.rc == 0, r.out + r.err
    assert "3 added, 0 already indexed" in r.out
    assert count(db_env) == len(folders(reports)) == 5
    assert list(outbox_home.iterdir()) == []
    assert bench("db", "sync").out.strip() == "nothing queued"

    # The next run catches up too, without a sync.
    results_db.down()
    late = cell_run(reports)
    results_db.up()
    said: list[str] = []
    run_plan(build_plan(OPEN_WIRE, CELL_STATION), reports, full_report=False, on_indexed=said.append)
    assert said == [f"indexed in {shown_url(db_env)} (and 1 queued run(s))"]
    assert count(db_env) == len(folders(reports)) == 7
    assert rows(db_env, RunTable, late.run_id)[0].verdict == "PASS"
    assert list(outbox_home.iterdir()) == []


def test_an_unwritable_sqlite_folder_queues_the_run(
    outbox_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with read_only_folder(tmp_path / "ro") as ro:
        url = f"sqlite:///{ro / 'lab' / 'results.db'}"
        monkeypatch.setenv("BENCH_RESULTS", url)
        result = cell_run(tmp_path / "reports")
    assert result.verdict is Verdict.PASS
    (warning,) = capsys.readouterr().err.strip().splitlines()
    assert warning.startswith("warning: results database unreachable (") and "run queued" in warning
    (entry,) = outbox_home.iterdir()
    assert entry.name == result.run_id
    assert json.loads(entry.read_text())["url"] == url
    # Synced into another database given on the command line.
    other = f"sqlite:///{tmp_path / 'other.db'}"
    r = bench("db", "sync", "--db", other)
    assert r.rc == 0, r.out + r.err
    assert count(other) == 1 and not entry.exists()


def test_campaign_cells_carry_their_campaign_and_fault(db_env: str, tmp_path: Path) -> None:
    # Two worker processes write their cells into the one database at the same time.
    r = bench("campaign", OPEN_WIRE, "--station", CELL_STATION, "--faults", "all", "--reports", tmp_path, "--jobs", "2")
    assert r.rc in (0, 1), r.out + r.err  # 1: faults one sequence does not catch (docs/campaign.md)
    assert "results database" not in r.err, r.err
    (matrix_file,) = tmp_path.glob("*/fault-matrix.json")
    matrix = json.loads(matrix_file.read_text())
    cells = {c["run_id"]: c for c in matrix["cells"] if not c["same_as"]}
    assert len(cells) == len(list((matrix_file.parent / "runs").iterdir())) > 1
    with open_store(db_env) as store, store.engine.connect() as conn:
        indexed = {r.run_id: r for r in conn.execute(select(RunTable))}
    assert set(indexed) == set(cells)
    for run_id, cell in cells.items():
        assert (indexed[run_id].campaign_id, indexed[run_id].fault) == (matrix["campaign_id"], cell["fault"])
        assert indexed[run_id].verdict == cell["verdict"]
    # Rebuilt from the folders, the campaign is found again beside its runs.
    run_id, cell = next(iter(cells.items()))
    row = from_run_folder(matrix_file.parent / "runs" / run_id)
    assert (row.campaign_id, row.fault) == (matrix["campaign_id"], cell["fault"])
    tagged = row.tagged(RunTags(bench_id="bench-a", operator="alice"))
    assert (tagged.bench_id, tagged.operator, tagged.campaign_id) == ("bench-a", "alice", matrix["campaign_id"])


def test_a_database_of_an_unknown_revision_is_refused(
    db_env: str, tmp_path: Path, outbox_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_store(db_env) as store, store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    r = bench("db", "sync")
    assert r.rc == 0 and r.out.strip() == "nothing queued"
    r = bench("db", "import", tmp_path, "--db", db_env)
    assert r.rc == 3, r.out + r.err
    assert r.err.strip().splitlines() == [
        f"error: results database {shown_url(db_env)} is at revision 9999, which this version of hil-bench"
        " does not know (a newer one wrote it): upgrade hil-bench to use it"
    ]
    # A run still ends as it would have, and waits for a database it can write.
    result = cell_run(tmp_path / "reports")
    assert result.verdict is Verdict.PASS
    (warning,) = capsys.readouterr().err.strip().splitlines()
    assert "is at revision 9999" in warning and "run queued" in warning
    assert [p.name for p in outbox_home.iterdir()] == [result.run_id]


def test_the_migrations_build_exactly_the_models(results_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from bench.results.schema import Base

    with open_store(results_url) as store, store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def sql_blocks(doc: Path) -> list[str]:
    return re.findall(r"```sql\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S)


def test_the_lab_roles_of_the_docs_give_least_privilege(pg_cluster: pg.Cluster, tmp_path: Path) -> None:
    """docs/results.md's statements, run as written: benches insert and read, operators only read."""
    import psycopg

    roles_sql, grants_sql = sql_blocks(ROOT / "docs" / "results.md")

    def connect(user: str, database: str = "hil_results") -> psycopg.Connection[Any]:
        return psycopg.connect(host="127.0.0.1", port=pg_cluster.port, user=user, dbname=database, autocommit=True)

    with connect(pg.SUPERUSER, "postgres") as c:  # createuser / createdb of the docs
        c.execute("CREATE ROLE results_owner LOGIN")
        c.execute("CREATE DATABASE hil_results OWNER results_owner")
    with connect(pg.SUPERUSER) as c:
        c.execute(roles_sql)
    url = pg_cluster.url("hil_results")
    r = bench("db", "upgrade", "--db", url.replace(pg.SUPERUSER + "@", "results_owner@"))
    assert r.rc == 0, r.out + r.err
    with connect(pg.SUPERUSER) as c:
        c.execute(grants_sql)

    bench_a = url.replace(pg.SUPERUSER + "@", "bench_a@")
    r = bench(
        "run", OPEN_WIRE, "--station", CELL_STATION, "--reports", tmp_path / "a", "-q", env={"BENCH_RESULTS": bench_a}
    )
    assert r.rc == 0 and f"indexed in {bench_a}" in r.out, r.out + r.err
    with connect("bench_a") as c:
        for statement in (
            "UPDATE runs SET verdict = 'PASS'",
            "DELETE FROM measurements",
            "UPDATE alembic_version SET version_num = '0001'",
            "CREATE TABLE mine (x int)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(statement)

    alice = url.replace(pg.SUPERUSER + "@", "alice@")
    with connect("alice") as c:
        assert c.execute("SELECT count(*) FROM runs").fetchone() == (1,)
    other = cell_run(tmp_path / "b")  # indexed in the suite's database: new to the lab's
    r = bench("db", "import", tmp_path / "b" / other.run_id, "--db", alice)
    assert r.rc == 3, r.out + r.err
    assert r.err.strip().splitlines() == [f"error: results database {alice}: permission denied for table runs"]
    with connect("alice") as c:
        assert c.execute("SELECT count(*) FROM runs").fetchone() == (1,)


def test_the_station_names_its_database_and_bench_results_overrides_it(
    results_url: str, outbox_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = CELL_STATION.read_text(encoding="utf-8").replace("../dbc/", f"{ROOT / 'dbc'}/")
    station = tmp_path / "bench-a.yaml"
    station.write_text(text + f"\nresults: {results_url}\n", encoding="utf-8")
    monkeypatch.delenv("BENCH_RESULTS")
    first = run_plan(build_plan(OPEN_WIRE, station), tmp_path / "reports", full_report=False)
    other = f"sqlite:///{tmp_path / 'override.db'}"
    monkeypatch.setenv("BENCH_RESULTS", other)
    second = run_plan(build_plan(OPEN_WIRE, station), tmp_path / "reports", full_report=False)
    assert [r.run_id for r in rows(results_url, RunTable, first.run_id)] == [first.run_id]
    assert count(results_url) == 1
    assert [r.run_id for r in rows(other, RunTable, second.run_id)] == [second.run_id]
    assert count(other) == 1


def test_by_default_runs_go_to_a_sqlite_file_in_the_data_folder(
    outbox_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BENCH_RESULTS")
    said: list[str] = []
    result = run_plan(
        build_plan(OPEN_WIRE, CELL_STATION), tmp_path / "reports", full_report=False, on_indexed=said.append
    )
    default = outbox_home.parent / "results.db"  # $XDG_DATA_HOME/hil-bench/results.db
    assert said == [f"indexed in sqlite:///{default}"]
    assert [r.run_id for r in rows(f"sqlite:///{default}", RunTable, result.run_id)] == [result.run_id]


def test_no_password_is_printed(pg_cluster: pg.Cluster, outbox_home: Path, tmp_path: Path) -> None:
    url = pg_cluster.create_database().replace(f"{pg.SUPERUSER}@", f"{pg.SUPERUSER}:s3cret@")  # trust: not checked
    r = bench("run", OPEN_WIRE, "--station", CELL_STATION, "--reports", tmp_path, "-q", env={"BENCH_RESULTS": url})
    assert r.rc == 0, r.out + r.err
    assert f"indexed in {url.replace(':s3cret', '')}" in r.out.splitlines()
    assert "s3cret" not in r.out + r.err
    down = f"postgresql://{pg.SUPERUSER}:s3cret@127.0.0.1:{pg_cluster.port + 1}/nowhere"
    r = bench("run", OPEN_WIRE, "--station", CELL_STATION, "--reports", tmp_path, "-q", env={"BENCH_RESULTS": down})
    assert r.rc == 0 and "run queued" in r.err, r.out + r.err
    assert "s3cret" not in r.out + r.err
    r = bench("db", "sync")
    assert r.rc == 3 and down.replace(":s3cret", "") in r.err, r.out + r.err
    assert "s3cret" not in r.out + r.err


def test_a_run_takes_along_a_bounded_part_of_the_queue(
    results_db: ResultsDb, db_env: str, outbox_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.results.after_run import BACKLOG_PER_RUN

    reports = tmp_path / "reports"
    results_db.down()
    for _ in range(BACKLOG_PER_RUN + 2):
        cell_run(reports)
    results_db.up()
    assert len(list(outbox_home.iterdir())) == BACKLOG_PER_RUN + 2
    said: list[str] = []
    run_plan(build_plan(OPEN_WIRE, CELL_STATION), reports, full_report=False, on_indexed=said.append)
    assert said == [f"indexed in {shown_url(db_env)} (and {BACKLOG_PER_RUN} queued run(s))"]
    assert len(list(outbox_home.iterdir())) == 2
    assert "2 added" in bench("db", "sync").out
    assert count(db_env) == len(folders(reports)) == BACKLOG_PER_RUN + 3


def test_a_queued_run_keeps_no_database_password(outbox_home: Path, tmp_path: Path) -> None:
    from bench.results.outbox import enqueue, queued

    url = "postgresql://bench:s3cret-Pa55@127.0.0.1:1/results"
    entry = enqueue(tmp_path, "0190a000-0000-7000-8000-000000000001", url, why="connection refused")
    assert "s3cret-Pa55" not in entry.read_text()
    # The run is still found for the database it was meant for, given with or without the password.
    assert [q.entry for q in queued(url)] == [entry] == [q.entry for q in queued(shown_url(url))]
    assert queued("postgresql://bench:s3cret-Pa55@127.0.0.1:1/other") == []
