"""The agent with a long history and in a large lab, on a real mosquitto: 10,000 finished jobs
retained do not keep it from taking a new job at once nor stall it into a keepalive drop; an
archived job's claim and result are cleared by their bench; with 20 benches a job draws about one
claim (docs/lab.md, Jobs)."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest

from bench.lab import client
from bench.lab.agent import Agent
from bench.lab.mqtt import client as mqtt_client
from bench.lab.protocol import Job, Result, decode
from tests.labkit import (  # noqa: F401  (fixtures)
    SHORT,
    Lab,
    add_users,
    collect,
    finished_history,
    lab_fixture,
    mosquitto_fixture,
    retained,
    station_file,
)

HISTORY = 10_000


def _seconds(pattern: str, log: str) -> float:
    m = re.search(pattern, log)
    assert m, log
    return float(m.group(1))


def test_ten_thousand_finished_jobs_neither_delay_a_new_job_nor_drop_the_connection(lab: Lab) -> None:
    t0 = time.monotonic()
    asyncio.run(finished_history(lab.broker, HISTORY, "bench-b"))
    fill_s = time.monotonic() - t0
    a = lab.start_agent("bench-a")
    deadline = time.monotonic() + 60
    while "ready for new jobs" not in a.text():
        assert time.monotonic() < deadline and a.proc.poll() is None, a.text()
        time.sleep(0.05)
    op = lab.broker.broker()
    job = client.make_job(client.sequence_ref(str(SHORT)), {"hold": "1 s"}, {})
    claimed: dict[str, float] = {}

    def taken(got: list[tuple[str, bytes]]) -> bool:
        if "at" not in claimed and any(t.endswith(f"/claims/{job.job}") and p for t, p in got):
            claimed["at"] = time.monotonic()
        return any(t.endswith(f"/results/{job.job}") and p for t, p in got)

    async def submit() -> None:
        claimed["submitted"] = time.monotonic()
        await client.submit(op, [job], check=False)

    # Submitted while the agent is still reading the history: it takes the job at once all the same.
    got = asyncio.run(
        collect(op, ["lab/benches/bench-a/claims/+", "lab/benches/bench-a/results/+"], taken, 120, submit)
    )
    res = next(decode(Result, p) for t, p in got if t.endswith(f"/results/{job.job}") and p)
    deadline = time.monotonic() + 60
    while "history of" not in a.text():
        assert time.monotonic() < deadline, a.text()
        time.sleep(0.2)
    log = a.text()
    ready = _seconds(r"ready for new jobs ([\d.]+) s after connecting", log)
    history = _seconds(r"history of \d+ messages read ([\d.]+) s after connecting", log)
    claim_s = claimed["at"] - claimed["submitted"]
    print(
        f"{HISTORY} finished jobs ({3 * HISTORY} retained messages, filled in {fill_s:.1f} s): ready for new "
        f"jobs {ready:.2f} s after connecting, history read in {history:.2f} s, new job claimed "
        f"{claim_s:.2f} s after its submission"
    )
    assert res.bench == "bench-a" and res.verdict == "PASS", res
    assert ready <= 1.0, log
    assert claim_s <= 3.0, (claim_s, log)  # generous for a loaded machine; typically well under 1 s
    # The whole history; the new job's own retained messages may land in the read too (it was
    # submitted while the history was being read).
    read = int(_seconds(r"history of (\d+) messages", log))
    assert 3 * HISTORY <= read <= 3 * HISTORY + 3, log
    assert "broker connection lost" not in log, log  # no keepalive drop


def test_an_archived_job_s_claim_and_result_are_cleared_by_its_bench(lab: Lab) -> None:
    op = lab.broker.broker()
    a = lab.start_agent("bench-a")
    lab.wait_online(["bench-a"])
    ref = client.sequence_ref(str(SHORT))
    live, while_away = (client.make_job(ref, {"hold": "1 s"}, {}) for _ in range(2))

    def finished(job: Job) -> None:
        asyncio.run(
            collect(
                op,
                [f"lab/benches/bench-a/results/{job.job}"],
                lambda got: any(p for _, p in got),
                60,
                lambda: client.submit(op, [job], check=False),
            )
        )

    async def clear(job: Job) -> None:
        async with mqtt_client(op, "archiver") as c:
            await c.publish(f"lab/jobs/{job.job}", b"", qos=1, retain=True)

    def mine(job: Job) -> dict[str, bytes]:
        topics = [f"lab/benches/bench-a/claims/{job.job}", f"lab/benches/bench-a/results/{job.job}"]
        return asyncio.run(retained(op, topics))

    finished(live)
    finished(while_away)
    assert len(mine(live)) == 2 and len(mine(while_away)) == 2
    # Archived while the agent runs: it clears its claim and result at once.
    asyncio.run(clear(live))
    deadline = time.monotonic() + 10
    while mine(live):
        assert time.monotonic() < deadline, a.text()
        time.sleep(0.2)
    # Archived while the agent is away: it clears them once it has read the history.
    lab.stop_all()
    asyncio.run(clear(while_away))
    assert len(mine(while_away)) == 2
    lab.start_agent("bench-a")
    deadline = time.monotonic() + 20
    while mine(while_away):
        assert time.monotonic() < deadline, lab.agents["bench-a"].text()
        time.sleep(0.2)
    log = lab.agents["bench-a"].text()
    assert "no record on the broker (archived)" in log, log


BENCHES_20 = [f"bench-{i:02d}" for i in range(20)]


class QuickAgent(Agent):
    """A bench agent whose runs take a fixed time and pass. Twenty simulated benches in one process
    would share its in-process buses; what is measured here is how benches take jobs, over the
    real broker, and that does not depend on what a run does."""

    async def _run(self, name: str, attempt: int) -> None:
        # Every run exactly 1 s: the benches of each wave become idle at the same instant with a
        # backlog of open jobs, the case where claims collide most (runs of 0.5 to 1.5 s collide less).
        await asyncio.sleep(1.0)
        await self._finish(name, attempt, Result(job=name, bench=self.bench, attempt=attempt, verdict="PASS"))


def test_with_twenty_benches_a_job_draws_about_one_claim(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twenty agents (in one process, each with its own connections), 60 jobs in one burst: the
    bench that got the wake-up claims; the others only claim a job still unclaimed at their turn;
    benches freed at once with a backlog mostly claim different jobs of the oldest few."""
    add_users(lab.broker, {b: f"{b}-secret" for b in BENCHES_20})
    monkeypatch.setenv("BENCH_REPORT_PDF", "0")
    monkeypatch.setenv("BENCH_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("BENCH_KEY_DIR", str(tmp_path / "no-keys"))
    folder = tmp_path / "stations"
    folder.mkdir()
    ref = client.sequence_ref(str(SHORT))
    jobs = [client.make_job(ref, {}, {}) for _ in range(60)]
    ids = {j.job for j in jobs}
    op = lab.broker.broker()

    async def scenario() -> list[tuple[str, bytes]]:
        agents = [
            QuickAgent(station_file(folder, b), lab.broker.broker(b), reports=lab.reports, requeue_grace=3.0)
            for b in BENCHES_20
        ]
        tasks = [asyncio.create_task(x.serve()) for x in agents]
        try:
            for _ in range(600):  # every agent has read the (empty) history
                if all(x.synced for x in agents):
                    break
                await asyncio.sleep(0.1)
            assert all(x.synced for x in agents)
            await asyncio.sleep(0.5)  # every agent has seen every other one online

            def done(got: list[tuple[str, bytes]]) -> bool:
                return {decode(Result, p).job for t, p in got if "/results/" in t and p} >= ids

            return await collect(
                op,
                ["lab/benches/+/claims/+", "lab/benches/+/results/+"],
                done,
                240,
                lambda: client.submit(op, jobs, check=False),
            )
        finally:
            for x in agents:
                x.stop("test over")
            await asyncio.gather(*tasks, return_exceptions=True)

    got = asyncio.run(scenario())
    claims = [t for t, p in got if "/claims/" in t and p]
    withdrawn = [t for t, p in got if "/claims/" in t and not p]
    results = [decode(Result, p) for t, p in got if "/results/" in t and p]
    per_job = len(claims) / len(jobs)
    print(
        f"{len(BENCHES_20)} benches, {len(jobs)} jobs: {len(claims)} claims ({per_job:.2f} per job), "
        f"{len(withdrawn)} withdrawn; {len({r.bench for r in results})} benches ran jobs"
    )
    assert {r.job for r in results} == ids and all(r.verdict == "PASS" for r in results), results
    assert len(results) == len(jobs)  # each exactly once
    assert per_job <= 1.5, (len(claims), len(withdrawn))
