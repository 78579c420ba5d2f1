"""A lab on a real mosquitto: three benches take ten jobs, each exactly once; a killed bench's job
is taken again by another bench (docs/lab.md)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections import Counter
from pathlib import Path

from bench.lab import client
from bench.lab.protocol import Claim, Result, Status, decode
from tests.conftest import bench
from tests.labkit import SHORT, Lab, collect, lab_fixture, mosquitto_fixture  # noqa: F401  (fixtures)

BENCHES = ["bench-a", "bench-b", "bench-c"]


def _results(got: list[tuple[str, bytes]]) -> dict[str, Result]:
    return {r.job: r for r in (decode(Result, p) for t, p in got if "/results/" in t and p)}


def run_dirs(reports: Path) -> list[Path]:
    return sorted(p for p in reports.iterdir() if (p / "events.jsonl").exists())


def test_three_benches_take_ten_jobs_exactly_once(lab: Lab) -> None:
    for b in BENCHES:
        lab.start_agent(b)
    lab.wait_online(BENCHES)
    op = lab.broker.broker()
    ref = client.sequence_ref(str(SHORT))
    jobs = [client.make_job(ref, {"hold": f"{5 + i} s"}, {"dut": "BMS-SIM"}) for i in range(10)]
    ids = {j.job for j in jobs}
    t0 = time.monotonic()

    got = asyncio.run(
        collect(
            op,
            ["lab/benches/+/results/+", "lab/benches/+/claims/+"],
            lambda g: ids <= set(_results(g)),
            90,
            on_ready=lambda: client.submit(op, jobs),
        )
    )
    wall = time.monotonic() - t0
    results = _results(got)
    assert set(results) == ids
    assert all(r.verdict == "PASS" for r in results.values()), [r.reason for r in results.values()]
    assert all(r.manifest_sha256 and r.run_id and Path(r.report).is_dir() for r in results.values())
    # Exactly once: one run folder per job, and the winning claims name one bench per job.
    dirs = run_dirs(lab.reports)
    assert len(dirs) == 10, [d.name for d in dirs]
    assert {r.run_id for r in results.values()} == {d.name for d in dirs}
    claims = [decode(Claim, p) for t, p in got if "/claims/" in t and p]
    winners = {c.job: c.bench for c in claims if results[c.job].bench == c.bench}
    assert set(winners) == ids
    per_bench = Counter(r.bench for r in results.values())
    assert set(per_bench) <= set(BENCHES)
    assert len(per_bench) >= 2, per_bench  # the work was shared
    print(f"10 jobs on 3 benches in {wall:.1f} s wall; per bench {dict(per_bench)}")

    # bench lab status shows the benches and the finished jobs.
    done = bench("lab", "status", "--broker", lab.broker.url())
    assert done.rc == 0, done.err
    for b in BENCHES:
        assert b in done.out
    assert done.out.count(" done ") == 10


def test_killed_bench_is_offline_and_its_job_runs_elsewhere(lab: Lab) -> None:
    for b in BENCHES[:2]:
        lab.start_agent(b)
    lab.wait_online(BENCHES[:2])
    op = lab.broker.broker()
    ref = client.sequence_ref(str(SHORT))
    job = client.make_job(ref, {"hold": "20 min"}, {})
    seen: dict[str, object] = {}

    async def scenario() -> list[tuple[str, bytes]]:
        from bench.lab.mqtt import client as mk

        got: list[tuple[str, bytes]] = []
        async with mk(op, "test-kill") as c:
            for t in (
                "lab/benches/+/claims/+",
                "lab/benches/+/results/+",
                "lab/benches/+/status",
                "lab/benches/+/events",
            ):
                await c.subscribe(t, qos=1)
            await client.submit(op, [job])
            async with asyncio.timeout(90):
                async for msg in c.messages:
                    topic, payload = (
                        msg.topic.value,
                        bytes(msg.payload) if isinstance(msg.payload, bytes | bytearray) else b"",
                    )
                    got.append((topic, payload))
                    if not payload:
                        continue
                    if "/claims/" in topic and "first" not in seen:
                        seen["first"] = decode(Claim, payload).bench
                    elif topic.endswith("/events") and "killed" not in seen and "first" in seen:
                        ev = json.loads(payload)
                        if ev["kind"] == "step_started" and ev["fields"].get("step") == "hold":
                            victim = lab.agents[str(seen["first"])]
                            victim.proc.send_signal(signal.SIGKILL)
                            seen["killed"] = time.monotonic()
                    elif topic.endswith("/status") and "killed" in seen:
                        st = decode(Status, payload)
                        if st.bench == seen["first"] and not st.online:
                            seen["offline_after_s"] = time.monotonic() - float(seen["killed"])  # type: ignore[arg-type]
                    elif "/results/" in topic:
                        return got
        return got

    got = asyncio.run(scenario())
    assert "killed" in seen, "the job never reached its hold step"
    assert "offline_after_s" in seen, "the killed bench never showed offline (will message)"
    res = [decode(Result, p) for t, p in got if "/results/" in t and p]
    assert len(res) == 1
    r = res[0]
    assert r.job == job.job and r.bench != seen["first"] and r.attempt == 2
    assert r.verdict == "PASS", r.reason
    print(f"offline {seen['offline_after_s']:.2f} s after SIGKILL; job finished on {r.bench}")
    # The dead bench's last state is shown with the time since the bench published it.
    out = bench("lab", "status", "--broker", lab.broker.url())
    dead = next(ln for ln in out.out.splitlines() if ln.startswith(str(seen["first"])))
    age = re.search(r" offline .* was running \d+/\d+, (\d+)s ago ", dead)
    assert age is not None, out.out
    assert int(age.group(1)) <= time.monotonic() - float(seen["killed"]) + 5, dead  # type: ignore[arg-type]
