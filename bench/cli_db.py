"""``bench db ...``: the results database (docs/results.md).

``import`` indexes existing run folders (each verified first), ``sync`` indexes the runs queued
while the database could not be reached; the questions across runs are further commands of the
same group. Every command takes ``--db URL`` (else ``BENCH_RESULTS``, else the SQLite file in the
user's data folder). Registered on the main app by ``bench/cli.py``; SQLAlchemy is imported inside
the commands, so ``bench --help`` and ``bench run``'s start never load it.

Exit codes: 0 done; 1 a folder or queued run was refused (the others were indexed); 2 bad input;
3 the database cannot be reached or was written by a newer version.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bench.errors import BenchError, LoadError

if TYPE_CHECKING:
    from bench.results.outbox import Queued
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


def open_db(db: str | None) -> Store:
    """The store for a ``bench db`` command; a database that cannot be reached is one line, exit 3."""
    from bench.results.after_run import DATABASE_ERRORS, one_line
    from bench.results.store import DatabaseError, open_store, results_url, shown_url

    try:
        return open_store(db)
    except BenchError:
        raise
    except DATABASE_ERRORS as exc:
        raise DatabaseError(f"results database {shown_url(results_url(db))}: {one_line(exc)}") from None


def run_folders(paths: Iterable[Path]) -> Iterator[Path]:
    """Every sealed run folder at or under ``paths`` (a folder with a manifest), in name order."""
    from bench.record.manifest import MANIFEST_NAME

    for path in paths:
        if not path.is_dir():
            raise LoadError(f"{path}: no such folder")
        if (path / MANIFEST_NAME).is_file():
            yield path
            continue
        yield from sorted(m.parent for m in path.rglob(MANIFEST_NAME) if ".lab" not in m.parts)


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
    """Index the runs queued while the database could not be reached (each to the database it was
    meant for, or all to --db)."""
    from bench.results.outbox import queued, sync
    from bench.results.store import shown_url

    entries = queued()
    if not entries:
        typer.echo("nothing queued")
        return
    groups: dict[str, list[Queued]] = {}
    for q in entries:
        groups.setdefault(db or q.url, []).append(q)
    problems = 0
    for url, group in groups.items():
        store = open_db(url)
        try:
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


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
