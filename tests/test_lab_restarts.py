"""Restarts on a real mosquitto: a broker restart, a lab power cut and a short cut of one bench's
link never run a job twice, and never leave one taken (docs/lab.md, Jobs)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from bench.lab import client
from bench.lab.protocol import Job, Result, State, decode
from tests.labkit import SHORT, Cutter, Lab, collect, lab_fixture, mosquitto_fixture, retained  # noqa: F401

BENCHES = ["bench-a", "bench-b", "bench-c"]


def run_dirs(reports: Path) -> list[Path]:
    return sorted(p for p in reports.iterdir() if (p / "events.jsonl").exists())


def wait_running(lab: Lab, jobs: list[Job], step: str = "hold", within: float = 60) -> dict[str, str]:
    """Job -> bench, once every job runs its ``step``."""
    ids = {j.job for j in jobs}
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        got = asyncio.run(retained(lab.broker.broker(), ["lab/benches/+/state"]))
        states = [decode(State, p) for p in got.values() if p]
        running = {s.job: s.bench for s in states if s.job is not None and s.job in ids and s.step == step}
        if set(running) == ids:
            return running
        time.sleep(0.3)
    raise AssertionError("jobs not all running:\n" + "\n".join(a.text()[-3000:] for a in lab.agents.values()))


def wait_results(lab: Lab, jobs: list[Job], within: float = 90) -> dict[str, Result]:
    """The result that counts of every job (bench/lab/ledger.py, as bench lab status reads it)."""
    from bench.lab.client import Snapshot
    from bench.lab.protocol import Topics

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        got = asyncio.run(retained(lab.broker.broker(), ["lab/benches/#", "lab/jobs/+"]))
        snap = Snapshot()
        for topic, payload in got.items():
            snap.apply(Topics(), topic, payload)
        results = {j.job: snap.records[j.job].result() for j in jobs if j.job in snap.records}
        if all(results.get(j.job) is not None for j in jobs):
            return results  # type: ignore[return-value]
        time.sleep(0.5)
    raise AssertionError("no result for every job:\n" + "\n".join(a.text()[-3000:] for a in lab.agents.values()))


def test_a_broker_restart_runs_no_job_twice(lab: Lab) -> None:
    """mosquitto sends every client's will when it stops (will delay or not): each bench sees all
    others offline. Their grace counts only while connected, so nothing is taken again."""
    for b in BENCHES:
        lab.start_agent(b, realtime=True, grace=3.0)
    lab.wait_online(BENCHES)
    op = lab.broker.broker()
    ref = client.sequence_ref(str(SHORT))
    jobs = [client.make_job(ref, {"hold": "10 s"}, {}) for _ in BENCHES]
    asyncio.run(client.submit(op, jobs))
    running = wait_running(lab, jobs)
    assert sorted(running.values()) == BENCHES, running
    lab.broker.stop()
    time.sleep(2.0)
    lab.broker.start()
    results = wait_results(lab, jobs)
    logs = "\n".join(a.text() for a in lab.agents.values())
    assert "broker connection lost" in logs, logs
    assert all(r.verdict == "PASS" and r.attempt == 1 for r in results.values()), results
    assert "open again" not in logs, logs
    time.sleep(1.0)  # a second run would have started by now
    assert len(run_dirs(lab.reports)) == 3, [d.name for d in run_dirs(lab.reports)]


def test_a_lab_power_cut_abandons_each_run_once_and_runs_each_job_again(lab: Lab) -> None:
    """Every agent SIGKILLed mid-run and started again (the broker kept): each bench finds its own
    open claim, marks that run ABANDONED naming its unsealed folder, and the job runs once more."""
    for b in BENCHES:
        lab.start_agent(b, realtime=True)
    lab.wait_online(BENCHES)
    op = lab.broker.broker()
    ref = client.sequence_ref(str(SHORT))
    jobs = [client.make_job(ref, {"hold": "6 s"}, {}) for _ in BENCHES]
    ids = {j.job for j in jobs}

    def finished(got: list[tuple[str, bytes]]) -> bool:
        res = [decode(Result, p) for t, p in got if "/results/" in t and p]
        return {r.job for r in res if r.verdict == "PASS"} >= ids

    async def scenario() -> list[tuple[str, bytes]]:
        async def cut_power() -> None:
            await asyncio.to_thread(wait_running, lab, jobs)
            for a in lab.agents.values():
                a.proc.send_signal(signal.SIGKILL)
            for a in list(lab.agents.values()):
                await asyncio.to_thread(a.proc.wait)
            for b in BENCHES:
                lab.start_agent(b, realtime=True)

        async def start() -> None:
            await client.submit(op, jobs)
            asyncio.get_running_loop().create_task(cut_power())

        return await collect(op, ["lab/benches/+/results/+"], finished, 120, on_ready=start)

    got = asyncio.run(scenario())
    res = [decode(Result, p) for t, p in got if "/results/" in t and p]
    for j in ids:
        mine = [r for r in res if r.job == j]
        abandoned = [r for r in mine if r.verdict == "ABANDONED"]
        passed = [r for r in mine if r.verdict == "PASS"]
        assert len(abandoned) == 1 and len(passed) == 1, mine
        assert abandoned[0].attempt == 1 and passed[0].attempt == 2, mine
        folder = Path(abandoned[0].report)
        assert folder.is_dir() and not (folder / "manifest.json").exists(), abandoned[0]
        assert str(folder) in abandoned[0].reason, abandoned[0].reason
    # Three abandoned runs and three that finished; none is taken any more.
    assert len(run_dirs(lab.reports)) == 6
    final = wait_results(lab, jobs, within=10)
    assert {r.verdict for r in final.values()} == {"PASS"}, final


def test_a_short_cut_of_one_bench_under_the_grace_runs_nothing_again(lab: Lab) -> None:
    """The link of the running bench is cut for 2.7 s (grace 5 s): its will is delayed by the grace
    (MQTT 5 will delay), it is back before that, and no other bench takes its job. Then the same
    bench is frozen (SIGSTOP) for 2.7 s: nothing either."""
    cutter = Cutter(lab.broker.port)
    try:
        lab.start_agent("bench-a", realtime=True, grace=5.0, port=cutter.port)
        lab.wait_online(["bench-a"])
        op = lab.broker.broker()
        # Any bench may run the job: bench-b would take it if the cut made it open again.
        job = client.make_job(client.sequence_ref(str(SHORT)), {"hold": "14 s"}, {})
        other = client.make_job(client.sequence_ref(str(SHORT)), {"hold": "1 s"}, {"bench": "bench-b"})
        asyncio.run(client.submit(op, [job]))
        wait_running(lab, [job])
        lab.start_agent("bench-b", realtime=True, grace=5.0)
        lab.wait_online(["bench-a", "bench-b"])
        cutter.cut(2.7)
        time.sleep(4.0)
        os.kill(lab.agents["bench-a"].proc.pid, signal.SIGSTOP)
        time.sleep(2.7)
        os.kill(lab.agents["bench-a"].proc.pid, signal.SIGCONT)
        asyncio.run(client.submit(op, [other]))  # bench-b is still free and takes what is its own
        results = wait_results(lab, [job, other])
    finally:
        cutter.close()
    a_log = lab.agents["bench-a"].text()
    b_log = lab.agents["bench-b"].text()
    assert "broker connection lost" in a_log, a_log  # the cut did happen
    res = results[job.job]
    assert res.bench == "bench-a" and res.attempt == 1, (res, a_log, b_log)
    # The freeze is real for the run as well: the simulated supply's interface watchdog may switch
    # its output off while the controller is silent, and the run says so. It is not run again.
    assert res.verdict in ("PASS", "FAIL"), (res, a_log)
    assert results[other.job].bench == "bench-b"
    assert "open again" not in b_log, b_log
    assert "Bad file descriptor" not in a_log and "Traceback" not in a_log, a_log
    assert len(run_dirs(lab.reports)) == 2
