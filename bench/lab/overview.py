"""The tables of ``bench lab status``: benches as last known, open jobs, the last finished ones.

Everything shown comes from one complete read of the retained state (bench/lab/client.py
``snapshot``), and optionally the archive file (bench/lab/archive.py). Which claim wins and which
result counts is bench/lab/ledger.py's rule, the same for the agents, ``lab watch`` and this view.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.clock import epoch_of
from bench.lab.archive import ArchivedJob
from bench.lab.client import BenchView, Snapshot
from bench.lab.ledger import JobRecord
from bench.lab.protocol import Job, Result

BENCH_HEADER = (
    "BENCH            ONLINE  STATE     JOB                                   PROGRESS                     LEASE"
)
JOB_HEADER = "JOB                                   SEQUENCE                 STATE     BENCH            VERDICT"
DEFAULT_LAST = 20


def age_text(seconds: float) -> str:
    """A short age: ``45s``, ``12m``, ``5h``, ``3d`` (a display only: ``--older-than`` takes units of time such as ``12 min``)."""
    s = max(0.0, seconds)  # a bench clock ahead of ours: the state is as new as it gets
    for unit, size, up_to in (("s", 1, 120), ("m", 60, 120 * 60), ("h", 3600, 48 * 3600)):
        if s < up_to:
            return f"{s // size:.0f}{unit}"
    return f"{s // 86400:.0f}d"


def bench_line(bv: BenchView, now: float) -> str:
    """A bench as last known. An offline bench is never shown running: its last state is 'was ...',
    with how long ago the bench published it (``now``: the wall clock, seconds since the epoch)."""
    online = bool(bv.status and bv.status.online)
    st = bv.state
    job = (st.job or "-") if st else "-"
    state: str
    if online:
        state = st.state if st else "?"
        progress = f"{st.steps_done}/{st.steps_total} {st.step or ''}" if st and st.state == "running" else ""
    else:
        state = "offline"
        progress = ""
        if st is not None:
            progress = f"was {st.state}" + (f" {st.steps_done}/{st.steps_total}" if st.state == "running" else "")
            published = epoch_of(st.published_utc)
            if published is not None:
                progress += f", {age_text(now - published)} ago"
    lease = f"{bv.lease.holder} until {bv.lease.expires_utc}" if bv.lease and bv.lease.holder else "-"
    return f"{bv.name:16s} {'yes' if online else 'no':7s} {state:9s} {job:37s} {progress[:28]:28s} {lease}"


def bench_lines(snap: Snapshot, now: float) -> list[str]:
    return [BENCH_HEADER, *(bench_line(bv, now) for _, bv in sorted(snap.benches.items()))]


@dataclass
class Row:
    """One job of the table: live from the broker, or from the archive."""

    job: Job
    counted: Result | None
    results: list[Result]
    record: JobRecord | None  # None: archived

    @property
    def key(self) -> tuple[str, str]:
        return (self.job.submitted_utc, self.job.job)  # job ids are UUIDv7: time order too


def _note(row: Row, res: Result) -> str:
    """Why a result other than the job's own is shown: the job ran again, or it does not count."""
    rec = row.record
    if rec is None:
        return "not the job's result"  # archived: the archive keeps which one counted
    for ignored in rec.ignored_results():
        if (ignored.bench, ignored.attempt) == (res.bench, res.attempt):
            return f"does not count: {ignored.reason}"
    return "ran again; the earliest attempt counts"


def job_lines(row: Row, snap: Snapshot) -> list[str]:
    """The job's line, then one line for every other attempt's result (a job that ran twice)."""
    job, res, rec = row.job, row.counted, row.record
    if rec is None:
        state, where, verdict = "archived", res.bench if res else "-", res.verdict if res else ""
    elif res is not None:
        state, where, verdict = "done", res.bench, res.verdict
    else:
        won = rec.last_winner()
        disputed = any(rec.disputed(a) for a in rec.claims)
        state = "disputed" if disputed else "taken" if won else "queued"
        where = won[1] if won else "-"
        verdict = "(bench offline)" if won and not snap.is_online(won[1]) else ""
    lines = [f"{job.job:37s} {job.sequence.id[:24]:24s} {state:9s} {where:16s} {verdict}"]
    for other in row.results:
        if res is not None and other.bench == res.bench and other.attempt == res.attempt:
            continue
        run = f" run {other.run_id}" if other.run_id else ""
        lines.append(f"  attempt {other.attempt} on {other.bench}: {other.verdict}{run} ({_note(row, other)})")
    return lines


def rows(snap: Snapshot, archived: dict[str, ArchivedJob] | None = None) -> list[Row]:
    out: list[Row] = []
    for jid, job in snap.jobs.items():
        rec = snap.records[jid]
        results = [r for _, r in sorted(rec.results.items(), key=lambda kv: (kv[0][1], kv[0][0]))]
        out.append(Row(job, rec.result(), results, rec))
    for jid, line in (archived or {}).items():
        if jid not in snap.jobs:  # still on the broker: the live record is the newer word
            out.append(Row(line.job, line.result, line.results, None))
    return sorted(out, key=lambda r: r.key)


def job_table(
    snap: Snapshot, archived: dict[str, ArchivedJob] | None = None, *, last: int = DEFAULT_LAST, show_all: bool = False
) -> list[str]:
    """Every open job, and the last ``last`` finished ones (all with ``show_all``); then the counts."""
    everything = rows(snap, archived)
    finished = [r for r in everything if r.counted is not None]
    open_rows = [r for r in everything if r.counted is None]
    shown_finished = finished if show_all else finished[-last:] if last > 0 else []
    shown = {id(r) for r in shown_finished} | {id(r) for r in open_rows}
    out = [JOB_HEADER]
    for r in everything:
        if id(r) in shown:
            out.extend(job_lines(r, snap))
    in_archive = sum(1 for r in everything if r.record is None)
    summary = f"{len(open_rows)} open, {len(finished)} finished"
    if archived is not None:
        summary += f" ({in_archive} of them from the archive)"
    if len(shown_finished) < len(finished):
        summary += f"; the last {len(shown_finished)} finished are shown (--last N, --all)"
    out.append(summary)
    return out
