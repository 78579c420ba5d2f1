"""What ``bench lab status`` shows, without a broker: a dead bench is not "running" for ever, a
job that ran twice shows both results, and the table shows open jobs and the last finished ones.
"""

from __future__ import annotations

from bench.clock import utc
from bench.lab import overview
from bench.lab.archive import ArchivedJob
from bench.lab.client import Snapshot
from bench.lab.protocol import Claim, Job, Result, SequenceRef, State, Status, Topics, encode

T = Topics("lab")
NOW = 1_796_000_000.0  # the wall clock of the status read (2026-11-30)
SEQ = SequenceRef(id="LAB-SHORT", sha256="a" * 64)


def job(n: int) -> Job:
    return Job(job=f"job-{n:04d}", sequence=SEQ, submitted_utc=f"2026-12-01T00:00:{n % 60:02d}.000Z")


def feed(snap: Snapshot, topic: str, msg: object) -> None:
    snap.apply(T, topic, encode(msg))  # type: ignore[arg-type]


def finished(snap: Snapshot, n: int, bench: str = "bench-a") -> Job:
    j = job(n)
    feed(snap, f"lab/jobs/{j.job}", j)
    feed(snap, f"lab/benches/{bench}/claims/{j.job}", Claim(job=j.job, attempt=1, bench=bench))
    feed(snap, f"lab/benches/{bench}/results/{j.job}", Result(job=j.job, bench=bench, attempt=1, verdict="PASS"))
    return j


def test_a_dead_bench_is_offline_with_its_last_state() -> None:
    snap = Snapshot()
    feed(snap, "lab/benches/bench-c/status", Status(bench="bench-c", online=False))
    running = State(bench="bench-c", state="running", job="job-0001", run_id="r1", steps_done=8, steps_total=17)
    feed(snap, "lab/benches/bench-c/state", running)
    j = job(1)
    feed(snap, f"lab/jobs/{j.job}", j)
    feed(snap, f"lab/benches/bench-c/claims/{j.job}", Claim(job=j.job, attempt=1, bench="bench-c"))
    benches = overview.bench_lines(snap, NOW)
    assert benches[1].split()[:4] == ["bench-c", "no", "offline", "job-0001"], benches
    assert "was running 8/17" in benches[1] and "8/17 " not in benches[1].replace("was running 8/17", "")
    jobs = overview.job_table(snap)
    assert jobs[1].split()[2:5] == ["taken", "bench-c", "(bench"], jobs


def test_an_offline_bench_shows_how_old_its_last_state_is() -> None:
    """The state an offline bench left behind says when the bench published it; without that a
    state hours old looked as if it had just been seen."""
    snap = Snapshot()
    feed(snap, "lab/benches/bench-c/status", Status(bench="bench-c", online=False))
    old = State(bench="bench-c", state="running", steps_done=8, steps_total=17, published_utc=utc(NOW - 3 * 3600))
    feed(snap, "lab/benches/bench-c/state", old)
    feed(snap, "lab/benches/bench-a/status", Status(bench="bench-a", online=False))
    feed(snap, "lab/benches/bench-a/state", State(bench="bench-a", state="idle", published_utc=utc(NOW - 42)))
    feed(snap, "lab/benches/bench-b/status", Status(bench="bench-b", online=False))
    feed(snap, "lab/benches/bench-b/state", State(bench="bench-b", state="idle"))  # a bench that does not say
    lines = overview.bench_lines(snap, NOW)
    assert "was idle, 42s ago" in lines[1], lines
    assert "was idle " in lines[2] + " " and "ago" not in lines[2], lines
    assert "was running 8/17, 3h ago" in lines[3], lines
    assert [overview.age_text(s) for s in (-5, 0, 119, 120, 7199, 7200, 2 * 86400)] == [
        "0s",
        "0s",
        "119s",
        "2m",
        "119m",
        "2h",
        "2d",
    ]


def test_a_job_that_ran_twice_shows_every_attempt() -> None:
    snap = Snapshot()
    j = job(2)
    feed(snap, f"lab/jobs/{j.job}", j)
    feed(snap, "lab/benches/bench-a/status", Status(bench="bench-a", online=True))
    feed(snap, "lab/benches/bench-b/status", Status(bench="bench-b", online=True))
    feed(snap, f"lab/benches/bench-a/claims/{j.job}", Claim(job=j.job, attempt=1, bench="bench-a"))
    feed(snap, f"lab/benches/bench-b/claims/{j.job}", Claim(job=j.job, attempt=2, bench="bench-b"))
    first = Result(job=j.job, bench="bench-a", attempt=1, verdict="FAIL", run_id="run-a")
    second = Result(job=j.job, bench="bench-b", attempt=2, verdict="PASS", run_id="run-b")
    feed(snap, f"lab/benches/bench-a/results/{j.job}", first)
    feed(snap, f"lab/benches/bench-b/results/{j.job}", second)
    lines = overview.job_table(snap)
    assert lines[1].split()[2:5] == ["done", "bench-a", "FAIL"], lines
    # bench-a was cut off longer than the grace, bench-b ran attempt 2, then bench-a's result came:
    # the earlier attempt's result is the job's (bench/lab/ledger.py), the other is shown with why.
    assert lines[2].startswith("  attempt 2 on bench-b: PASS run run-b (does not count: attempt 2 is not open"), lines
    assert len(lines) == 4


def test_open_jobs_and_the_last_finished_ones() -> None:
    snap = Snapshot()
    done = [finished(snap, n) for n in range(30)]
    still_open = job(45)
    feed(snap, f"lab/jobs/{still_open.job}", still_open)
    lines = overview.job_table(snap, last=5)
    shown = [ln.split()[0] for ln in lines[1:-1]]
    assert shown == [j.job for j in done[-5:]] + [still_open.job], lines
    assert lines[-1] == "1 open, 30 finished; the last 5 finished are shown (--last N, --all)"
    assert len(overview.job_table(snap, show_all=True)) == 1 + 31 + 1

    # The archive adds its jobs as finished history; a job still on the broker is shown live.
    old = job(59)
    archived = {
        old.job: ArchivedJob(
            archived_utc="2026-12-02T00:00:00.000Z",
            job=old,
            result=Result(job=old.job, bench="bench-b", attempt=1, verdict="PASS"),
        )
    }
    lines = overview.job_table(snap, archived, show_all=True)
    assert lines[-1] == "1 open, 31 finished (1 of them from the archive)"
    assert any(ln.startswith(old.job) and " archived " in ln for ln in lines)
