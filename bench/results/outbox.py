"""The local queue of runs the results database could not take when they ended.

A run whose database cannot be reached leaves an entry ``<data folder>/results-outbox/<run id>``
(written atomically: a temporary file renamed) naming its folder and the database it was meant
for, without the database's password (an outbox is a plain file in the user's data folder; the
password comes again from where it came at the run's end, ``BENCH_RESULTS`` or ``--db``, or from
PostgreSQL's own password file). ``bench db sync`` and the next run's end index every queued folder and remove its entry only
after the database committed it, so a run is never lost; the write being idempotent on run id and
manifest hash, a run queued twice or indexed before its entry went is never indexed twice.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import LoadError
from bench.record.manifest import _fsync_dir as fsync_dir
from bench.results.rows import RunTags, from_run_folder
from bench.results.store import Store, data_folder, shown_url

OUTBOX_NAME = "results-outbox"


def outbox_folder() -> Path:
    return data_folder() / OUTBOX_NAME


@dataclass(frozen=True)
class Queued:
    entry: Path
    folder: Path
    url: str
    tags: RunTags


def enqueue(folder: Path, run_id: str, url: str, tags: RunTags | None = None, why: str = "") -> Path:
    """Queue ``folder`` for ``url``; raises OSError when even the outbox cannot be written."""
    box = outbox_folder()
    box.mkdir(parents=True, exist_ok=True)
    entry = box / run_id
    body = {"folder": str(folder.resolve()), "url": shown_url(url), "why": why, "tags": (tags or RunTags()).__dict__}
    fd, tmp = tempfile.mkstemp(dir=box, prefix=f".{run_id}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(body, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, entry)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(box)  # the rename outlives a power cut only once the folder's entry does
    return entry


def queued(url: str | None = None) -> list[Queued]:
    """The queued runs, oldest run id first (run ids are UUIDv7: time-ordered); only those meant for
    ``url`` when given (compared without its password). An entry that cannot be read is left for
    the user to see."""
    box = outbox_folder()
    if not box.is_dir():
        return []
    found = []
    for entry in sorted(box.iterdir()):
        if entry.name.startswith("."):
            continue
        try:
            body = json.loads(entry.read_text(encoding="utf-8"))
            q = Queued(entry, Path(body["folder"]), str(body["url"]), RunTags(**body.get("tags") or {}))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if url is None or q.url == shown_url(url):
            found.append(q)
    return found


@dataclass
class SyncReport:
    added: int = 0
    same: int = 0
    problems: list[str] = field(default_factory=list)
    """One line per queued run that stays queued (refused) or whose folder is gone (entry removed)."""

    @property
    def done(self) -> int:
        return self.added + self.same


def sync(
    store: Store, entries: list[Queued], *, verify: bool = True, note: Callable[[str], None] | None = None
) -> SyncReport:
    """Index the queued runs into ``store``, each in its own transaction, removing each entry after
    its commit. A folder that fails verification stays queued (refused, with its first problem); a
    folder that is gone cannot be indexed and its entry is removed with a line saying so. Database
    errors propagate: what was not committed stays queued."""
    from bench.record.verify import verify_run

    report = SyncReport()
    for q in entries:
        if not (q.folder / "manifest.json").is_file():
            report.problems.append(f"{q.folder}: queued run folder is gone or unsealed; its entry is removed")
            q.entry.unlink(missing_ok=True)
            continue
        problems = verify_run(q.folder) if verify else []
        if problems:
            report.problems.append(f"{q.folder}: refused, the record does not verify: {problems[0]}")
            continue
        try:
            outcome = store.index(from_run_folder(q.folder, q.tags))
        except LoadError as exc:  # its message names the folder
            report.problems.append(str(exc))
            continue
        q.entry.unlink(missing_ok=True)
        if outcome == "added":
            report.added += 1
        else:
            report.same += 1
        if note is not None:
            note(f"{q.folder.name}: {outcome}")
    return report
