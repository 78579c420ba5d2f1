"""The results database on a generated history: import throughput and the latency of the questions.

A history of 100 000 runs with 20 measurements each (2 000 000 measurements; several stations,
DUTs with retests, software versions, instruments, fault-matrix cells: tests/results_history.py)
is written to SQLite and to a throw-away PostgreSQL cluster (as tests/pg.py starts one):

* import, ours: ``Store.index_many`` in transactions of ``bench db import``'s batch size, on a
  fresh database made by the migrations; baseline: a bare DBAPI ``executemany`` of the same rows
  into the same tables (same indexes), the same batches, with no idempotence check. The figure is
  rows written per second (runs + measurements + equipment rows), wall clock.
* the questions the issue names, each against the same SQL run on the bare driver (what our
  Python and SQLAlchemy add): ``yield`` of each sequence over one month (the issue's "first-pass
  yield of each sequence this month"; the whole history is a row of its own, without a goal),
  ``trend`` of a measurement (its latest 500 values: the chart's default) and ``affected`` (one
  analyzer, a week). Median of the rounds, after one warm-up; goal <= 200 ms each.

PostgreSQL is vacuumed and analyzed after the import (``VACUUM ANALYZE``), as its autovacuum
does within a minute of such a load; SQLite is queried as ``bench db import`` leaves it (no
statistics). Without PostgreSQL (not
installed) its rows are left out and said so.

    .venv/bin/python benchmarks/results_db.py [--runs 100000] [--rounds 5] [--smoke] [--json FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cli_db import BATCH  # noqa: E402
from bench.results import queries  # noqa: E402
from bench.results.rows import RunRow  # noqa: E402
from bench.results.schema import EquipmentTable, MeasurementTable, RunTable  # noqa: E402
from bench.results.store import Store, open_store  # noqa: E402
from benchmarks.table import Row, add_arguments, emit  # noqa: E402
from tests.results_history import MOVING_ASSET, SPACING, T0, generate  # noqa: E402

GOAL_MS = 200.0
TREND_MEASUREMENT = "ov_trip_v"

# The tables' own columns (the store fills id and indexed_utc; the bare import gives indexed_utc too).
RUN_COLUMNS = [c.name for c in RunTable.__table__.columns]
MEASUREMENT_COLUMNS = [c.name for c in MeasurementTable.__table__.columns if c.name != "id"]
EQUIPMENT_COLUMNS = [c.name for c in EquipmentTable.__table__.columns if c.name != "id"]


def rows_in(runs: Sequence[RunRow]) -> int:
    return sum(1 + len(r.measurements) + len(r.equipment) for r in runs)


@contextmanager
def postgresql() -> Iterator[Callable[[], str] | None]:
    """A throw-away cluster (tests/pg.py's): a function giving a fresh database's URL; None without PostgreSQL."""
    from tests.pg import Cluster, pg_bin
    from tests.ports import free_ports
    from tests.rofs import ROOT_USER

    binary = pg_bin()
    if binary is None or (ROOT_USER and shutil.which("runuser") is None):
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    try:
        if ROOT_USER:
            shutil.chown(folder, "postgres", "postgres")
        cluster = Cluster(binary, folder, free_ports(1)[0])
        cluster.init()
        cluster.start()
        try:
            yield cluster.create_database
        finally:
            cluster.stop("immediate")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def import_ours(store: Store, runs: Sequence[RunRow]) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(runs), BATCH):
        store.index_many(runs[i : i + BATCH])
    return time.perf_counter() - t0


def _plain(value: Any, sqlite: bool) -> Any:
    """A value as the bare driver takes it: SQLite's text instants and JSON, PostgreSQL's own types."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(" ") if sqlite else value
    if isinstance(value, dt.date) and sqlite:
        return value.isoformat()
    if isinstance(value, dict):
        return json.dumps(value)
    return value


def import_bare(store: Store, runs: Sequence[RunRow]) -> float:
    """The same rows through the driver's executemany, in the same batches: the floor of any import."""
    sqlite = store.engine.dialect.name == "sqlite"
    mark = "?" if sqlite else "%s"

    def insert(table: str, columns: list[str]) -> str:
        return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"

    now = dt.datetime.now(dt.UTC)
    raw = store.engine.raw_connection()
    try:
        t0 = time.perf_counter()
        for i in range(0, len(runs), BATCH):
            batch = runs[i : i + BATCH]
            cur = raw.cursor()
            if sqlite:
                cur.execute("BEGIN")
            cur.executemany(
                insert("runs", RUN_COLUMNS),
                [tuple(_plain(v, sqlite) for v in (*(getattr(r, c) for c in RUN_COLUMNS[:-1]), now)) for r in batch],
            )
            cur.executemany(
                insert("measurements", MEASUREMENT_COLUMNS),
                [(r.run_id, *(getattr(m, c) for c in MEASUREMENT_COLUMNS[1:])) for r in batch for m in r.measurements],
            )
            cur.executemany(
                insert("equipment_used", EQUIPMENT_COLUMNS),
                [
                    (r.run_id, *(_plain(getattr(e, c), sqlite) for c in EQUIPMENT_COLUMNS[1:]))
                    for r in batch
                    for e in r.equipment
                ],
            )
            raw.commit()
        return time.perf_counter() - t0
    finally:
        raw.close()


def latency(store: Store, question: Callable[[], object], rounds: int) -> tuple[float, float]:
    """(ours, bare) median seconds: the question, and the SQL it ran executed on the bare driver."""
    import sqlalchemy as sa

    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool) -> None:
        captured.append((statement, parameters))

    sa.event.listen(store.engine, "before_cursor_execute", capture)
    question()  # the warm-up, and the SQL it runs
    sa.event.remove(store.engine, "before_cursor_execute", capture)
    ours = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        question()
        ours.append(time.perf_counter() - t0)
    raw = store.engine.raw_connection()
    try:
        bare = []
        for _ in range(rounds + 1):
            t0 = time.perf_counter()
            cur = raw.cursor()
            for statement, parameters in captured:
                cur.execute(statement, parameters)
                if cur.description is not None:  # not the SET of PostgreSQL's JIT
                    cur.fetchall()
            raw.rollback()
            bare.append(time.perf_counter() - t0)
    finally:
        raw.close()
    return statistics.median(ours), statistics.median(bare[1:])


