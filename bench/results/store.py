"""The results database: where it is, opening it (migrated to this version), and the idempotent write.

``open_store(url)`` finds the database (``url``, else ``BENCH_RESULTS``, else the station's
``results:``, else a SQLite file in the user's data folder), brings its tables to this version
with the Alembic migrations, and returns a ``Store``. ``Store.index`` writes a run once: the same
run again (same id and manifest hash) changes nothing, the same id with another manifest is
refused, never overwritten (docs/results.md).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from sqlalchemy import Connection, Engine, create_engine, event, func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError

from bench.errors import BenchError, LoadError
from bench.results.rows import RunRow
from bench.results.schema import DtcTable, EquipmentTable, MeasurementTable, RunTable, StepTable

Outcome = Literal["added", "same"]
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
ENV_URL = "BENCH_RESULTS"
# Rows of the existence check per statement: well under SQLite's limit of bound parameters.
CHUNK = 500
# Any constant: the key of the PostgreSQL advisory lock that serialises migrations between benches.
MIGRATION_LOCK = 0x68696C62
# How long a PostgreSQL server may take to answer a connection (a lab's host that is down).
CONNECT_TIMEOUT_S = 5


class DatabaseError(BenchError):
    """The results database cannot be reached or used (exit code 3, as a run's ERROR)."""

    exit_code = 3


class RunConflict(LoadError):
    """A run id already indexed with another manifest: one of the two records is not what was run."""


def data_folder() -> Path:
    """``$XDG_DATA_HOME/hil-bench``, else ``~/.local/share/hil-bench``: the default database and the outbox."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "hil-bench"


def default_url() -> str:
    return f"sqlite:///{data_folder() / 'results.db'}"


def results_url(url: str | None = None, station: str | None = None) -> str:
    """The database a run or a command uses: the given URL, ``BENCH_RESULTS``, the station's, the default."""
    return url or os.environ.get(ENV_URL) or station or default_url()


def driver_url(url: str) -> str:
    """``postgresql://`` (and ``postgres://``) as SQLAlchemy's psycopg 3 dialect; others unchanged."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url.removeprefix(plain)
    return url


def shown_url(url: str) -> str:
    """The URL as it may be printed or logged: without its password."""
    try:
        # URL.set() takes None as "unchanged": the tuple's own replace drops the password.
        return make_url(url)._replace(password=None).render_as_string(hide_password=False)
    except ArgumentError:
        return url.split("@")[-1]


class Store:
    """An open results database. Close it (or use it in ``with``) to release its connections."""

    def __init__(self, url: str, engine: Engine) -> None:
        self.url = url
        self.engine = engine

    @property
    def shown_url(self) -> str:
        return shown_url(self.url)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """One write transaction (on SQLite taken at its start, so two writers queue instead of failing)."""
        with self.engine.connect().execution_options(bench_write=True) as conn, conn.begin():
            yield conn

    def count_runs(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(RunTable)).scalar_one())

    def index(self, row: RunRow) -> Outcome:
        """Write one run (its own transaction): "added", or "same" if it was already there."""
        return self.index_many([row])[0]

    def index_many(self, rows: Sequence[RunRow]) -> list[Outcome]:
        """Write runs in one transaction; the outcome of each, in order. A run id indexed with
        another manifest refuses the whole batch (RunConflict, nothing written)."""
        try:
            outcomes = self._index_many(rows)
        except IntegrityError:
            # Another writer added one of these runs between the check and the insert (two benches,
            # a sync and a run): check again, now against what it wrote.
            outcomes = self._index_many(rows)
        self.keep_statistics()
        return outcomes

    def keep_statistics(self) -> None:
        """Gather SQLite's planner statistics again once the runs have doubled since the last time.

        SQLite plans from statistics only ANALYZE gathers (PostgreSQL's autovacuum keeps its own):
        without them a trend narrowed to one sequence took about 85 ms on 100 k runs, with them
        about 10 ms. Sampled (``analysis_limit``), ANALYZE takes milliseconds at any size, and the
        doubling rule makes it rare: about twenty times over a million runs.
        """
        if self.engine.dialect.name != "sqlite":
            return
        with self.writing() as conn:
            stats = conn.exec_driver_sql(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'"
            ).first()
            row = (
                conn.exec_driver_sql("SELECT stat FROM sqlite_stat1 WHERE tbl = 'runs' LIMIT 1").first()
                if stats
                else None
            )
            runs = int(conn.execute(select(func.count()).select_from(RunTable)).scalar_one())
            # A stat's first number is the table's row count when it was gathered.
            if row is None or runs >= 2 * int(str(row[0]).split()[0]):
                conn.exec_driver_sql("PRAGMA analysis_limit = 1000")
                conn.exec_driver_sql("ANALYZE")

    def _index_many(self, rows: Sequence[RunRow]) -> list[Outcome]:
        with self.writing() as conn:
            known = _indexed(conn, [r.run_id for r in rows])
            outcomes: list[Outcome] = []
            new: dict[str, RunRow] = {}
            for row in rows:
                have = known.get(row.run_id) or (new[row.run_id].manifest_sha256 if row.run_id in new else None)
                if have is None:
                    new[row.run_id] = row
                    outcomes.append("added")
                elif have == row.manifest_sha256:
                    outcomes.append("same")
                else:
                    raise RunConflict(
                        f"run {row.run_id} ({row.folder}) is already indexed with another manifest"
                        f" (sha256 {have[:12]}..., this one {row.manifest_sha256[:12]}...): refused, nothing written"
                    )
            if new:
                _insert(conn, list(new.values()))
            return outcomes


def _indexed(conn: Connection, run_ids: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    unique = sorted(set(run_ids))
    for i in range(0, len(unique), CHUNK):
        q = select(RunTable.run_id, RunTable.manifest_sha256).where(RunTable.run_id.in_(unique[i : i + CHUNK]))
        found.update({rid: sha for rid, sha in conn.execute(q)})
    return found


def _insert(conn: Connection, rows: list[RunRow]) -> None:
    now = dt.datetime.now(dt.UTC)
    conn.execute(insert(RunTable), [{**r.columns(), "indexed_utc": now} for r in rows])
    children: list[tuple[Any, str]] = [
        (MeasurementTable, "measurements"),
        (StepTable, "steps"),
        (EquipmentTable, "equipment"),
        (DtcTable, "dtcs"),
    ]
    for table, attr in children:
        values = [{"run_id": r.run_id, **asdict(child)} for r in rows for child in getattr(r, attr)]
        if values:
            conn.execute(insert(table), values)


def _sqlite_engine(url: str) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # The driver's own transaction handling is switched off, so that BEGIN is ours (below)
        # and DDL runs inside the migration's transaction (SQLAlchemy's pysqlite recipe).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys = ON")
        cur.execute("PRAGMA journal_mode = WAL")  # readers never wait for a writer
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A writer takes the write lock at BEGIN: one that took it later, after reading, could fail
        # with "database is locked" instead of waiting its turn.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("bench_write") else "BEGIN")

    return engine


def make_engine(url: str, timeout_s: float | None = None) -> Engine:
    """The engine for ``url``. ``timeout_s`` bounds each statement on PostgreSQL (SQLite waits at
    most its busy timeout for a lock), so that a writer never hangs on a stuck database."""
    try:
        full = driver_url(url)
        if make_url(full).get_backend_name() == "sqlite":
            return _sqlite_engine(full)
        args: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_S}
        if timeout_s is not None:
            args["options"] = f"-c statement_timeout={int(timeout_s * 1000)}"
        return create_engine(full, pool_pre_ping=True, connect_args=args)
    except ArgumentError as exc:
        raise LoadError(f"results database URL {shown_url(url)!r} is not valid ({exc})") from None
    except ModuleNotFoundError as exc:
        raise LoadError(f"results database URL {shown_url(url)!r}: no driver for it ({exc.name})") from None


def _alembic_config(conn: Connection) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


def migrate(store: Store) -> None:
    """Bring the tables to this version's head; a database at a revision we do not know is refused."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    with store.writing() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        cfg = _alembic_config(conn)
        script = ScriptDirectory.from_config(cfg)
        current = set(MigrationContext.configure(conn).get_current_heads())
        if current == set(script.get_heads()):
            return
        known = {rev.revision for rev in script.walk_revisions()}
        unknown = sorted(current - known)
        if unknown:
            raise DatabaseError(
                f"results database {store.shown_url} is at revision {', '.join(unknown)}, which this version of"
                f" hil-bench does not know (a newer one wrote it): upgrade hil-bench to use it"
            )
        command.upgrade(cfg, "head")


def current_revision(store: Store) -> str:
    from alembic.runtime.migration import MigrationContext

    with store.engine.connect() as conn:
        return ", ".join(MigrationContext.configure(conn).get_current_heads())


def open_store(url: str | None = None, *, station: str | None = None, timeout_s: float | None = None) -> Store:
    """Open (and migrate) the results database; ``station`` is the station file's ``results:``;
    ``timeout_s`` bounds each statement (the end of a run, which nothing may stop meanwhile).

    Raises LoadError for a URL that cannot name a database, and SQLAlchemy's or the OS's errors
    when the database cannot be reached (the caller decides: a run queues, a command reports).
    """
    chosen = results_url(url, station)
    store = Store(chosen, make_engine(chosen, timeout_s))
    try:
        migrate(store)
    except BaseException:
        store.close()
        raise
    return store
