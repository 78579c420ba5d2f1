"""``bench lab watch`` labels each run of a job that ran twice, and a broker restart while it
watches prints nothing of paho's or asyncio's (it mixed the events of two runs without labels,
and the closed socket's messages leaked into its output). ``bench lab submit`` waits for a
broker that is away, for ``--connect-timeout`` seconds, and says so."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time

from bench.lab import client
from bench.lab.mqtt import client as mqtt_client
from bench.lab.protocol import Claim, Event, Result, Status, encode
from tests.conftest import ROOT, bench
from tests.labkit import SHORT, Mosquitto, mosquitto_fixture  # noqa: F401  (fixtures)


async def _run(m: Mosquitto, bench_id: str, job: str, attempt: int, run_id: str, result: bool) -> None:
    """What a bench publishes for one run: online, its claim, three events; then a result or its will."""
    async with mqtt_client(m.broker(bench_id), f"run-{bench_id}-{time.monotonic_ns()}") as c:
        base = f"lab/benches/{bench_id}"
        await c.publish(f"{base}/status", encode(Status(bench=bench_id, online=True)), qos=1, retain=True)
        await c.publish(
            f"{base}/claims/{job}", encode(Claim(job=job, attempt=attempt, bench=bench_id)), qos=1, retain=True
        )
        for seq, kind in enumerate(("run_started", "step_ended", "run_ended")):
            fields = {"step": "hold", "outcome": "PASS", "verdict": "PASS"}
            ev = Event(bench=bench_id, job=job, run_id=run_id, seq=seq, kind=kind, t=float(seq), fields=fields)
            await c.publish(f"{base}/events", encode(ev), qos=1)
        if result:
            res = Result(job=job, bench=bench_id, attempt=attempt, verdict="PASS", run_id=run_id, events=3)
            await c.publish(f"{base}/results/{job}", encode(res), qos=1, retain=True)
        else:
            await c.publish(f"{base}/status", encode(Status(bench=bench_id, online=False)), qos=1, retain=True)


def _wait_subscribed(m: Mosquitto, topic: str, within: float = 60) -> None:
    """The watcher has subscribed to ``topic`` (the broker logs every subscription)."""
    pattern = re.compile(r"bench-watch-\S+ \d " + re.escape(topic) + "$", re.M)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if m.log.exists() and pattern.search(m.log.read_text(errors="replace")):
            return
        time.sleep(0.1)
    raise AssertionError(f"no watcher subscribed to {topic} within {within} s")


def test_watch_labels_the_runs_of_a_job_that_ran_twice(mosquitto: Mosquitto) -> None:
    job = client.make_job(client.sequence_ref(str(SHORT)), {"hold": "1 s"}, {})
    asyncio.run(client.submit(mosquitto.broker(), [job], check=False))
    watch = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "lab", "watch", job.job, "--timeout", "90", "--broker", mosquitto.url()],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_subscribed(mosquitto, "lab/benches/+/events")
        asyncio.run(_run(mosquitto, "bench-a", job.job, 1, "run-on-a", result=False))
        time.sleep(1)
        mosquitto.stop()  # the watcher's socket closes under it
        mosquitto.log.unlink()
        time.sleep(1)
        mosquitto.start()
        _wait_subscribed(mosquitto, "lab/benches/+/events")  # the broker's new log: reconnected
        asyncio.run(_run(mosquitto, "bench-b", job.job, 2, "run-on-b", result=True))
        out, err = watch.communicate(timeout=90)
    finally:
        if watch.poll() is None:
            watch.kill()
    assert watch.returncode == 0, (out, err)
    assert err == "", err
    lines = out.splitlines()
    assert "run 1: run-on-a on bench bench-a" in lines, out
    assert "run 2: run-on-b on bench bench-b" in lines, out
    assert [ln.split()[0:2] for ln in lines if "#" in ln] == [["run", "1"]] * 3 + [["run", "2"]] * 3, out
    assert lines[-2] == "PASS " and lines[-1].startswith("bench bench-b, run run-on-b"), out


def test_submit_waits_for_a_broker_that_is_away(mosquitto: Mosquitto) -> None:
    url = mosquitto.url()
    mosquitto.stop()
    sub = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "lab", "submit", str(SHORT), "--no-check", "--broker", url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert sub.stderr is not None
    first = sub.stderr.readline()  # it is waiting: now the broker comes back
    mosquitto.start()
    out, err = sub.communicate(timeout=60)
    err = first + err
    assert sub.returncode == 0, (out, err)
    assert len(out.split()) == 1, out  # the job id
    waiting = err.strip().splitlines()
    assert waiting and all(ln.startswith("waiting: cannot connect to broker") for ln in waiting), err

    # A broker that stays away: progress, then one error line, exit code 3.
    mosquitto.stop()
    t0 = time.monotonic()
    gone = bench("lab", "submit", str(SHORT), "--connect-timeout", "3", "--broker", url)
    assert gone.rc == 3, gone
    *progress, last = gone.err.strip().splitlines()
    assert progress and all(ln.startswith("waiting: ") for ln in progress), gone.err
    assert last.startswith("error: cannot connect to broker") and last.endswith("(gave up after 3 s)"), last
    assert time.monotonic() - t0 < 30
