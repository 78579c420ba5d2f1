"""Leases, not locks: remote control needs a lease that expires unless renewed; emergency stop
needs none."""

from __future__ import annotations

import asyncio
import sys
from typing import cast

import pytest

from bench.events import EventKind
from bench.lab import client
from bench.lab.leases import LeaseRefused, LeaseTable
from bench.lab.mqtt import client as mqtt_client
from bench.lab.protocol import Event, LeaseInfo, LogEntry, Result, decode
from tests.conftest import bench
from tests.labkit import SHORT, Lab, lab_fixture, mosquitto_fixture  # noqa: F401  (fixtures)


def test_lease_table_expires_renews_and_refuses_others() -> None:
    now = [0.0]
    t = LeaseTable(lambda: now[0])
    t.acquire("alice", 10)
    with pytest.raises(LeaseRefused, match="leased by alice"):
        t.acquire("bob", 10)
    with pytest.raises(LeaseRefused, match="which alice holds"):
        t.check("bob", "abort")
    t.check("alice", "abort")
    now[0] = 9.0
    t.renew("alice", 10)  # keepalive
    now[0] = 18.0
    t.check("alice", "abort")
    now[0] = 19.5  # not renewed: expired, the bench is free without anybody clearing a stale lock
    assert t.current() is None
    with pytest.raises(LeaseRefused, match="none is held"):
        t.check("alice", "abort")
    with pytest.raises(LeaseRefused, match="expired or never taken"):
        t.renew("alice", 10)
    t.acquire("bob", 5)
    t.release("bob")
    assert t.current() is None


def test_abort_needs_the_lease_estop_does_not_and_a_lease_expires(lab: Lab) -> None:
    lab.start_agent("bench-a")
    lab.wait_online(["bench-a"])
    op = lab.broker.broker()
    ref = client.sequence_ref(str(SHORT))

    async def send(op_name: str, holder: str, **kw: object) -> None:
        await client.control(op, "bench-a", client.make_control(op_name, holder, **kw))  # type: ignore[arg-type]

    async def scenario() -> dict[str, object]:
        out: dict[str, object] = {"leases": [], "notes": []}
        async with mqtt_client(op, "lease-test") as c:
            for t in (
                "lab/benches/bench-a/lease",
                "lab/benches/bench-a/log",
                "lab/benches/+/results/+",
                "lab/benches/bench-a/events",
            ):
                await c.subscribe(t, qos=1)
            # A short lease taken with the command line runs out by itself.
            proc = await asyncio.create_subprocess_exec(
                *[sys.executable, "-m", "bench.cli", "lab", "lease", "bench-a", "--holder", "alice", "--ttl", "1.5"],
                *["--broker", lab.broker.url()],
            )
            assert await proc.wait() == 0
            jobs = [client.make_job(ref, {"hold": "30 min"}, {}), client.make_job(ref, {"hold": "30 min"}, {})]
            step = 0
            async with asyncio.timeout(90):
                async for msg in c.messages:
                    topic, payload = (
                        msg.topic.value,
                        bytes(msg.payload) if isinstance(msg.payload, bytes | bytearray) else b"",
                    )
                    if not payload:
                        continue
                    if topic.endswith("/lease"):
                        info = decode(LeaseInfo, payload)
                        out["leases"].append(info.holder)  # type: ignore[attr-defined]
                        if step == 0 and info.holder is None and "alice" in out["leases"]:  # type: ignore[operator]
                            step = 1
                            await client.submit(op, jobs[:1])
                    elif topic.endswith("/log"):
                        out["notes"].append(decode(LogEntry, payload).message)  # type: ignore[attr-defined]
                    elif topic.endswith("/events"):
                        ev = decode(Event, payload)
                        if ev.kind == EventKind.STEP_STARTED and ev.fields.get("step") == "hold":
                            if step == 1:
                                step = 2
                                await send("abort", "bob", reason="no lease", job=jobs[0].job)
                                await send("acquire", "alice", ttl_s=60)
                                await send("abort", "bob", reason="alice's", job=jobs[0].job)
                                await send("abort", "alice", reason="done here", job=jobs[0].job)
                            elif step == 3:
                                step = 4
                                await send("estop", "carol", reason="smoke", job=jobs[1].job)
                    elif "/results/" in topic:
                        res = decode(Result, payload)
                        out[res.job] = res
                        if step == 2:
                            step = 3
                            await send("release", "alice")
                            await client.submit(op, jobs[1:])
                        elif step == 4:
                            break
        out["jobs"] = [j.job for j in jobs]
        return out

    out = asyncio.run(scenario())
    leases = cast(list[str | None], out["leases"])
    assert leases[:2] == [None, "alice"] or "alice" in leases, leases
    assert None in leases[leases.index("alice") :], leases
    notes = "\n".join(out["notes"])  # type: ignore[arg-type]
    assert "abort refused: abort needs a lease on this bench; none is held" in notes, notes
    assert "abort refused: abort needs the lease, which alice holds" in notes, notes
    first, second = (out[j] for j in out["jobs"])  # type: ignore[attr-defined]
    assert isinstance(first, Result) and first.verdict == "ABORTED" and "aborted from the lab by alice" in first.reason
    assert (
        isinstance(second, Result)
        and second.verdict == "ABORTED"
        and "emergency stop from the lab by carol" in second.reason
    )
    assert "emergency stop by carol: smoke" in notes
    # The stopped runs still ended safe and sealed.
    status = bench("verify", second.report)
    assert status.rc == 0, status.err
