"""``bench lab archive``: move finished jobs out of the broker into an append-only file.

The broker's retained messages are the lab's live state; left alone they grow with every job, and
every reader (agents, ``lab status``) reads all of them on connect. A finished job — one whose
result counts (bench/lab/ledger.py) — is written as one JSON line to the archive: its record, the
result that counts with its signature, every other attempt's result and the claims. Only once the
file is flushed to disk (fsync) is the job's retained record ``lab/jobs/<job>`` cleared (an empty
retained publish); the benches then clear their own claims and results of that job. A write that
fails clears nothing. A job archived twice (a run that wrote its lines and stopped before
clearing) has two equal lines; readers keep the last one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from bench.clock import epoch_of, utc
from bench.errors import BenchError, ExpressionError, LoadError
from bench.lab import mqtt
from bench.lab.client import Snapshot, connected, snapshot
from bench.lab.ledger import JobRecord
from bench.lab.protocol import Job, Result, Topics
from bench.lab.trust import LabKeys
from bench.units import parse_duration

ARCHIVE_VERSION = 1
# Clears in flight at once: each is acknowledged by the broker (QoS 1) before the command ends.
CLEAR_WINDOW = 500


class ArchivedJob(BaseModel):
    """One line of the archive file."""

    model_config = ConfigDict(extra="forbid")
    v: int = ARCHIVE_VERSION
    archived_utc: str
    job: Job
    result: Result  # the result that counts, as the bench signed it
    results: list[Result] = []  # every attempt's result, the counted one included
    claims: dict[int, list[str]] = {}  # attempt -> benches that held a claim, in the order seen


class ArchiveWriteError(BenchError):
    """The archive file could not be written: nothing was cleared from the broker."""

    exit_code = 3


def parse_older_than(text: str) -> float:
    """``--older-than`` in seconds (``90 s``, ``30 min``, ``12 h``, ``7 d``): bench/units.py reads it."""
    try:
        return parse_duration(text)
    except ExpressionError as exc:
        raise LoadError(f"--older-than {text}: {exc}") from None


def submitted_epoch(job: Job) -> float | None:
    return epoch_of(job.submitted_utc)


def finished_lines(snap: Snapshot, older_than_s: float | None, now: float, archived_utc: str) -> list[ArchivedJob]:
    """The jobs to archive: a counted result, and submitted more than ``older_than_s`` ago.

    A job without a readable submission time is archived whatever ``older_than_s`` says: it is
    finished, and it would otherwise stay on the broker for ever.
    """
    out: list[ArchivedJob] = []
    for jid, job in sorted(snap.jobs.items()):
        rec = snap.records[jid]
        res = rec.result()
        if res is None:
            continue
        t = submitted_epoch(job)
        if older_than_s is not None and t is not None and now - t < older_than_s:
            continue
        out.append(to_line(job, rec, res, archived_utc))
    return out


def to_line(job: Job, rec: JobRecord, counted: Result, archived_utc: str) -> ArchivedJob:
    return ArchivedJob(
        archived_utc=archived_utc,
        job=job,
        result=counted,
        results=[r for _, r in sorted(rec.results.items(), key=lambda kv: (kv[0][1], kv[0][0]))],
        claims={a: [b for b, _ in entries] for a, entries in sorted(rec.claims.items())},
    )


def append_durably(
    path: Path, data: bytes, *, what: str = "archive", unless: str = "nothing was cleared", mode: int = 0o644
) -> None:
    """Append ``data`` and fsync it (and the folder, for a new file); on any error undo the append.

    Raises ``ArchiveWriteError`` (one line, "``what`` ``path``: cannot ...; ``unless``"): a full
    disk, a read-only file system, no permission. ``mode``: of a new file.
    """
    created = not path.exists()
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, mode)
    except OSError as exc:
        raise ArchiveWriteError(f"{what} {path}: cannot open ({exc.strerror}); {unless}") from None
    start = 0
    try:
        start = os.fstat(fd).st_size
        if start and os.pread(fd, 1, start - 1) != b"\n":
            data = b"\n" + data  # an earlier append was cut short: keep its torn line apart
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)  # no half line left for the next append to continue
        raise ArchiveWriteError(f"{what} {path}: cannot write ({exc.strerror}); {unless}") from None
    finally:
        os.close(fd)
    if created:
        # The new file's name must survive a power cut too, or its lines are lost with it.
        try:
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            raise ArchiveWriteError(f"{what} {path}: cannot sync its folder ({exc.strerror}); {unless}") from None


@dataclass
class ArchiveSummary:
    archived: int
    kept_recent: int  # finished, but newer than --older-than
    open: int  # no result that counts yet


async def archive(
    broker: mqtt.Broker,
    to: Path,
    *,
    older_than_s: float | None = None,
    keys: LabKeys | None = None,
    on_retry: Callable[[str], None] | None = None,
) -> ArchiveSummary:
    """Append every finished job to ``to``, fsync, then clear the jobs' retained records."""
    snap = await snapshot(broker, keys=keys, on_retry=on_retry)
    now = time.time()

    lines = finished_lines(snap, older_than_s, now, utc(now))
    finished = sum(1 for jid in snap.jobs if snap.records[jid].result() is not None)
    summary = ArchiveSummary(len(lines), finished - len(lines), len(snap.jobs) - finished)
    if not lines:
        return summary
    append_durably(to, b"".join(line.model_dump_json().encode() + b"\n" for line in lines))
    t = Topics(broker.prefix)
    async with connected(broker, "archive") as c:
        for i in range(0, len(lines), CLEAR_WINDOW):
            chunk = lines[i : i + CLEAR_WINDOW]
            await asyncio.gather(*(c.publish(t.job(line.job.job), b"", qos=1, retain=True) for line in chunk))
    return summary


@dataclass
class ArchiveRead:
    jobs: dict[str, ArchivedJob]
    damaged: list[int]  # line numbers that are not an archive line (a torn append)


def read_archive(path: Path) -> ArchiveRead:
    """Every job of an archive file (the last line of a job archived twice wins)."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise LoadError(f"--archive {path}: cannot read ({exc.strerror})") from None
    jobs: dict[str, ArchivedJob] = {}
    damaged: list[int] = []
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = ArchivedJob.model_validate_json(raw)
        except ValidationError:
            damaged.append(n)
            continue
        jobs[line.job.job] = line
    return ArchiveRead(jobs, damaged)
