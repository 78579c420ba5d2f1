"""``bench db ...``: the results database (docs/results.md).

``import`` indexes existing run folders (each verified first), ``sync`` indexes the runs queued
while the database could not be reached, ``upgrade`` creates or migrates the tables (any command
does, but on a lab's PostgreSQL only the tables' owner may); the questions across runs are
further commands of the same group. Every command takes ``--db URL`` (else ``BENCH_RESULTS``, else the SQLite file in the
user's data folder). Registered on the main app by ``bench/cli.py``; SQLAlchemy is imported inside
the commands, so ``bench --help`` and ``bench run``'s start never load it.

Exit codes: 0 done; 1 a folder or queued run was refused (the others were indexed); 2 bad input;
3 the database cannot be reached or was written by a newer version.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bench.errors import BenchError, LoadError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from bench.results.outbox import Queued
    from bench.results.output import Format
    from bench.results.queries import Table
    from bench.results.rows import RunRow
    from bench.results.store import Outcome, Store

db_app = typer.Typer(no_args_is_help=True, help="The results database: import, sync and questions across runs.")

DbOpt = Annotated[
    str | None,
    typer.Option("--db", help="database URL: sqlite:///PATH or postgresql://USER@HOST/DB [env BENCH_RESULTS]"),
]
# Runs written per transaction on import: large enough for throughput, small enough that an
# interrupted import keeps most of what it did.
BATCH = 200
# A line on stderr per this many folders when stderr is not a terminal (a log, CI).
PROGRESS_EVERY = 500


@contextmanager
def database_errors(db: str | None) -> Iterator[None]:
    """What the database or its driver raises, as one line naming the database (exit 3)."""
    from bench.results.after_run import DATABASE_ERRORS, one_line
    from bench.results.store import DatabaseError, results_url, shown_url

    try:
        yield
    except BenchError:
        raise
    except DATABASE_ERRORS as exc:
        raise DatabaseError(f"results database {shown_url(results_url(db))}: {one_line(exc)}") from None


def open_db(db: str | None) -> Store:
    """The store for a ``bench db`` command; a database that cannot be reached is one line, exit 3."""
    from bench.results.store import open_store

    with database_errors(db):
        return open_store(db)


def run_folders(paths: Iterable[Path]) -> Iterator[Path]:
    """Every sealed run folder at or under ``paths`` (a folder with a manifest that is not an
    amended report's), in name order; a folder named itself is taken as it is (and judged)."""
    from bench.record.manifest import MANIFEST_NAME
    from bench.results.rows import is_run_folder

    for path in paths:
        if not path.is_dir():
            raise LoadError(f"{path}: no such folder")
        if (path / MANIFEST_NAME).is_file():
            yield path
            continue
        found = (m.parent for m in path.rglob(MANIFEST_NAME) if ".lab" not in m.parts)
        yield from sorted(p for p in found if is_run_folder(p))


def _say(text: str) -> None:
    from bench.console import stderr_console

    stderr_console().print(text)


class _Progress:
    """``done/total`` on stderr: a bar on a terminal, else a line every PROGRESS_EVERY folders."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.bar = None
        if sys.stderr.isatty() and total > 1:
            from rich.progress import Progress

            from bench.console import stderr_console

            self.bar = Progress(console=stderr_console(), transient=True)
            self.task = self.bar.add_task("importing", total=total)
            self.bar.start()

    def step(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done)
        elif self.done % PROGRESS_EVERY == 0:
            _say(f"{self.done}/{self.total} run folders")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _index_batch(store: Store, batch: list[RunRow], refused: list[str]) -> list[Outcome]:
    """One transaction for the batch; a run id indexed with another manifest is refused alone."""
    from bench.results.store import RunConflict

    try:
        return store.index_many(batch)
    except RunConflict:
        outcomes: list[Outcome] = []
        for row in batch:
            try:
                outcomes.append(store.index(row))
            except RunConflict as exc:
                refused.append(str(exc))
        return outcomes


@db_app.command("import")
def import_(
    paths: Annotated[list[Path], typer.Argument(help="run folders, or folders searched for run folders")],
    db: DbOpt = None,
    trust: Annotated[
        Path | None, typer.Option(help="file of further trusted public keys for signed records (bench verify)")
    ] = None,
) -> None:
    """Index existing run folders; each is verified first and a tampered one is refused."""
    from bench.record.verify import verify_run
    from bench.results.rows import from_run_folder

    folders = list(run_folders(paths))
    store = open_db(db)
    added = same = 0
    refused: list[str] = []
    batch: list[RunRow] = []
    progress = _Progress(len(folders))

    def flush() -> None:
        nonlocal added, same
        outcomes = _index_batch(store, batch, refused)
        added += outcomes.count("added")
        same += outcomes.count("same")
        batch.clear()

    try:
        with database_errors(db):
            for folder in folders:
                problems = verify_run(folder, trust)
                if problems:
                    refused.append(f"{folder}: refused, the record does not verify: {problems[0]}")
                else:
                    try:
                        batch.append(from_run_folder(folder))
                    except LoadError as exc:
                        refused.append(str(exc))
                    if len(batch) >= BATCH:
                        flush()
                progress.step()
            if batch:
                flush()
    finally:
        progress.close()
        store.close()
    for line in refused:
        _say(line)
    typer.echo(
        f"{len(folders)} run folder(s) into {store.shown_url}: {added} added, {same} already indexed"
        + (f", {len(refused)} refused" if refused else "")
    )
    raise typer.Exit(1 if refused else 0)


@db_app.command()
def sync(db: DbOpt = None) -> None:
    """Index the runs queued while the database was unreachable (into the database each was meant for, or --db)."""
    from bench.results.outbox import queued, sync
    from bench.results.store import results_url, shown_url

    entries = queued()
    if not entries:
        typer.echo("nothing queued")
        return
    # An entry names its database without the password: the configured URL that names the same
    # database gives it back (else PostgreSQL's password file or PGPASSWORD does).
    configured = results_url()
    groups: dict[str, list[Queued]] = {}
    for q in entries:
        groups.setdefault(db or (configured if shown_url(configured) == q.url else q.url), []).append(q)
    problems = 0
    for url, group in groups.items():
        store = open_db(url)
        try:
            with database_errors(url):
                report = sync(store, group)
        finally:
            store.close()
        for line in report.problems:
            _say(line)
        problems += len(report.problems)
        typer.echo(
            f"{len(group)} queued run(s) into {shown_url(store.url)}: {report.added} added,"
            f" {report.same} already indexed" + (f", {len(report.problems)} not indexed" if report.problems else "")
        )
    raise typer.Exit(1 if problems else 0)


@db_app.command()
def upgrade(db: DbOpt = None) -> None:
    """Create the tables or bring them to this version (on a lab's PostgreSQL: as the tables' owner)."""
    from bench.results.store import current_revision

    store = open_db(db)
    try:
        typer.echo(f"results database {store.shown_url} at revision {current_revision(store)}")
    finally:
        store.close()


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")


# ---- The questions across runs (bench/results/queries.py): one formatter for every answer. ----

JsonOpt = Annotated[bool, typer.Option("--json", help="print the answer as JSON")]
CsvOpt = Annotated[bool, typer.Option("--csv", help="print the answer as CSV")]
SinceOpt = Annotated[str | None, typer.Option("--since", help="from this date or instant (UTC), e.g. 2026-11-01")]
UntilOpt = Annotated[str | None, typer.Option("--until", help="before this date or instant (UTC)")]
CampaignsOpt = Annotated[bool, typer.Option("--campaigns", help="include fault-matrix cells (left out by default)")]
SequenceOpt = Annotated[str | None, typer.Option("--sequence", help="sequence id")]


def when(text: str | None, option: str) -> dt.datetime | None:
    """``--since``/``--until``: a date (its 00:00 UTC) or an ISO 8601 instant (UTC when no zone is given)."""
    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise LoadError(f"{option} {text!r}: not a date (2026-11-01) or an instant (2026-11-01T08:00Z)") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _format(as_json: bool, as_csv: bool) -> Format:
    if as_json and as_csv:
        raise LoadError("--json and --csv: choose one")
    return "json" if as_json else "csv" if as_csv else "table"


def _answer(db: str | None, question: Callable[[Engine], Table], as_json: bool, as_csv: bool) -> None:
    from bench.results.output import render

    fmt = _format(as_json, as_csv)
    with open_db(db) as store:
        typer.echo(render(question(store.engine), fmt))


@db_app.command()
def runs(
    dut: Annotated[str | None, typer.Option("--dut", help="DUT serial")] = None,
    sequence: SequenceOpt = None,
    station: Annotated[str | None, typer.Option("--station", help="station id")] = None,
    verdict: Annotated[str | None, typer.Option("--verdict", help="PASS, FAIL, ERROR or ABORTED")] = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    campaigns: CampaignsOpt = False,
    limit: Annotated[int, typer.Option("--limit", help="the newest so many runs; 0: all")] = 100,
    db: DbOpt = None,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
) -> None:
    """Runs filtered by DUT, sequence, station, verdict and date, newest first."""
    from bench.results import queries

    start, end = when(since, "--since"), when(until, "--until")
    _answer(
        db,
        lambda e: queries.runs(
            e,
            dut=dut,
            sequence=sequence,
            station=station,
            verdict=verdict,
            since=start,
            until=end,
            include_campaigns=campaigns,
            limit=limit or None,
        ),
        as_json,
        as_csv,
    )


@db_app.command()
def dut(
    serial: Annotated[str, typer.Argument(help="the DUT's serial number")],
    db: DbOpt = None,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
) -> None:
    """A DUT's history: every run of it, oldest first, with its verdict and report."""
    from bench.results import queries

    _answer(db, lambda e: queries.dut_history(e, serial), as_json, as_csv)


@db_app.command("yield")
def yield_(
    by: Annotated[str, typer.Option("--by", help="sequence, dut_type, station or week")] = "sequence",
    since: SinceOpt = None,
    until: UntilOpt = None,
    campaigns: CampaignsOpt = False,
    db: DbOpt = None,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
) -> None:
    """First-pass and final yield of the DUTs first tested in the window, by group."""
    from bench.results import queries

    start, end = when(since, "--since"), when(until, "--until")
    _answer(db, lambda e: queries.yield_(e, by, start, end, campaigns), as_json, as_csv)


@db_app.command()
def trend(
    measurement: Annotated[str, typer.Argument(help="measurement name")],
    sequence: SequenceOpt = None,
    by_sw_version: Annotated[
        bool, typer.Option("--by-sw-version", help="group the points by DUT software version")
    ] = False,
    since: SinceOpt = None,
    until: UntilOpt = None,
    last: Annotated[int, typer.Option("--last", help="chart the latest so many values; 0: all")] = 500,
    baseline: Annotated[
        int | None, typer.Option("--baseline", help="control limits from the first N points (default: all)")
    ] = None,
    campaigns: CampaignsOpt = False,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="write the X/MR chart as PNG")] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
) -> None:
    """The X/MR control chart of a measurement across runs, and the Nelson rules it violates."""
    from bench.results import queries
    from bench.results.output import render, render_sections

    fmt = _format(as_json, as_csv)
    start, end = when(since, "--since"), when(until, "--until")
    with open_db(db) as store:
        found = queries.trend(
            store.engine, measurement, sequence, by_sw_version, start, end, campaigns, last or None, baseline
        )
    if output is not None:
        from bench.results.chart import trend_figure, write_png

        title = f"{measurement} [{found.unit}]" + (f" in {sequence}" if sequence else "")
        write_png(trend_figure(found.chart, found.starts, title, found.unit, found.versions), output)
        _say(f"chart written to {output}")
    if fmt == "csv":
        typer.echo(render(found.points_flagged(), fmt))
        return
    sections = {"limits": found.summary(), "violations": found.violations()}
    if fmt == "json":
        sections["points"] = found.points_flagged()
    typer.echo(render_sections(sections, fmt))


@db_app.command()
def cpk(
    measurement: Annotated[str, typer.Argument(help="measurement name")],
    sequence: SequenceOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    last: Annotated[int, typer.Option("--last", help="the latest so many values; 0: all")] = 0,
    campaigns: CampaignsOpt = False,
    db: DbOpt = None,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
) -> None:
    """Process capability (Cp, Cpk; Pp, Ppk) of a measurement against the limits recorded with it."""
    from bench.results import queries

    start, end = when(since, "--since"), when(until, "--until")
    _answer(
        db,
        lambda e: queries.cpk(e, measurement, sequence, start, end, campaigns, last or None).table(),
        as_json,
        as_csv,
    )


@db_app.command()
def affected(
    equipment: Annotated[str, typer.Option("--equipment", help="the instrument's asset id")],
    since: Annotated[str, typer.Option("--since", help="from this date or instant (UTC)")],
    until: UntilOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
) -> None:
    """Every run, and its report, that used the instrument in the window (ISO/IEC 17025 7.10)."""
    from bench.results import queries

    start, end = when(since, "--since"), when(until, "--until")
    assert start is not None
    _answer(db, lambda e: queries.affected(e, equipment, start, end), as_json, as_csv)
