"""A lab agent's runs reach the results database through the one run path, indexed with the
bench's name and the job's submitter (docs/results.md), on a real mosquitto and a real agent."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.lab import client
from bench.lab.protocol import Result, decode
from bench.results.schema import MeasurementTable, RunTable
from bench.results.store import open_store
from tests import pg
from tests.labkit import SHORT, Lab, collect, lab_fixture, mosquitto_fixture  # noqa: F401  (fixtures)

pg_cluster, results_db, results_url = pg.pg_cluster, pg.results_db, pg.results_url


def test_a_lab_run_is_indexed_with_its_bench_and_submitter(
    lab: Lab, results_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import select

    monkeypatch.setenv("BENCH_OPERATOR", "alice")
    lab.start_agent("bench-a", env={"BENCH_RESULTS": results_url, "XDG_DATA_HOME": str(lab.folder / "data")})
    lab.wait_online(["bench-a"])
    op = lab.broker.broker()
    job = client.make_job(client.sequence_ref(str(SHORT)), {"hold": "1 s"}, {})

    def done(got: list[tuple[str, bytes]]) -> bool:
        return any(t.endswith(f"/results/{job.job}") and p for t, p in got)

    got = asyncio.run(
        collect(op, ["lab/benches/+/results/+"], done, within=60, on_ready=lambda: client.submit(op, [job]))
    )
    (result,) = [decode(Result, p) for t, p in got if t.endswith(f"/results/{job.job}") and p]
    assert result.verdict == "PASS", result.reason
    with open_store(results_url) as store, store.engine.connect() as conn:
        (run,) = conn.execute(select(RunTable).where(RunTable.run_id == result.run_id)).all()
        measured = conn.execute(select(MeasurementTable.name).where(MeasurementTable.run_id == result.run_id)).all()
    assert (run.bench_id, run.operator, run.verdict, run.exit_code) == ("bench-a", "alice", "PASS", result.exit_code)
    assert run.manifest_sha256 == result.manifest_sha256
    assert Path(run.folder) == Path(result.report)
    assert [m.name for m in measured] == ["output_voltage"]
