"""The lab at scale: many agents, a long retained history, a burst of jobs, on one mosquitto.

Starts its own mosquitto on a free 127.0.0.1 port (anonymous, loopback only: a measurement, not a
lab) with the persistence of examples/mosquitto/mosquitto.conf (autosave every second), then:

1. history: H finished jobs (record, claim, result) retained on the broker, as a lab that never
   archives would keep them;
2. agents: N real ``bench agent`` processes on copies of the simulated station; for each, the
   connect-to-ready time and the time to have read the history, from its own log; keepalive drops
   (reconnects) counted from the logs;
3. idle: broker CPU for 10 s with N agents connected and the history retained (keepalives, and the
   autosave that rewrites the database every second);
4. jobs: J jobs of tests/lab/short.yaml submitted at once; every message on ``lab/#`` counted by
   kind by a ``mosquitto_sub`` in its own process, broker CPU (the mosquitto process's time on a
   CPU, /proc/<pid>/schedstat) and the broker's own message counters ($SYS, published and sent);
   claims and withdrawals per job;
5. operator: ``bench lab status`` and ``bench lab submit`` as processes, with the history, and
   ``bench lab archive`` moving the finished jobs out;
6. after the archive: one agent restarted, its connect-to-ready time and history read.

    .venv/bin/python benchmarks/lab_scale.py [--agents 20] [--history 10000] [--jobs 100] [--stagger 8]
        [--smoke] [--json FILE]

--smoke: 2 agents, 20 finished jobs, 2 jobs, shorter pauses; the same phases and checks.

All agents run on this one machine: each reads the history with its own CPU share, which a lab,
where every bench has its own controller, does not have to share.

The baseline in the same run is the idle broker: the CPU of phase 3 against phase 4.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from paho.mqtt.subscribeoptions import SubscribeOptions  # noqa: E402

from bench.lab import client  # noqa: E402
from bench.lab.mqtt import Broker  # noqa: E402
from bench.lab.mqtt import client as mqtt_client  # noqa: E402
from bench.lab.protocol import Claim, Result, encode  # noqa: E402
from benchmarks.local_broker import start_broker  # noqa: E402
from benchmarks.table import Row, add_arguments, emit  # noqa: E402

SHORT = ROOT / "tests" / "lab" / "short.yaml"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    # The scheduler's own count of the time on a CPU, in ns: the clock ticks of utime + stime
    # (10 ms) would round a short idle phase of the smoke run to nothing.
    schedstat = Path(f"/proc/{pid}/schedstat")
    if schedstat.exists():
        return int(schedstat.read_text().split()[0]) / 1e9
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


async def history(broker: Broker, n: int, benches: list[str], window: int = 1000) -> None:
    """``n`` finished jobs, each claimed and passed by one of ``benches`` in turn (the agents of the
    run, so that they clear their claims and results when the archive clears the jobs)."""
    ref = client.sequence_ref(str(SHORT))
    jobs = [client.make_job(ref, {"hold": "1 s"}, {}) for _ in range(n)]
    by = {j.job: benches[i % len(benches)] for i, j in enumerate(jobs)}
    async with mqtt_client(broker, "scale-history") as c:
        for i in range(0, n, window):
            chunk = jobs[i : i + window]
            await asyncio.gather(*(c.publish(f"lab/jobs/{j.job}", encode(j), qos=1, retain=True) for j in chunk))
            claims = [Claim(job=j.job, attempt=1, bench=by[j.job]) for j in chunk]
            await asyncio.gather(
                *(c.publish(f"lab/benches/{x.bench}/claims/{x.job}", encode(x), qos=1, retain=True) for x in claims)
            )
            results = [
                Result(job=j.job, bench=by[j.job], attempt=1, verdict="PASS", run_id=f"r-{j.job}") for j in chunk
            ]
            await asyncio.gather(
                *(c.publish(f"lab/benches/{r.bench}/results/{r.job}", encode(r), qos=1, retain=True) for r in results)
            )


def station(folder: Path, bench: str) -> Path:
    """sim.yaml as bench <bench>, with the lab section the lab tests give their benches (its
    library holds SHORT); one way to make a bench's station, so the two cannot drift."""
    from tests.labkit import station_file

    return station_file(folder, bench)


