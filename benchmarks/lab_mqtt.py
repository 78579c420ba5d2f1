"""Lab over MQTT: submit-to-start latency, and one agent's event throughput against bare aiomqtt.

Starts its own mosquitto on a free 127.0.0.1 port (anonymous, loopback only: a measurement, not
a lab), then:

1. latency: a real ``bench agent`` process on the simulated station; N jobs of tests/lab/short.yaml
   submitted one after the other; time from the submit call to the bench's claim (the
   acknowledgement) and to the run's first event (``run_started``) as the submitter sees them;
2. throughput: M events of the size of real ones through an in-process agent's outbox (QoS 1, in
   order, kept until PUBACK) to a subscriber, against a bare aiomqtt publish loop in the same
   run: sequential ``await publish`` and a window of the same width as the agent's. The
   subscriber is ``mosquitto_sub`` in its own process; rates count until it has every message.

    .venv/bin/python benchmarks/lab_mqtt.py [--jobs 10] [--events 20000] [--smoke] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.events import EventKind  # noqa: E402
from bench.lab import client  # noqa: E402
from bench.lab.agent import OUTBOX_WINDOW, Agent  # noqa: E402
from bench.lab.mqtt import Broker  # noqa: E402
from bench.lab.mqtt import client as mqtt_client  # noqa: E402
from benchmarks.local_broker import start_broker  # noqa: E402
from benchmarks.table import Row, add_arguments, emit  # noqa: E402

SHORT = ROOT / "tests" / "lab" / "short.yaml"
JOB_WITHIN_S = 120.0  # submit to result of one short job, on a loaded machine


async def latency(broker: Broker, jobs: int, hold: str) -> tuple[list[float], list[float], list[float]]:
    ref = client.sequence_ref(str(SHORT))
    to_claim: list[float] = []
    to_start: list[float] = []
    to_result: list[float] = []
    async with mqtt_client(broker, "bench-latency") as c:
        for t in ("lab/benches/+/claims/+", "lab/benches/+/events", "lab/benches/+/results/+"):
            await c.subscribe(t, qos=1)
        for _ in range(jobs):
            job = client.make_job(ref, {"hold": hold}, {})
            t0 = time.perf_counter()
            await client.submit(broker, [job], check=False)
            async with asyncio.timeout(JOB_WITHIN_S):
                await _follow(c, job.job, t0, to_claim, to_start, to_result)
    return to_claim, to_start, to_result


async def _follow(
    c: aiomqtt.Client, job: str, t0: float, to_claim: list[float], to_start: list[float], to_result: list[float]
) -> None:
    """The job's claim, run_started and result, each stamped from ``t0``."""
    async for msg in c.messages:
        topic = msg.topic.value
        payload = msg.payload if isinstance(msg.payload, bytes) else b""
        if not payload or job.encode() not in payload:
            continue
        now = time.perf_counter() - t0
        if "/claims/" in topic:
            to_claim.append(now)
        elif topic.endswith("/events") and json.loads(payload)["kind"] == EventKind.RUN_STARTED:
            to_start.append(now)
        elif "/results/" in topic:
            to_result.append(now)
            return