def measure(kind: str, url_of: Callable[[], str], runs: Sequence[RunRow], rounds: int) -> list[Row]:
    n_rows = rows_in(runs)
    with open_store(url_of()) as bare_store:
        bare_s = import_bare(bare_store, runs)
        assert bare_store.count_runs() == len(runs)
    with open_store(url_of()) as store:
        ours_s = import_ours(store, runs)
        assert store.count_runs() == len(runs)
        if kind == "postgresql":  # what autovacuum does after such a load (statistics, visibility map)
            with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")
        middle = T0 + SPACING * (len(runs) // 2)
        month = (middle, middle + dt.timedelta(days=30))
        week = (middle - dt.timedelta(days=7), middle)
        e = store.engine
        asked: list[tuple[str, Callable[[], object], bool]] = [
            ("yield of each sequence over one month", lambda: queries.yield_(e, "sequence", *month), True),
            ("yield of each sequence over the whole history", lambda: queries.yield_(e, "sequence"), False),
            (
                f"trend of {TREND_MEASUREMENT} (latest 500 values, X/MR chart)",
                lambda: queries.trend(e, TREND_MEASUREMENT),
                True,
            ),
            (
                f"affected runs of analyzer {MOVING_ASSET} over a week",
                lambda: queries.affected(e, MOVING_ASSET, *week),
                True,
            ),
        ]
        rows = [
            Row(
                benchmark="results_db",
                figure=f"{kind}: import of {len(runs)} runs ({n_rows} rows) through Store.index_many",
                ours=n_rows / ours_s,
                baseline=n_rows / bare_s,
                unit="rows/s",
                ratio=bare_s / ours_s,
                ratio_means="ours / bare executemany (throughput)",
            )
        ]
        for figure, question, goal in asked:
            ours_q, bare_q = latency(store, question, rounds)
            rows.append(
                Row(
                    benchmark="results_db",
                    figure=f"{kind}: {figure}",
                    ours=ours_q * 1000,
                    baseline=bare_q * 1000,
                    unit="ms",
                    ratio=ours_q / bare_q,
                    ratio_means="ours / the same SQL on the bare driver",
                    goal=f"<= {GOAL_MS:g} ms" if goal else "",
                    met=ours_q * 1000 <= GOAL_MS if goal else None,
                )
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    add_arguments(parser)
    args = parser.parse_args()
    if args.smoke:
        args.runs, args.rounds = 2000, 1
    t0 = time.perf_counter()
    runs = list(generate(args.runs))
    print(
        f"generated {len(runs)} runs, {sum(len(r.measurements) for r in runs)} measurements in {time.perf_counter() - t0:.1f} s"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        counter = iter(range(1_000_000))
        rows = measure("sqlite", lambda: f"sqlite:///{folder / f'results-{next(counter)}.db'}", runs, args.rounds)
        with postgresql() as new_database:
            if new_database is None:
                print("PostgreSQL is not installed: its rows are left out (apt-get install -y postgresql)")
            else:
                rows += measure("postgresql", new_database, runs, args.rounds)
    emit(rows, args)


if __name__ == "__main__":
    main()