def start_agent(folder: Path, port: int, bench: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, BENCH_REPORT_PDF="0", BENCH_STATE_DIR=str(folder / "state" / bench))
    cmd = [sys.executable, "-m", "bench.cli", "agent", "--station", str(station(folder, bench))]
    cmd += ["--broker", f"mqtt://127.0.0.1:{port}", "--reports", str(folder / "reports"), "--requeue-grace", "3"]
    with open(folder / f"{bench}.log", "ab") as log:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


READY = re.compile(r"ready for new jobs ([\d.]+) s after connecting")
HISTORY = re.compile(r"history of (\d+) messages read ([\d.]+) s after connecting")


def agent_times(log: Path, offset: int = 0) -> tuple[float | None, float | None, int]:
    """(connect-to-ready s, history read s, connections lost) of the agent, from ``offset`` of its log."""
    text = log.read_bytes()[offset:].decode(errors="replace")
    ready = [float(x) for x in READY.findall(text)]
    hist = [float(x) for _, x in HISTORY.findall(text)]
    drops = text.count("broker connection lost")
    return (ready[0] if ready else None), (hist[0] if hist else None), drops


async def wait_results(broker: Broker, ids: set[str], within: float) -> dict[str, list[Result]]:
    """Every result of the given jobs, until each has one that is not ABANDONED."""
    from bench.lab.protocol import decode

    got: dict[str, list[Result]] = {}
    async with mqtt_client(broker, "scale-results") as c:
        # Live results only (MQTT 5 retain handling 2): the history's are not traffic of the phase.
        await c.subscribe("lab/benches/+/results/+", options=SubscribeOptions(qos=0, retainHandling=2))
        async with asyncio.timeout(within):
            async for msg in c.messages:
                job = msg.topic.value.rsplit("/", 1)[1]
                if job not in ids or not msg.payload:
                    continue
                res = decode(Result, msg.payload if isinstance(msg.payload, bytes) else b"")
                got.setdefault(job, []).append(res)
                if all(any(r.verdict != "ABANDONED" for r in got.get(j, [])) for j in ids):
                    return got
    return got


async def sys_counters(broker: Broker) -> dict[str, int]:
    out: dict[str, int] = {}
    async with mqtt_client(broker, f"scale-sys-{time.monotonic_ns()}") as c:
        await c.subscribe([("$SYS/broker/messages/received", 0), ("$SYS/broker/messages/sent", 0)])
        async with asyncio.timeout(5):
            async for msg in c.messages:
                out[msg.topic.value.rsplit("/", 1)[1]] = int(bytes(msg.payload).decode())
                if len(out) == 2:
                    return out
    return out


def count_messages(path: Path, ids: set[str]) -> Counter[str]:
    """Messages seen on lab/# during the job phase, by kind (mosquitto_sub -F '%r %t %l')."""
    kinds: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split(" ")
        if len(parts) != 3:
            continue
        retained, topic, length = parts[0], parts[1], int(parts[2])
        if retained == "1":
            continue  # sent on subscribing: not traffic of the phase
        levels = topic.split("/")
        if levels[1] == "benches" and len(levels) >= 4:
            kind = levels[3]
            if kind == "claims":
                kind = "claims" if length else "claim withdrawals"
            elif kind == "results" and not length:
                kind = "result clears"
        else:
            kind = levels[1]
        kinds[kind] += 1
    return kinds


