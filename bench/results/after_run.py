"""The end of every run: index its sealed folder, or queue it when the database cannot take it.

Called by the one run path (bench/runner.py) once the record is sealed and the station released.
Nothing here changes the run's verdict or exit code, and nothing raises: a database that is down,
refuses the login or was written by a newer version costs one warning line and an outbox entry
(bench/results/outbox.py), which ``bench db sync`` or the next run's end takes up.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from bench.errors import BenchError
from bench.record.manifest import MANIFEST_NAME
from bench.results.outbox import enqueue, queued, sync
from bench.results.rows import RunTags, from_run_folder
from bench.results.store import open_store, results_url, shown_url

# What a database that cannot take the run raises: the driver's errors (wrapped by SQLAlchemy),
# the OS's (a SQLite file in a folder that cannot be written), ours (a URL without a driver, a
# revision this version does not know).
DATABASE_ERRORS = (SQLAlchemyError, OSError, BenchError)
# Queued runs a run's end takes along: after a long outage the first run back does not spend
# minutes verifying the whole queue (``bench db sync`` takes all of it).
BACKLOG_PER_RUN = 25
# The longest one statement may take at a run's end (a lock another client holds, a stuck server);
# the run is then queued. SQLite waits as long for its write lock (bench/results/store.py).
STATEMENT_TIMEOUT_S = 30


def one_line(exc: BaseException) -> str:
    """The first line of what the driver said (SQLAlchemy adds the statement and a link after it)."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 160 else line[:157] + "..."


def index_after_run(folder: Path, run_id: str, station_url: str | None, tags: RunTags) -> tuple[str | None, str | None]:
    """Index the run in ``folder``: (the line saying where, or None; a warning line, or None).

    An unsealed folder (the record could not be completed, its run says why) is not indexed: the
    database holds verified records only. After the run, up to BACKLOG_PER_RUN of the runs queued
    for the same database are indexed too; whatever of them fails stays queued, silently (``bench db
    sync`` reports it). Any other failure queues the run as well: nothing here may end the run's
    process with another exit code.
    """
    if not (folder / MANIFEST_NAME).is_file():
        return None, None
    url = results_url(None, station_url)
    try:
        with open_store(url, timeout_s=STATEMENT_TIMEOUT_S) as store:
            store.index(from_run_folder(folder, tags))
            backlog = queued(url)[:BACKLOG_PER_RUN]
            caught_up = 0
            with contextlib.suppress(*DATABASE_ERRORS):
                caught_up = sync(store, backlog).done if backlog else 0
        return f"indexed in {shown_url(url)}" + (f" (and {caught_up} queued run(s))" if caught_up else ""), None
    except Exception as exc:
        why = one_line(exc) if isinstance(exc, DATABASE_ERRORS) else f"{type(exc).__name__}: {one_line(exc)}"
        try:
            enqueue(folder, run_id, url, tags, why)
        except OSError as oexc:
            return None, (
                f"results database unreachable ({why}) and the outbox not writable ({oexc.strerror or oexc}):"
                f" run not queued, 'bench db import {folder}' indexes it"
            )
        return None, f"results database unreachable ({why}): run queued, 'bench db sync' catches up"