async def subscriber(broker: Broker, topic: str, n: int) -> asyncio.subprocess.Process:
    """mosquitto_sub in its own process, so that receiving does not share the publisher's loop."""
    proc = await asyncio.create_subprocess_exec(
        *["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-V", "mqttv5", "-q", "1"],
        *["-t", topic, "-C", str(n)],
        stdout=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(0.5)  # subscribed before the first publish
    return proc


def payloads(n: int) -> list[bytes]:
    # The shape and size of a real event (a 'set' with read-back, ~300 bytes).
    fields = {"step": "supply on", "values": {"psu.voltage_set": 100.0, "psu.current_set": 1.0, "psu.output": "ON"}}
    return [
        json.dumps(
            {
                "v": 1,
                "bench": "bench-x",
                "job": "j",
                "run_id": "r",
                "seq": i,
                "kind": EventKind.SET,
                "t": i * 0.1,
                "fields": fields,
            }
        ).encode()
        for i in range(n)
    ]


async def bare(broker: Broker, n: int, window: int) -> float:
    """Events/s through a bare aiomqtt publisher (QoS 1), with ``window`` publishes in flight."""
    topic = f"bare/{window}"
    sub = await subscriber(broker, topic, n)
    data = payloads(n)
    async with mqtt_client(broker, f"bench-bare-{window}") as c:
        t0 = time.perf_counter()
        for i in range(0, n, window):
            await asyncio.gather(*(c.publish(topic, p, qos=1) for p in data[i : i + window]))
        await sub.wait()
        t1 = time.perf_counter()
    return n / (t1 - t0)


async def agent_outbox(broker: Broker, n: int) -> float:
    """Events/s through one agent's outbox (in order, kept until PUBACK) to a subscriber."""
    # Not the id of the agent process of the latency part: one client id, one connection.
    agent = Agent(ROOT / "stations" / "sim.yaml", broker, bench_id="bench-y", library=[SHORT])
    serving = asyncio.create_task(agent.serve())
    async with asyncio.timeout(10):
        while not agent.connected:  # noqa: ASYNC110  (a flag of the agent's, not an event)
            await asyncio.sleep(0.01)
    sub = await subscriber(broker, "lab/benches/bench-y/events", n)
    data = payloads(n)
    t0 = time.perf_counter()
    for p in data:
        agent.send("lab/benches/bench-y/events", p)
    await sub.wait()
    t1 = time.perf_counter()
    agent.stop("benchmark over")
    await serving
    return n / (t1 - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=10)
    ap.add_argument("--events", type=int, default=20000)
    add_arguments(ap)
    args = ap.parse_args()
    if args.smoke:
        args.jobs, args.events = 1, 500
    # A SIGTERM (a timeout of make bench) ends the run through the cleanup below: no agent is left.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("error: terminated"))
    folder = Path(tempfile.mkdtemp(prefix="bench-lab-benchmark-"))
    proc, port = start_broker(folder, ["persistence false", "max_queued_messages 1000000"])
    broker = Broker("127.0.0.1", port)
    agent_proc = None
    try:
        env = dict(os.environ, BENCH_REPORT_PDF="0", BENCH_STATE_DIR=str(folder / "state"))
        agent_log = folder / "agent.log"
        station = folder / "bench-x.yaml"
        station.write_text(
            (ROOT / "stations" / "sim.yaml")
            .read_text()
            .replace("\nid: sim\n", "\nid: bench-x\n")
            .replace("../dbc/", f"{ROOT / 'dbc'}/")
        )
        with agent_log.open("wb") as log:
            agent_proc = subprocess.Popen(
                [
                    *[sys.executable, "-m", "bench.cli", "agent", "--station", str(station), "--library", str(SHORT)],
                    *["--broker", f"mqtt://127.0.0.1:{port}", "--reports", str(folder / "reports")],
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def agent_said() -> str:
            lines = agent_log.read_text(errors="replace").strip().splitlines()
            return f"the agent's last line: {lines[-1] if lines else '(none)'}"

        deadline = time.monotonic() + 60
        while not asyncio.run(client.snapshot(broker)).online():
            if agent_proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"error: the agent did not come online within 60 s ({agent_said()})")
            time.sleep(0.1)
        hold = "1 s" if args.smoke else "5 s"
        try:
            claim, start, result = asyncio.run(latency(broker, args.jobs, hold))
        except TimeoutError:
            sys.exit(f"error: a job did not end within {JOB_WITHIN_S:g} s of its submission ({agent_said()})")
        if not len(claim) == len(start) == len(result) == args.jobs:
            sys.exit(f"error: of {args.jobs} jobs, {len(claim)} claimed, {len(start)} started, {len(result)} ended")

        def ms(xs: list[float]) -> str:
            xs = sorted(xs)
            return f"median {statistics.median(xs) * 1e3:7.1f} ms, max {xs[-1] * 1e3:7.1f} ms"

        print(f"submit -> claim (ack)     {ms(claim)}   ({len(claim)} jobs, one idle bench)")
        print(f"submit -> run_started     {ms(start)}")
        print(f"submit -> result          {ms(result)}   (the job: {hold} simulated, virtual time)")
        agent_proc.terminate()  # the throughput part has the machine to itself
        agent_proc.wait(15)
        agent_proc = None
        n = args.events
        seq = asyncio.run(bare(broker, n, 1))
        win = asyncio.run(bare(broker, n, OUTBOX_WINDOW))
        ours = asyncio.run(agent_outbox(broker, n))
        print(f"bare aiomqtt, await each publish (QoS 1)    {seq:8.0f} events/s")
        print(f"bare aiomqtt, {OUTBOX_WINDOW} in flight (QoS 1)          {win:8.0f} events/s")
        print(
            f"agent outbox (ordered, kept until PUBACK)   {ours:8.0f} events/s   ratio {ours / win:.2f} of the windowed bare loop"
        )
        figure = f"one agent's event outbox to a subscriber (QoS 1, in order, {OUTBOX_WINDOW} in flight)"
        means = f"ours / bare aiomqtt, {OUTBOX_WINDOW} in flight"
        emit([Row("lab_mqtt", figure, ours, win, "events/s", ours / win, means)], args)
    finally:
        if agent_proc is not None:
            agent_proc.terminate()
            agent_proc.wait(15)
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