def cli(*args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bench.cli", *args], cwd=ROOT, capture_output=True, text=True)
    return time.perf_counter() - t0, proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=20)
    ap.add_argument("--history", type=int, default=10_000)
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument(
        "--stagger",
        type=float,
        default=8.0,
        help="seconds between agent starts (0: all at once, as after a power cut; on 2 cores 20 agents started at once fall into reconnect loops, see benchmarks/README.md)",
    )
    add_arguments(ap)
    args = ap.parse_args()
    # Pauses (s): idle phase, subscriber settling, after the archive.
    idle_s, settle_s, archive_s = (3.0, 1.0, 3.0) if args.smoke else (10.0, 3.0, 10.0)
    if args.smoke:
        args.agents, args.history, args.jobs, args.stagger = 2, 20, 2, 0.0
    # A SIGTERM (a timeout, the operator) ends the run through the cleanup below: no agent is left.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("error: terminated"))
    folder = Path(tempfile.mkdtemp(prefix="bench-lab-scale-"))
    (folder / "data").mkdir()
    broker_proc, port = start_broker(
        folder,
        [
            "persistence true",
            f"persistence_location {folder / 'data'}/",
            "autosave_interval 1",
            "max_queued_messages 100000",
            "sys_interval 1",
            f"log_dest file {folder / 'mosquitto.log'}",
            *["log_type error", "log_type warning", "log_type notice"],
        ],
    )
    broker = Broker("127.0.0.1", port)
    url = f"mqtt://127.0.0.1:{port}"
    agents: dict[str, subprocess.Popen[bytes]] = {}
    sub: subprocess.Popen[bytes] | None = None
    benches = [f"bench-{i:02d}" for i in range(1, args.agents + 1)]
    try:
        t0 = time.perf_counter()
        asyncio.run(history(broker, args.history, benches))
        print(f"history: {args.history} finished jobs retained in {time.perf_counter() - t0:.1f} s")

        cpu0 = cpu_s(broker_proc.pid)
        t0 = time.perf_counter()
        for b in benches:
            agents[b] = start_agent(folder, port, b)
            time.sleep(args.stagger)
        deadline = time.monotonic() + 300 + args.stagger * args.agents
        while time.monotonic() < deadline:
            times = [agent_times(folder / f"{b}.log") for b in benches]
            if all(h is not None for _, h, _ in times):
                break
            for b, p in agents.items():
                if p.poll() is not None:
                    sys.exit(f"error: agent {b} exited {p.returncode}: {(folder / f'{b}.log').read_text()[-2000:]}")
            time.sleep(0.5)
        start_wall = time.perf_counter() - t0
        start_cpu = cpu_s(broker_proc.pid) - cpu0
        ready = [r for r, _, _ in times if r is not None]
        hist = [h for _, h, _ in times if h is not None]
        drops = sum(d for _, _, d in times)
        print(
            f"{args.agents} agents started (processes): {len(hist)} had read the history after "
            f"{start_wall:.1f} s wall; broker CPU {start_cpu:.1f} s; {drops} connections lost meanwhile"
        )
        if ready:
            print(f"  connect-to-ready: median {statistics.median(ready):.2f} s, max {max(ready):.2f} s")
        if hist:
            print(
                f"  history ({args.history} jobs) read: median {statistics.median(hist):.2f} s, max {max(hist):.2f} s"
                " after connecting (first connection that finished it)"
            )
        if len(hist) < len(benches):
            sys.exit("error: not every agent read the history; the job phase would measure a lab that is not up")

        cpu0 = cpu_s(broker_proc.pid)
        time.sleep(idle_s)
        idle = (cpu_s(broker_proc.pid) - cpu0) / idle_s
        db = sum(f.stat().st_size for f in (folder / "data").iterdir())
        print(f"idle: broker CPU {idle * 100:.1f} % of a core (autosave of a {db / 1e6:.1f} MB database every second)")

        count_file = folder / "messages.txt"
        with open(count_file, "wb") as out:
            sub = subprocess.Popen(
                ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-V", "mqttv5", "-t", "lab/#", "-F", "%r %t %l"],
                stdout=out,
                stderr=subprocess.DEVNULL,
            )
        time.sleep(settle_s)  # the retained messages it gets on subscribing are not counted anyway
        before = asyncio.run(sys_counters(broker))
        cpu0 = cpu_s(broker_proc.pid)
        ref = client.sequence_ref(str(SHORT))
        jobs = [client.make_job(ref, {"hold": "1 s" if args.smoke else "2 s"}, {}) for _ in range(args.jobs)]
        ids = {j.job for j in jobs}
        t0 = time.perf_counter()

        async def run_jobs() -> dict[str, list[Result]]:
            waiting = asyncio.create_task(wait_results(broker, ids, within=900))
            await asyncio.sleep(1.0)
            await client.submit(broker, jobs, check=False)
            try:
                return await waiting
            except TimeoutError:
                sys.exit("error: the jobs did not all end within 900 s")

        results = asyncio.run(run_jobs())
        wall = time.perf_counter() - t0
        time.sleep(2)  # the last state and log messages
        jobs_cpu = cpu_s(broker_proc.pid) - cpu0
        after = asyncio.run(sys_counters(broker))
        sub.send_signal(signal.SIGTERM)
        sub.wait(10)
        sub = None
        kinds = count_messages(count_file, ids)
        total = sum(kinds.values())
        runs = Counter(len([r for r in rs if r.verdict != "ABANDONED"]) for rs in results.values())
        per_bench = Counter(r.bench for rs in results.values() for r in rs)
        received = after.get("received", 0) - before.get("received", 0)
        sent = after.get("sent", 0) - before.get("sent", 0)
        print(
            f"jobs: {args.jobs} jobs on {args.agents} benches in {wall:.1f} s wall; results per job {dict(runs)}; "
            f"{len(per_bench)} benches took work"
        )
        print(
            f"  broker CPU {jobs_cpu:.1f} s = {jobs_cpu / args.jobs * 1e3:.0f} ms per job "
            f"(idle over the same time: {idle * wall:.1f} s)"
        )
        print(
            f"  messages published on lab/# per job: {total / args.jobs:.1f}; the broker received "
            f"{received / args.jobs:.0f} and sent {sent / args.jobs:.0f} per job ($SYS, every client)"
        )
        for kind, n in sorted(kinds.items(), key=lambda kv: -kv[1]):
            print(f"    {kind:18s} {n / args.jobs:7.2f} per job")
        print(
            f"  claims per job {kinds['claims'] / args.jobs:.2f}, "
            f"withdrawals per job {kinds['claim withdrawals'] / args.jobs:.2f}"
        )

        took, st = cli("lab", "status", "--broker", url)
        line = st.stdout.strip().splitlines()[-1] if st.stdout.strip() else st.stderr.strip()
        print(f"operator: lab status {took:.2f} s (exit {st.returncode}: {line})")
        took, sb = cli("lab", "submit", str(SHORT), "-p", "hold=1 s", "--broker", url)
        print(f"operator: lab submit {took:.2f} s (exit {sb.returncode})")
        took, ar = cli("lab", "archive", "--to", str(folder / "archive.jsonl"), "--broker", url)
        print(f"operator: lab archive {took:.2f} s: {(ar.stdout or ar.stderr).strip()}")
        time.sleep(archive_s)  # the agents clear their claims and results of the archived jobs
        took, st = cli("lab", "status", "--broker", url)
        line = st.stdout.strip().splitlines()[-1] if st.stdout.strip() else st.stderr.strip()
        left = asyncio.run(client.snapshot(broker)).retained
        print(f"operator: lab status after the archive {took:.2f} s ({line}); {left} retained messages left")

        first = benches[0]
        agents[first].send_signal(signal.SIGTERM)
        agents[first].wait(30)
        offset = (folder / f"{first}.log").stat().st_size
        agents[first] = start_agent(folder, port, first)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and agent_times(folder / f"{first}.log", offset)[1] is None:
            time.sleep(0.2)
        r, h, _ = agent_times(folder / f"{first}.log", offset)
        print(f"after the archive: {first} restarted, connect-to-ready {r} s, history read {h} s")
        lost = {b: agent_times(folder / f"{b}.log")[2] for b in benches}
        print(f"keepalive drops (broker connection lost) in the agents' logs: {sum(lost.values())}")
        dropped = (folder / "mosquitto.log").read_text(errors="replace").count("being dropped")
        print(f"broker: 'Outgoing messages are being dropped' {dropped} times")
        # The baseline: the idle broker's CPU over the same wall time, per job.
        ours, baseline = jobs_cpu / args.jobs * 1e3, idle * wall / args.jobs * 1e3
        figure = f"broker CPU per job, {args.jobs} jobs on {args.agents} agents, {args.history} finished jobs retained"
        emit(
            [Row("lab_scale", figure, ours, baseline, "ms/job", ours / baseline, "ours / idle broker, same time")], args
        )
    finally:
        if sub is not None:
            sub.kill()
        for p in agents.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in agents.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        broker_proc.terminate()
        broker_proc.wait(10)
        if os.environ.get("KEEP"):
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
