"""No loss: the broker goes away for a few seconds in the middle of a run; the run goes on, and the
watcher gets every event once, in order, after it reconnects."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

from bench.lab import client
from bench.lab.protocol import Event, Result, State
from tests.labkit import SHORT, Lab, lab_fixture, mosquitto_fixture  # noqa: F401  (fixtures)


def test_broker_outage_mid_run_loses_no_event(lab: Lab) -> None:
    # Wall-clock station: the hold step really lasts 8 s, so the outage falls inside the run.
    lab.start_agent("bench-a", realtime=True)
    lab.wait_online(["bench-a"])
    op = lab.broker.broker()
    job = client.make_job(client.sequence_ref(str(SHORT)), {"hold": "8 s"}, {})
    events: list[Event] = []
    marks: dict[str, float] = {}

    async def scenario() -> Result:
        hold = asyncio.Event()

        def on(kind: str, obj: object) -> None:
            if isinstance(obj, Event):
                events.append(obj)
            if isinstance(obj, State) and obj.step == "hold":
                hold.set()

        watcher = asyncio.create_task(client.watch(op, job.job, on, give_up_after=60))
        await asyncio.sleep(0.5)  # the watcher's subscriptions are in place before the job exists
        await client.submit(op, [job])
        await asyncio.wait_for(hold.wait(), 30)
        await asyncio.sleep(0.5)
        marks["down"] = time.monotonic()
        await asyncio.to_thread(lab.broker.stop)
        await asyncio.sleep(3.0)
        await asyncio.to_thread(lab.broker.start)
        marks["up"] = time.monotonic()
        return await watcher

    res = asyncio.run(scenario())
    assert res.verdict == "PASS", res.reason
    agent_log = lab.agents["bench-a"].text()
    assert "broker connection lost" in agent_log, agent_log
    kept = [int(n) for n in re.findall(r"(\d+) messages kept", agent_log)]
    assert max(kept) > 0, "no event was produced while the broker was away; the test proves nothing"
    # Every event once, in order: sequence numbers 0..n-1 without a gap ...
    seqs = [e.seq for e in events]
    assert seqs == list(range(len(seqs))), seqs
    # ... and exactly the run's own record, event for event.
    lines = [json.loads(x) for x in (Path(res.report) / "events.jsonl").read_text().splitlines()]
    assert [e.kind for e in events] == [x["kind"] for x in lines]
    assert [x["seq"] for x in lines] == seqs
    print(f"{len(events)} events, broker down {marks['up'] - marks['down']:.1f} s, up to {max(kept)} kept meanwhile")
