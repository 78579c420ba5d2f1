"""``bench lab status`` and ``submit`` with a long history: complete, or saying they are not.

At 7,000 jobs status exited 0 listing 5 or 3,849 of them, and at 30,000 submit said "no bench is
online": their read stopped on a quiet period. The read now ends at the barrier's marker, and a
read the broker may have cut short (its queue for one client is full) is refused in one line.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from bench.lab import client
from bench.lab.mqtt import client as mqtt_client
from bench.lab.mqtt import start_barrier, sync_topic
from tests.conftest import bench
from tests.labkit import (  # noqa: F401  (fixtures)
    SHORT,
    Lab,
    Mosquitto,
    finished_history,
    lab_fixture,
    mosquitto_fixture,
    need_mosquitto,
)

HISTORY = 10_000


def test_status_and_submit_are_right_and_fast_with_10000_finished_jobs(lab: Lab) -> None:
    asyncio.run(finished_history(lab.broker, HISTORY))
    lab.start_agent("bench-b")
    lab.wait_online(["bench-b"], timeout=120)
    url = lab.broker.url()

    t0 = time.monotonic()
    out = bench("lab", "status", "--broker", url, timeout=120)
    status_s = time.monotonic() - t0
    assert out.rc == 0, out.err
    assert f"0 open, {HISTORY} finished; the last 20 finished are shown" in out.out, out.out[-500:]
    assert out.out.count(" done ") == 20
    assert "bench-b          yes     idle" in out.out, out.out[:500]

    everything = bench("lab", "status", "--all", "--broker", url, timeout=120)
    assert everything.rc == 0 and everything.out.count(" done ") == HISTORY, everything.err

    t0 = time.monotonic()
    sub = bench("lab", "submit", str(SHORT), "-p", "hold=1 s", "--broker", url, timeout=120)
    submit_s = time.monotonic() - t0
    assert sub.rc == 0, sub.err
    assert len(sub.out.split()) == 1  # the job id
    print(f"{HISTORY} finished jobs: lab status {status_s:.2f} s, lab submit {submit_s:.2f} s (processes, wall)")
    # Generous bounds for a loaded 2-core machine; the numbers are in docs/lab.md.
    assert status_s < 60 and submit_s < 30


def test_a_read_the_broker_cut_short_is_refused(tmp_path: Path) -> None:
    """mosquitto drops retained messages beyond its per-client queue and still sends the marker."""
    need_mosquitto()
    m = Mosquitto(tmp_path / "broker")
    m.dir.mkdir()
    m.write_config()
    m.conf.write_text(m.conf.read_text().replace("max_queued_messages 100000", "max_queued_messages 500"))
    m.start()
    try:
        asyncio.run(finished_history(m, 1000))
        # Told the broker's limit, the reader refuses the read: one line, exit code 3.
        out = bench("lab", "status", "--broker", m.url(), env={"BENCH_BROKER_MAX_QUEUED": "500"})
        assert out.rc == 3, out
        lines = out.err.strip().splitlines()
        assert len(lines) == 1 and "some may have been dropped" in lines[0], out.err
        # Half way to the limit, status answers and warns.
        near = bench("lab", "status", "--broker", m.url(), env={"BENCH_BROKER_MAX_QUEUED": "5000"})
        assert near.rc == 0 and near.err.startswith("warning: 3000 retained messages, more than half"), near
        # What the broker does to a QoS 1 reader (as the agents read): it drops retained messages
        # beyond its queue, and the marker still comes.
        seen = asyncio.run(qos1_read(m))
        assert 500 <= seen < 3 * 1000, seen
    finally:
        m.stop()


async def qos1_read(m: Mosquitto) -> int:
    async with mqtt_client(m.broker(), "qos1-reader") as c:
        await c.subscribe([("lab/jobs/+", 1), ("lab/benches/+/claims/+", 1), ("lab/benches/+/results/+", 1)])
        token = await start_barrier(c, "lab")
        seen = 0
        async with asyncio.timeout(60):
            async for msg in c.messages:
                if msg.topic.value == sync_topic("lab", c.identifier) and msg.payload == token:
                    return seen
                seen += 1
    raise AssertionError("no marker")


def test_a_read_not_complete_in_time_says_so(mosquitto: Mosquitto) -> None:
    asyncio.run(finished_history(mosquitto, 2000))
    with pytest.raises(client.IncompleteRead, match="not read completely within"):
        asyncio.run(client.snapshot(mosquitto.broker(), limit=0.05))
